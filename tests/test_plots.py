"""``mkdt-bench plot`` and ``show``: figures never pool cell groups, say what they show,
draw the teacher and ``none`` as reference lines; ``show`` finds a stored set by method
and seed, upscales small images, and refuses empty sets in one line."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from matplotlib.container import ErrorbarContainer
from PIL import Image
from test_tables import frame, grid, row

from mkdt_bench.cache import ArtifactCache
from mkdt_bench.cli import main
from mkdt_bench.distilled import DistilledSet
from mkdt_bench.report.figures import DPI, figures, versus_figures
from mkdt_bench.results import ResultStore

TWO_BUDGETS = (grid(143, {"teacher": [66, 67, 68], "random": [48, 50, 52],
                          "full": [66, 67, 68.5], "mkdt": [37, 38, 38.61],
                          "krrst": [48, 50, 52], "none": [26, 27, 28]})
               + grid(28, {"random": [40, 41, 42], "full": [66, 67, 68.5],
                           "mkdt": [21, 22, 22.28], "none": [26, 27, 28]}))


@pytest.fixture
def cli(capsys):
    """The command line in this process: ``cli(*args)`` -> returncode, stdout, stderr."""
    def run(*args: str) -> SimpleNamespace:
        code = main(list(args))
        out = capsys.readouterr()
        return SimpleNamespace(returncode=code, stdout=out.out, stderr=out.err)
    return run


def series(ax) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``{legend label: (x, y)}`` of every errorbar series of an axes."""
    out = {}
    for container in ax.containers:
        if isinstance(container, ErrorbarContainer):
            line = container.lines[0]
            out[container.get_label()] = (np.asarray(line.get_xdata(), float),
                                          np.asarray(line.get_ydata(), float))
    return out


def test_budgets_are_never_pooled_in_a_figure(tmp_path):
    made = dict(figures(frame(TWO_BUDGETS, tmp_path)))
    assert sorted(made) == ["digits-143img-convnet-linear-digits-fractions",
                            "digits-28img-convnet-linear-digits-fractions",
                            "digits-convnet-linear-digits-budgets-1pct-labels",
                            "digits-convnet-linear-digits-budgets-5pct-labels"]
    ten = series(made["digits-143img-convnet-linear-digits-fractions"].axes[0])
    two = series(made["digits-28img-convnet-linear-digits-fractions"].axes[0])
    assert ten["mkdt"][1] == pytest.approx([np.mean([37, 38, 38.61]), np.mean([38, 39, 39.61])])
    assert two["mkdt"][1] == pytest.approx([np.mean([21, 22, 22.28]), np.mean([22, 23, 23.28])])
    budgets = series(made["digits-convnet-linear-digits-budgets-1pct-labels"].axes[0])
    x, y = budgets["mkdt"]
    assert list(y) == pytest.approx([np.mean([21, 22, 22.28]), np.mean([37, 38, 38.61])])
    assert x[0] == pytest.approx(28, rel=0.1) and x[1] == pytest.approx(143, rel=0.1)
    full = next(v for k, v in budgets.items() if k.startswith("full"))
    assert np.allclose(full[0], 1437, rtol=0.15)  # placed by the images it holds
    assert len(full[0]) == 2 and full[0][0] != full[0][1]  # one point per budget, apart


def test_a_figure_is_readable_on_its_own(tmp_path):
    made = dict(figures(frame(TWO_BUDGETS, tmp_path)))
    ax = made["digits-143img-convnet-linear-digits-fractions"].axes[0]
    assert ax.get_xscale() == "linear"
    assert list(ax.get_xticks()) == pytest.approx([0.01, 0.05])
    assert [t.get_text() for t in ax.get_xticklabels()] == ["1 %", "5 %"]
    title = ax.get_title()
    for part in ("digits, linear evaluator", "encoder convnet", "from digits",
                 "budget 143 images (9.95 % of 1,437)", "teacher SimCLR resnet10",
                 "n = 3 seeds", "error bars: population std"):
        assert part in title, part
    lines = {line.get_label(): line for line in ax.get_lines()}
    assert lines["teacher (ceiling)"].get_linestyle() == "--"
    assert lines["none (floor: no pre-training)"].get_linestyle() == ":"
    sets = series(ax)
    assert set(sets) == {"random", "full (1,437 images)", "mkdt", "krrst"}  # no teacher/none
    # random and krrst have equal means: their markers are offset, not on top of each other
    assert not np.allclose(sets["random"][0], sets["krrst"][0])
    assert sets["random"][1] == pytest.approx(sets["krrst"][1])
    ci = dict(figures(frame(TWO_BUDGETS, tmp_path), ci=True))
    assert "95 % t-interval" in ci["digits-28img-convnet-linear-digits-fractions"].axes[0] \
        .get_title()


def test_plot_files_and_filters(tmp_path, cli):
    db = tmp_path / "r.sqlite"
    ResultStore(db).add(TWO_BUDGETS)
    out = cli("plot", "--results-db", str(db), "--out", str(tmp_path / "plots"))
    assert out.returncode == 0, out.stderr
    paths = out.stdout.split()
    assert len(paths) == 4
    with Image.open(paths[0]) as image:
        assert image.info["dpi"][0] == pytest.approx(DPI, abs=1) and DPI >= 150
    one = cli("plot", "--results-db", str(db), "--budget", "28", "--out",
              str(tmp_path / "fig.pdf"))
    assert one.returncode == 0, one.stderr
    assert (tmp_path / "fig.pdf").read_bytes().startswith(b"%PDF")
    svg = cli("plot", "--results-db", str(db), "--budget", "143", "--out",
              str(tmp_path / "fig.svg"), "--methods", "mkdt,random")
    assert svg.returncode == 0 and "<svg" in (tmp_path / "fig.svg").read_text()
    assert "teacher (ceiling)" in (tmp_path / "fig.svg").read_text()  # kept by --methods
    several = cli("plot", "--results-db", str(db), "--out", str(tmp_path / "all.png"))
    assert several.returncode == 2 and "makes 4 figures" in several.stderr
    assert len(several.stderr.strip().splitlines()) == 1
    none = cli("plot", "--results-db", str(db), "--arch", "resnet18", "--out", str(tmp_path))
    assert none.returncode == 2 and "no result rows" in none.stderr


def test_plot_without_results_is_one_line(tmp_path, cli):
    out = cli("plot", "--cache-dir", str(tmp_path), "--out", str(tmp_path / "plots"))
    assert out.returncode == 2 and "does not exist" in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1


def ablation_rows() -> list:
    """MKDT at 50 and 200 iterations from both starts, beside sets without the option."""
    sweep = {"mkdt[iterations=50]": ({"iterations": 50, "init": "high_loss"}, [40, 41, 42]),
             "mkdt": ({"iterations": 200, "init": "high_loss"}, [44, 45, 46]),
             "mkdt[init=random,iterations=50]": ({"iterations": 50, "init": "random"},
                                                 [50, 51, 52]),
             "mkdt[init=random]": ({"iterations": 200, "init": "random"}, [53, 54, 55]),
             "highloss": ({"num_experts": 4}, [30, 31, 32]), "random": ({}, [48, 50, 52]),
             "teacher": ({}, [80, 81, 82]), "none": ({}, [20, 21, 22])}
    return [row(label, seed, value, fraction=0.01, options=options)
            for label, (options, values) in sweep.items() for seed, value in enumerate(values)]


def test_versus_puts_a_method_option_on_the_x_axis(tmp_path, cli):
    (name, fig), = versus_figures(frame(ablation_rows(), tmp_path), "iterations")
    assert name == "digits-t1-143img-convnet-linear-digits-versus-iterations-1pct-labels"
    ax = fig.axes[0]
    lines = series(ax)  # one line per family, the option's values as x, means as y
    assert set(lines) == {"mkdt", "mkdt[init=random]"}
    assert list(lines["mkdt"][0]) == [50, 200] and list(lines["mkdt"][1]) == [41, 45]
    assert list(lines["mkdt[init=random]"][1]) == [51, 54]
    refs = {line.get_label(): line for line in ax.get_lines() if not line.get_label()
            .startswith("_")}
    for label in ("highloss", "random", "teacher (ceiling)", "none (floor: no pre-training)"):
        assert list(refs[label].get_xdata())[0] < 50 < 200 < list(refs[label].get_xdata())[-1]
    assert list(refs["random"].get_ydata()) == [50, 50]
    assert "1 % of the task's labels" in ax.get_title() and "iterations" in ax.get_xlabel()
    db = tmp_path / "r.sqlite"
    ResultStore(db).add(ablation_rows())
    out = cli("plot", "--results-db", str(db), "--versus", "iterations", "--out",
              str(tmp_path / "it.png"))
    assert out.returncode == 0, out.stderr
    with Image.open(tmp_path / "it.png") as image:
        assert image.size[0] > 1000
    bad = cli("plot", "--results-db", str(db), "--versus", "iteration", "--out",
              str(tmp_path / "x.png"))
    assert bad.returncode == 2 and "'iteration'" in bad.stderr and "iterations" in bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1


def test_versus_draws_rows_that_differ_in_another_setting_as_separate_lines(tmp_path):
    rows = ablation_rows()
    longer = [row(label, seed, value + 10, fraction=0.01, options=options)
              for label, options, values in (
                  ("mkdt[iterations=50]", {"iterations": 50, "init": "high_loss"}, [40, 41, 42]),
                  ("mkdt", {"iterations": 200, "init": "high_loss"}, [44, 45, 46]),
                  ("random", {}, [48, 50, 52]))
              for seed, value in enumerate(values)]
    for r in longer:
        r.config["pretrain"] = {**r.config["pretrain"], "steps": 1000}
        r.cell_key += "-1000"
    (_, fig), = versus_figures(frame(rows + longer, tmp_path), "iterations")
    lines = series(fig.axes[0])
    assert set(lines) == {"mkdt {pretrain.steps=0}", "mkdt {pretrain.steps=1000}",
                          "mkdt[init=random]"}
    assert list(lines["mkdt {pretrain.steps=0}"][1]) == [41, 45]
    assert list(lines["mkdt {pretrain.steps=1000}"][1]) == [51, 55]
    refs = [line.get_label() for line in fig.axes[0].get_lines()
            if line.get_label().startswith("random")]
    assert sorted(refs) == ["random {pretrain.steps=0}", "random {pretrain.steps=1000}"]


def store_set(cache_dir, method: str, seed: int, budget: int, images: torch.Tensor,
              mean=(0.5,), std=(0.25,), options: dict | None = None) -> None:
    """A distilled set in the cache, stored as the runner stores one."""
    cache = ArtifactCache(cache_dir)
    config = {"method": method, "options": options or {}, "budget": budget, "seed": seed}

    def produce(tmp):
        DistilledSet(images=images, targets=torch.zeros(len(images), 4), lr=None,
                     source="digits", mean=mean, std=std, method=method).save(tmp)
        return {"num_images": len(images), "method": method}

    cache.get_or_create("distilled", ArtifactCache.key("distilled", config), produce,
                        config=config)


def test_show_picks_a_stored_set_by_method_and_seed(tmp_path, cli):
    cache = tmp_path / "cache"
    red = torch.zeros(5, 3, 8, 8)
    red[0, 0] = 1.0  # image 0 is pure red once de-normalised; the others black
    mean, std = (0.5, 0.4, 0.3), (0.2, 0.2, 0.2)
    normalised = (red - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    store_set(cache, "random", 1, 143, normalised, mean, std)
    store_set(cache, "random", 0, 143, normalised.flip(0), mean, std)
    store_set(cache, "random", 1, 28, normalised[:2], mean, std)
    store_set(cache, "none", 0, 143, normalised[:0], mean, std)
    out = cli("show", "--method", "random", "--seed", "1", "--budget", "143", "--cache-dir",
              str(cache), "--out", str(tmp_path / "set.png"), "--max-images", "4")
    assert out.returncode == 0, out.stderr
    with Image.open(tmp_path / "set.png") as image:
        title = image.info["Title"]
        pixels = np.asarray(image.convert("RGB"))
    assert title == ("random, seed 1: 5 images of 3x8x8 from digits (budget 143); only the "
                     "first 4 shown")
    red_pixels = (pixels == [255, 0, 0]).all(axis=-1).sum()
    assert red_pixels == 32 * 32  # one 8 x 8 image, upscaled 4x (nearest) to 32 x 32
    ambiguous = cli("show", "--method", "random", "--seed", "1", "--cache-dir", str(cache),
                    "--out", str(tmp_path / "x.png"))
    assert ambiguous.returncode == 2 and "budget 143, seed 1; budget 28, seed 1" in \
        ambiguous.stderr and "--budget" in ambiguous.stderr
    absent = cli("show", "--method", "mkdt", "--seed", "0", "--cache-dir", str(cache),
                 "--out", str(tmp_path / "x.png"))
    assert absent.returncode == 2 and "no set of 'mkdt' is stored" in absent.stderr
    empty = cli("show", "--method", "none", "--seed", "2", "--cache-dir", str(cache),
                "--out", str(tmp_path / "x.png"))
    assert empty.returncode == 2 and "holds no images" in empty.stderr
    assert len(empty.stderr.strip().splitlines()) == 1 and "Traceback" not in empty.stderr


def test_a_plain_name_picks_the_set_at_the_methods_defaults_over_its_variants(tmp_path):
    from mkdt_bench.catalog import find_stored_set

    cache = tmp_path / "cache"
    images = torch.zeros(3, 1, 8, 8)
    store_set(cache, "mkdt", 0, 143, images, options={"init": "high_loss", "width": 16})
    store_set(cache, "mkdt", 0, 143, images[:2], options={"init": "random", "width": 16})
    _, plain = find_stored_set(cache, "mkdt", 0, 143)
    assert plain["config"]["options"]["init"] == "high_loss"
    _, variant = find_stored_set(cache, "mkdt[init=random]", 0, 143)
    assert variant["config"]["options"]["init"] == "random"


def test_show_a_directory(tmp_path, cli):
    mean, std = (0.5, 0.4, 0.3), (0.2, 0.2, 0.2)
    raw = torch.rand(9, 3, 40, 40, generator=torch.Generator().manual_seed(0))
    images = (raw - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    DistilledSet(images=images, targets=torch.zeros(9, 2), lr=None, source="x", mean=mean,
                 std=std, method="m").save(tmp_path / "set")
    out = cli("show", str(tmp_path / "set"), "--out", str(tmp_path / "set.png"))
    assert out.returncode == 0, out.stderr
    with Image.open(tmp_path / "set.png") as image:
        assert image.info["Title"] == "m: 9 images of 3x40x40 from x"
        pixels = np.asarray(image.convert("RGB")).reshape(-1, 3)
    expected = (raw[0].permute(1, 2, 0).reshape(-1, 3) * 255 + 0.5).int().numpy()
    hits = (np.abs(pixels[:, None, :].astype(int) - expected[None, :64]) <= 1).all(-1).any(0)
    assert hits.all()  # the first image's pixels appear de-normalised (40 px: not scaled)
    bad = cli("show", str(tmp_path / "nowhere"), "--out", str(tmp_path / "x.png"))
    assert bad.returncode == 2 and "nowhere" in bad.stderr
    both = cli("show", str(tmp_path / "set"), "--method", "random", "--out",
               str(tmp_path / "x.png"))
    assert both.returncode == 2 and "not both" in both.stderr
