"""Nothing wrong passes silently (issue 29 §4): values that make no sense are refused up
front in one line, ``eval`` says which pre-training recipe it used and keeps its rows' names
apart, degenerate data and absent tasks stop a run before the teacher is trained."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
from conftest import FAST_OVERRIDES
from PIL import Image

from mkdt_bench.cli import main
from mkdt_bench.config import RUN_BOUNDS, RUN_DEFAULTS, build_config
from mkdt_bench.data import load_dataset
from mkdt_bench.distilled import DistilledSet
from mkdt_bench.errors import UserError
from mkdt_bench.evaluators import EVALUATORS
from mkdt_bench.methods import METHODS
from mkdt_bench.options import SEED_MAX, Each, Interval, check_bounds
from mkdt_bench.pipeline.planner import check_set_name
from mkdt_bench.pretraining import PRETRAIN_BOUNDS, PRETRAIN_DEFAULTS
from mkdt_bench.seeding import seed_everything
from mkdt_bench.teachers import TEACHER_BOUNDS, TEACHER_DEFAULTS

# the shared fast teacher (``teacher_cache``) with the presets' pre-training recipe
FAST = ["--no-progress", *(a for o in FAST_OVERRIDES if o.startswith("teacher.")
                           for a in ("--set", o))]


# --------------------------------------------------------------------------- declared bounds


def test_interval_holds_its_ends_as_declared_and_never_nan_inf_or_bool():
    positive = Interval(float, 0, None, closed="neither")
    assert 1e-12 in positive and 0.0 not in positive and -1 not in positive
    assert float("nan") not in positive and float("inf") not in positive
    unit = Interval(float, 0, 1, closed="right")
    assert 1 in unit and 0.5 in unit and 0 not in unit and 1.0000001 not in unit
    count = Interval(int, 1, None)
    assert 1 in count and 0 not in count and 2.0 not in count and True not in count
    assert "x" not in count
    assert str(unit) == "a number in (0, 1]"
    assert str(Interval(int, 0, SEED_MAX, note="n")) == "an int in [0, 4294967295] (n)"
    assert str(Interval(float, 0, 1, closed="left")) == "a number in [0, 1)"
    with pytest.raises(ValueError):
        Interval(int, 0, 1, closed="open")


def test_each_converts_checks_and_refuses_repeats():
    seeds = Each(Interval(int, 0, SEED_MAX), distinct=True, min_len=1)
    assert check_bounds("run", "seeds", ["3", 4], seeds) == [3, 4]
    with pytest.raises(UserError, match="run: seeds lists 3 twice"):
        check_bounds("run", "seeds", [3, "3"], seeds)
    with pytest.raises(UserError, match="run: seeds is empty"):
        check_bounds("run", "seeds", [], seeds)
    with pytest.raises(UserError, match="run: seeds holds 1.5"):
        check_bounds("run", "seeds", [1.5], seeds)


def _numeric(defaults: dict) -> set[str]:
    return {k for k, v in defaults.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool)}


def test_every_numeric_option_declares_its_range_and_its_default_lies_inside():
    """Declared once, beside the default: the grid's sections, every built-in method and
    every evaluator (a new numeric option without a range fails here)."""
    sections = [(RUN_DEFAULTS, RUN_BOUNDS), (TEACHER_DEFAULTS, TEACHER_BOUNDS),
                (PRETRAIN_DEFAULTS, PRETRAIN_BOUNDS)]
    sections += [(METHODS.get(n).defaults, METHODS.get(n).bounds) for n in METHODS.names()]
    sections += [(EVALUATORS.get(n).defaults, EVALUATORS.get(n).bounds)
                 for n in EVALUATORS.names()]
    for defaults, bounds in sections:
        assert _numeric(defaults) <= set(bounds), sorted(_numeric(defaults) - set(bounds))
        for key, bound in bounds.items():
            check_bounds("default", key, defaults[key], bound)  # raises if outside


@pytest.mark.parametrize("override, message", [
    ("teacher.epochs=-1", "teacher: epochs=-1 must be an int in [1, inf)"),
    ("teacher.batch_size=1", "teacher: batch_size=1 must be an int in [2, inf)"),
    ("teacher.lr=nan", "teacher: lr=nan must be a number in (0, inf)"),
    ("teacher.lr=inf", "teacher: lr=inf must be a number in (0, inf)"),
    ("teacher.momentum=1.0", "teacher: momentum=1.0 must be a number in [0, 1)"),
    ("teacher.weight_decay=-0.1", "teacher: weight_decay=-0.1 must be a number in [0, inf)"),
    ("teacher.proj_dim=0", "teacher: proj_dim=0 must be an int in [1, inf)"),
    ("teacher.temperature=0.0", "teacher: temperature=0.0 must be a number in (0, inf)"),
    ("teacher.min_scale=0.0", "teacher: min_scale=0.0 must be a number in (0, 1]"),
    ("teacher.cj_strength=3.0", "teacher: cj_strength=3.0 must be a number in [0, 2.5]"),
    ("teacher.hf_prob=1.5", "teacher: hf_prob=1.5 must be a number in [0, 1]"),
    ("teacher.gaussian_blur=-0.5", "teacher: gaussian_blur=-0.5 must be a number in [0, 1]"),
    ("teacher.train_images=-10", "teacher: train_images=-10 must be an int in [0, inf)"),
    ("teacher.seed=4294967296", "teacher: seed=4294967296 must be an int in [0, 4294967295]"),
    ("pretrain.epochs=0", "pretrain: epochs=0 must be an int in [1, inf)"),
    ("pretrain.lr=0.0", "pretrain: lr=0.0 must be a number in (0, inf)"),
    ("pretrain.batch_size=0", "pretrain: batch_size=0 must be an int in [1, inf)"),
    ("pretrain.steps=-1", "pretrain: steps=-1 must be an int in [0, inf)"),
    ("run.train_pool=-1", "run: train_pool=-1 must be an int in [0, inf)"),
    ("evaluators.linear.l2=-1.0", "evaluator 'linear': l2=-1.0 must be a number in [0, inf)"),
    ("evaluators.knn.k=0", "evaluator 'knn': k=0 must be an int in [1, inf)"),
    ("evaluators.finetune.lr_head=0.0", "evaluator 'finetune': lr_head=0.0 must be a number"),
    ("evaluators.linear-val.l2_grid=[0.1, -1.0]",
     "evaluator 'linear-val': l2_grid holds -1.0; each value must be a number in [0, inf)"),
    ("methods.mkdt.lr_img=-1.0", "method 'mkdt': lr_img=-1.0 must be a number in [0, inf)"),
    ("methods.krrst.ridge=0.0", "method 'krrst': ridge=0.0 must be a number in (0, inf)"),
    ("methods.dm-ssl.momentum=1.0", "method 'dm-ssl': momentum=1.0 must be a number in [0, 1)"),
    ("methods.highloss.expert_lr=0.0", "method 'highloss': expert_lr=0.0 must be a number"),
    ("methods.kmeans.max_iter=0", "method 'kmeans': max_iter=0 must be an int in [1, inf)"),
    ("methods.sas.threshold=1.5", "method 'sas': threshold=1.5 must be a number in [0, 1]"),
    ("methods.random-ssl.temperature=0.0",
     "method 'random-ssl': temperature=0.0 must be a number in (0, inf)"),
])
def test_a_value_outside_its_declared_range_is_refused_naming_it(override, message):
    with pytest.raises(UserError) as error:
        build_config("quick", overrides=[override])
    assert message in str(error.value) and "\n" not in str(error.value)


def test_the_ends_of_the_ranges_are_accepted():
    cfg = build_config("quick", {"seeds": [0, SEED_MAX]}, [
        "teacher.momentum=0.0", "teacher.min_scale=1.0", "teacher.hf_prob=1.0",
        "teacher.cj_strength=2.5", "teacher.train_images=0", "pretrain.steps=0",
        "methods.mkdt.lr_lr=0.0", "evaluators.linear.l2=0.0"]).to_dict()
    assert cfg["run"]["seeds"] == [0, SEED_MAX]
    seed_everything(SEED_MAX)  # every generator takes the largest seed


def test_a_variants_option_out_of_range_is_refused():
    with pytest.raises(UserError, match=r"mkdt\[iterations=-5\]: method 'mkdt': "
                                        r"iterations=-5 must be an int in \[1, inf\)"):
        build_config("quick", {"methods": ["random", "mkdt[iterations=-5]"]})


@pytest.mark.parametrize("flags, message", [
    ({"seeds": [0, 0]}, "run: seeds lists 0 twice"),
    ({"seeds": [99999999999999999999999]}, "seeds holds 99999999999999999999999; each value "
                                           "must be an int in [0, 4294967295]"),
    ({"archs": ["convnet", "convnet"]}, "run: archs lists 'convnet' twice"),
    ({"evaluators": ["linear", "linear"]}, "run: evaluators lists 'linear' twice"),
    ({"tasks": ["digits", "digits"]}, "run: tasks lists 'digits' twice"),
    ({"fractions": [0.05, "5%"]}, "run: fractions lists 0.05 twice"),
    ({"methods": ["random", "mkdt", "random"]}, "run: methods lists 'random' twice"),
])
def test_a_row_given_twice_or_a_seed_no_generator_takes_is_refused(flags, message):
    with pytest.raises(UserError) as error:
        build_config("quick", flags)
    assert message in str(error.value)


# --------------------------------------------------------------------------- degenerate data


def _tree(root: Path, classes: tuple[str, ...]) -> Path:
    for split in ("train", "test"):
        for c in classes:
            (root / split / c).mkdir(parents=True)
            for i in range(3):
                Image.new("RGB", (8, 8), (40 * i, 0, 0)).save(root / split / c / f"{i}.png")
    return root


def test_an_image_folder_of_one_class_is_refused(tmp_path):
    """One class scores 100 % for every encoder: no number, one line."""
    root = _tree(tmp_path / "one", ("only",))
    with pytest.raises(UserError, match="has one class folder \\('only'\\); a task needs at "
                                        "least 2 classes"):
        load_dataset(f"imagefolder:{root}", cache_dir=tmp_path / "cache")
    assert load_dataset(f"imagefolder:{_tree(tmp_path / 'two', ('a', 'b'))}",
                        cache_dir=tmp_path / "cache").num_classes == 2


def _digits_set(directory: Path, n: int) -> Path:
    digits = load_dataset("digits")
    DistilledSet(images=digits.normalized("train")[:n], targets=torch.randn(n, 5), lr=None,
                 source="digits", mean=digits.mean, std=digits.std, method="external"
                 ).save(directory)
    return directory


def test_an_empty_set_is_refused_as_an_import_but_none_stays_a_row(tmp_path):
    empty = _digits_set(tmp_path / "empty", 0)
    with pytest.raises(UserError, match="holds no images; pre-training on nothing is the "
                                        "'none' row"):
        build_config("quick", {"methods": [f"import:{empty}"]})
    assert build_config("quick", {"methods": ["none"]}).to_dict()["run"]["methods"] == ["none"]


@pytest.mark.parametrize("name", ["teacher", "none", "random", "full", "mkdt", "krrst",
                                  "mkdt[init=random]", "a,b", "", " x"])
def test_eval_names_that_tables_would_read_as_another_row_are_refused(name):
    with pytest.raises(UserError, match="--name"):
        check_set_name(name)
    check_set_name("import:my-set")


@pytest.mark.parametrize("override, message", [
    ("run.train_pool=5000", "run.train_pool=5000 is larger than the 1,437 training images"),
    ("teacher.train_images=1438", "teacher.train_images=1438 is larger than"),
    ("run.fractions=[0.05, 0.001]", "label fraction 0.001 selects 1 of the 1,437 training "
                                    "images of task 'digits'; a probe needs at least 2"),
])
def test_sizes_the_data_cannot_give_are_refused_while_planning(tmp_path, override, message):
    """A pool or teacher subset beyond the training set would silently mean all of it; a
    fraction of one labelled image scores one class whatever the encoder."""
    from mkdt_bench.pipeline.planner import plan_grid
    from mkdt_bench.results import ResultStore
    from mkdt_bench.stages.env import Env

    env = Env(cache_dir=str(tmp_path / "cache"), progress=False, threads=1)
    store = ResultStore.read_only(tmp_path / "results.sqlite")
    with pytest.raises(UserError, match=message):
        plan_grid(build_config("quick", {"methods": ["random"]}, [override]).to_dict(), env, store)


# --------------------------------------------------------------------------- command line


def error_of(capsys, *argv: str) -> str:
    """The one stderr line of ``mkdt-bench ARGV``, run here, that is refused with exit 2."""
    code = main(list(argv))
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and err.startswith("error: "), err
    return err


def test_bad_values_and_an_absent_ray_stop_before_anything_is_written(tmp_path, capsys,
                                                                       monkeypatch):
    """Refused in one line with exit 2, and neither the database nor an artifact exists."""
    run = ("run", "--cache-dir", str(tmp_path / "cache"), *FAST)
    assert "teacher: epochs=-1 must be an int in [1, inf)" in error_of(
        capsys, *run, "--set", "teacher.epochs=-1")
    assert "seeds holds 99999999999999999999999" in error_of(
        capsys, *run, "--seeds", "99999999999999999999999")
    assert "seeds lists 0 twice" in error_of(capsys, *run, "--seeds", "0,0")
    monkeypatch.setitem(sys.modules, "ray", None)  # not installed
    assert "--executor ray needs Ray" in error_of(capsys, *run, "--executor", "ray")
    assert not (tmp_path / "cache").exists()


@pytest.mark.parametrize("command, setting, message", [
    ("run", "methods.mkdt.iterations=5", "method 'mkdt' is not in this grid (random)"),
    ("run", "evaluators.knn.k=5", "evaluator 'knn' is not in this grid (linear)"),
    ("run", "run.seeds=[1]", "--set 'run.seeds=[1]' and --seeds both set seeds"),
    ("eval", "evaluators.knn.k=5", "evaluator 'knn' is not in this grid (linear)"),
    ("eval", "run.seeds=[1]", "--set 'run.seeds=[1]' and --seeds both set seeds"),
], ids=["run: method not run", "run: evaluator not run", "run: --set and its flag",
        "eval: evaluator not run", "eval: --set and its flag"])
def test_a_set_the_grid_never_reads_is_refused(tmp_path, capsys, command, setting, message):
    """Each of these was accepted, exit 0, and did nothing (or lost to the other value)."""
    cache = tmp_path / "cache"
    where = (["--distilled", str(_digits_set(tmp_path / "s", 10))] if command == "eval"
             else ["--methods", "random"])
    line = error_of(capsys, command, *where, "--seeds", "0", "--dataset", "digits",
                    "--cache-dir", str(cache), "--set", setting, "--no-progress")
    assert message in line
    assert not cache.exists()


def test_a_set_the_grid_reads_is_accepted():
    from mkdt_bench.cli.common import check_overrides_read

    overrides = ["methods.mkdt.iterations=5", "evaluators.knn.k=5", "run.seeds=[1]"]
    flags = {"methods": ["random", "mkdt[init=random]"], "evaluators": ["linear", "knn"]}
    cfg = build_config(flags=flags, overrides=overrides).to_dict()
    check_overrides_read(overrides, cfg, flags)  # a variant's method counts as in the grid


def test_a_run_whose_only_task_is_absent_stops_before_the_teacher(tmp_path, capsys):
    cache, data = tmp_path / "cache", tmp_path / "data"
    line = error_of(capsys, "run", "--methods", "random", "--seeds", "0", "--tasks", "cub2011",
                    "--data-root", str(data), "--cache-dir", str(cache), *FAST)
    assert "downstream task 'cub2011'" in line and "no task is left to evaluate" in line
    assert str(data / "CUB_200_2011") in line
    assert not (cache / "artifacts" / "teacher").exists()
    assert not (cache / "results.sqlite").exists()


def _row(stdout: str, name: str) -> str:
    rows = [ln for ln in stdout.splitlines() if ln.startswith(f"| {name} ")]
    assert len(rows) == 1, stdout
    return rows[0].split("|")[2].strip()


def ok_run(capsys, *argv: str) -> tuple[str, str]:
    """stdout and stderr of ``mkdt-bench ARGV``, run here, that succeeds."""
    code = main(list(argv))
    out, err = capsys.readouterr()
    assert code == 0, err
    return out, err


def test_eval_with_the_runs_preset_scores_its_set_as_the_run_did_and_keeps_names_apart(
        tmp_path, capsys, teacher_cache):
    """``eval --preset quick`` of a set the quick grid stored gives the grid's number and
    says which recipe it used; ``--name`` names new rows; a name of another set's rows, a
    reserved name and an empty set are refused."""
    cache = ("--cache-dir", str(teacher_cache))
    grid, _ = ok_run(capsys, "run", "--methods", "random", "--seeds", "0", "--fractions", "0.05",
                     "--executor", "inprocess", *cache, *FAST)
    recipe = "20 epochs at batch 32, SGD lr 0.1 (a set's learned lr where it has one)"
    assert f"pre-training {recipe}" in grid  # the caption says it too
    stored = next(p.parent for p in (tmp_path / "cache" / "artifacts" / "distilled").glob(
        "*/manifest.json") if json.loads(p.read_text()).get("config", {}).get("method")
        == "random")
    args = ("eval", "--distilled", str(stored), "--seeds", "0", "--fractions", "0.05",
            "--no-progress", *cache)
    out, err = ok_run(capsys, *args, "--preset", "quick", "--name", "import:grid-random")
    assert f"pre-training recipe: preset quick: {recipe}" in err
    assert f"pre-training {recipe}" in out
    assert _row(out, "import:grid-random") == _row(grid, "random")

    out, err = ok_run(capsys, *args, "--name", "import:defaults")
    assert "pre-training recipe: the built-in defaults (no --preset): 20 epochs at batch " \
           "256" in err
    assert _row(out, "import:defaults")  # the new name, although the set is stored

    other = str(_digits_set(tmp_path / "other", 20))
    assert "--name 'import:defaults' already names 1 stored rows of another set" in error_of(
        capsys, "eval", "--distilled", other, "--name", "import:defaults", *cache)
    assert "--name 'random' is reserved" in error_of(
        capsys, "eval", "--distilled", other, "--name", "random", *cache)
    assert "holds no images" in error_of(
        capsys, "eval", "--distilled", str(_digits_set(tmp_path / "e", 0)), *cache)
