"""The bad-input catalogue: every case is answered by one line ``error: ...`` that names the
bad value, exit code 2, no traceback, and nothing half-written in the cache or database."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torchvision
from PIL import Image

RUN = ("run", "--no-progress", "--seeds", "0", "--methods", "random", "--set",
       "teacher.epochs=1", "--set", "teacher.arch=convnet")


def image_tree(root: Path, *, classes=("a", "b"), splits=("train", "test")) -> Path:
    for split in splits:
        (root / split).mkdir(parents=True)
        for c in classes:
            (root / split / c).mkdir()
            for i in range(3):
                Image.new("RGB", (8, 8), (40 * i, 0, 0)).save(root / split / c / f"{i}.png")
    return root


def corrupt_jpeg(root: Path) -> Path:
    image_tree(root)
    (root / "train" / "a" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not a jpeg")
    return root


def decompression_bomb(root: Path) -> Path:
    """A 22 kB PNG of 182 million pixels (PIL's decompression-bomb limit is 179 million)."""
    image_tree(root)
    Image.new("1", (13500, 13500)).save(root / "train" / "a" / "bomb.png")
    return root


def sixteen_bit(root: Path) -> Path:
    """A 16-bit greyscale PNG: converting it to RGB would clip every pixel to 255."""
    image_tree(root)
    Image.new("I;16", (8, 8), 60000).save(root / "train" / "a" / "deep.png")
    return root


def non_utf8_names(root: Path, *, class_folder: bool) -> Path:
    """A file (a broken image) or a class folder whose name is not UTF-8."""
    image_tree(root)
    if class_folder:
        for split in ("train", "test"):
            os.rename(root / split / "b", os.fsencode(root / split) + b"/\xff")
    else:
        with open(os.fsencode(root / "train" / "a") + b"/\xff\xfe.png", "wb") as f:
            f.write(b"not an image")
    return root


def deep_preset(root: Path) -> Path:
    """A preset whose array nests deeper than Python's recursion limit."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "deep.toml").write_text("[run]\nseeds = " + "[" * 3000 + "]" * 3000 + "\n")
    return root / "deep.toml"


def text_only_class(root: Path) -> Path:
    image_tree(root, classes=("a", "b", "c"))
    for png in (root / "train" / "c").iterdir():
        png.unlink()
    (root / "train" / "c" / "notes.txt").write_text("no images here")
    return root


def other_arch_checkpoint(root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    torch.save(torchvision.models.resnet50().state_dict(), root / "r50.pt")
    return root / "r50.pt"


def not_sqlite(root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "bad.sqlite").write_bytes(b"garbage" * 100)
    return root / "bad.sqlite"


def a_file(root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "file").write_text("x")
    return root / "file"


# (case id, argument builder given a scratch folder, text the one-line error must contain);
# checked in this process, except OWN_PROCESS: the two where a regression would bring down the
# process that runs it (a thread pool of 100,000, as many worker processes), and a name that
# only a real process's stderr (errors="backslashreplace") prints.
CATALOGUE = [
    ("unknown method", lambda d: ["--methods", "random,nosuch"], "'nosuch'"),
    ("unknown architecture", lambda d: ["--archs", "nosuch"], "'nosuch'"),
    ("unknown dataset", lambda d: ["--dataset", "nosuch"], "'nosuch'"),
    ("unknown evaluator", lambda d: ["--evaluators", "nosuch"], "'nosuch'"),
    ("unknown preset", lambda d: ["--preset", "nosuch"], "'nosuch'"),
    ("unknown teacher arch", lambda d: ["--set", "teacher.arch='nosuch'"], "'nosuch'"),
    ("--set unknown key", lambda d: ["--set", "teacher.nope=1"], "'nope'"),
    ("--set wrong type", lambda d: ["--set", "teacher.epochs=abc"], "'abc'"),
    ("--set without value", lambda d: ["--set", "teacher.epochs"], "'teacher.epochs'"),
    ("--set unknown section", lambda d: ["--set", "bogus.x=1"], "'bogus.x=1'"),
    ("--set bad choice", lambda d: ["--set", "teacher.ssl='byol'"], "'byol'"),
    ("preset nested too deeply", lambda d: ["--preset", str(deep_preset(d / "p"))],
     "nests arrays or tables too deeply"),
    ("--set value nested too deeply", lambda d: [
        "--set", "run.seeds=" + "[" * 3000 + "]" * 3000], "seeds holds"),
    ("budget zero", lambda d: ["--budget", "0"], "'0'"),
    ("budget negative", lambda d: ["--budget=-5"], "'-5'"),
    ("budget not a number", lambda d: ["--budget", "lots"], "'lots'"),
    ("budget over 100 %", lambda d: ["--budget", "150%"], "'150%'"),
    ("budget larger than the data", lambda d: ["--budget", "5000"], "'5000'"),
    ("negative training pool", lambda d: ["--set", "run.train_pool=-3"], "train_pool=-3"),
    ("bad ConvNet option", lambda d: ["--archs", "convnet:size=3"], "'size=3'"),
    ("krrst real batch zero", lambda d: ["--methods", "krrst", "--set",
                                         "methods.krrst.real_batch=0"], "real_batch=0"),
    ("mkdt unroll not a mode", lambda d: ["--methods", "mkdt", "--set",
                                          "methods.mkdt.unroll='fast'"], "'fast'"),
    ("krrst negative teacher views", lambda d: ["--methods", "krrst", "--set",
                                                "methods.krrst.teacher_views=-1"],
     "teacher_views=-1"),
    ("fine-grained source missing", lambda d: ["--dataset", "cub2011", "--data-root",
                                               str(d / "nowhere")], "nowhere"),
    ("label fraction zero", lambda d: ["--fractions", "0"], "0.0"),
    ("label fraction above one", lambda d: ["--fractions", "0.01,1.5"], "1.5"),
    ("label fraction not a number", lambda d: ["--fractions", "half"], "'half'"),
    ("empty seed list", lambda d: ["--seeds", ","], "--seeds"),
    ("seed list with a value left out", lambda d: ["--seeds", "0,,1"], "empty item"),
    ("negative seed", lambda d: ["--seeds=-1"], "-1"),
    ("unknown device", lambda d: ["--device", "tpu"], "'tpu'"),
    ("data root missing", lambda d: ["--dataset", "tinyimagenet", "--data-root",
                                     str(d / "nowhere")], "nowhere"),
    ("image folder missing", lambda d: ["--dataset", f"imagefolder:{d / 'nowhere'}"],
     "nowhere"),
    ("image folder without classes", lambda d: [
        "--dataset", f"imagefolder:{image_tree(d / 'f', classes=())}"], "has no class folders"),
    ("image folder with non-image files", lambda d: [
        "--dataset", f"imagefolder:{text_only_class(d / 'f')}"], "train/c has no image files"),
    ("image folder with a corrupt JPEG", lambda d: [
        "--dataset", f"imagefolder:{corrupt_jpeg(d / 'f')}"], "broken.jpg"),
    ("image folder with a decompression bomb", lambda d: [
        "--dataset", f"imagefolder:{decompression_bomb(d / 'f')}"], "bomb.png"),
    ("image folder with a 16-bit image", lambda d: [
        "--dataset", f"imagefolder:{sixteen_bit(d / 'f')}"], "deep.png has I;16 pixels"),
    ("image folder with a non-UTF-8 file name", lambda d: [
        "--dataset", f"imagefolder:{non_utf8_names(d / 'f', class_folder=False)}"],
     "is not a decodable image"),
    ("image folder with a non-UTF-8 class folder", lambda d: [
        "--dataset", f"imagefolder:{non_utf8_names(d / 'f', class_folder=True)}"],
     "not a printable UTF-8 name"),
    ("image folder without test split", lambda d: [
        "--dataset", f"imagefolder:{image_tree(d / 'f', splits=('train',))}"], "test"),
    ("teacher batch larger than its images", lambda d: ["--set", "teacher.train_images=10"],
     "teacher.batch_size"),
    ("teacher checkpoint missing", lambda d: ["--teacher-checkpoint", str(d / "none.pt")],
     "none.pt"),
    ("teacher checkpoint of another architecture", lambda d: [
        "--teacher-checkpoint", str(other_arch_checkpoint(d / "ck")), "--set",
        "teacher.arch='resnet18-teacher'"], "resnet18"),
    ("results database not SQLite", lambda d: ["--results-db", str(not_sqlite(d / "db"))],
     "bad.sqlite"),
    ("cache directory not writable", lambda d: ["--cache-dir", str(a_file(d / "c"))], "file"),
    ("--ray-address without ray", lambda d: ["--ray-address", "auto"], "--ray-address"),
    ("unknown executor", lambda d: ["--executor", "nosuch"], "'nosuch'"),
    ("negative retries", lambda d: ["--retries=-1"], "--retries -1"),
    ("negative threads", lambda d: ["--threads=-2"], "--threads -2"),
    ("threads past any machine (torch's pool segfaulted)", lambda d: ["--threads=100000"],
     "--threads 100000 must be at most 1024"),
    ("workers past any machine", lambda d: ["--workers=100000"], "--workers 100000"),
    ("empty --preset (was the quick preset)", lambda d: ["--preset", ""], "--preset is empty"),
    ("blank --data-root (was the default)", lambda d: ["--data-root", " "],
     "--data-root is empty"),
    ("empty --recompute (recomputed nothing)", lambda d: ["--recompute", ""],
     "--recompute is empty"),
    ("empty --cache-dir (was the default cache)", lambda d: ["--cache-dir", ""],
     "--cache-dir is empty"),
    ("blank --results-db (was the default database)", lambda d: ["--results-db", " "],
     "--results-db is empty"),
    ("--relative without full in the grid", lambda d: ["--relative"], "'full'"),
    ("--paired baseline not in the grid", lambda d: ["--paired", "kmeans"], "'kmeans'"),
]
OWN_PROCESS = {"threads past any machine (torch's pool segfaulted)", "workers past any machine",
               "image folder with a non-UTF-8 file name"}


def assert_refused(tmp_path: Path, args: list[str], case: str, expected: str,
                   **environ: str) -> None:
    """One ``error: ...`` line naming ``expected``, exit 2, no traceback, and nothing
    half-written, from a real ``mkdt-bench`` process (see :func:`check_refusal`)."""
    cache = tmp_path / "cache"
    env = {**os.environ, "MKDT_BENCH_CACHE": str(cache), "OMP_NUM_THREADS": "1", **environ}
    out = subprocess.run([sys.executable, "-m", "mkdt_bench.cli", *args],
                         capture_output=True, text=True, env=env, timeout=300)
    check_refusal(cache, case, out.returncode, out.stderr, expected)


def check_refusal(cache: Path, case: str, status: int, stderr: str, expected: str) -> None:
    """One ``error: ...`` line naming ``expected``, exit 2, no traceback, and nothing
    half-written: no published artifact, no temporary left, no result row."""
    err = stderr.strip()
    assert status == 2, (case, status, err)
    assert "\n" not in err and err.startswith("error: "), err
    assert expected in err, (expected, err)
    assert "Traceback" not in err
    assert not list(cache.glob("artifacts/*/*/manifest.json")), "an artifact was published"
    assert not list(cache.rglob("*.tmp")), "a temporary file was left behind"
    db = cache / "results.sqlite"
    if db.exists():
        assert sqlite3.connect(db).execute("SELECT COUNT(*) FROM results").fetchone()[0] == 0


@pytest.fixture
def refused(tmp_path, cli_here):
    """:func:`assert_refused` in this process (no seconds of start-up per case)."""
    def check(args: list[str], case: str, expected: str) -> None:
        cache = tmp_path / "cache"
        status, _, err = cli_here(*args, cache=cache, OMP_NUM_THREADS="1")
        check_refusal(cache, case, status, err, expected)

    return check


@pytest.mark.parametrize("case, build, expected", CATALOGUE, ids=[c[0] for c in CATALOGUE])
def test_bad_input(tmp_path, refused, case, build, expected):
    if case in OWN_PROCESS:
        assert_refused(tmp_path, [*RUN, *build(tmp_path)], case, expected)
    else:
        refused([*RUN, *build(tmp_path)], case, expected)


def distilled_dir(root: Path, *, n: int = 10, n_targets: int | None = None, size: int = 8,
                  nan: bool = False, mean: tuple[float, ...] | None = None,
                  drop: str | None = None) -> Path:
    """A DistilledSet directory for digits (1 x 8 x 8), broken as asked."""
    import json

    from mkdt_bench.data import load_dataset

    digits = load_dataset("digits")
    root.mkdir(parents=True, exist_ok=True)
    images = torch.zeros(n, 1, size, size)
    if nan:
        images[0, 0, 0, 0] = float("nan")
    torch.save(images, root / "images.pt")
    torch.save(torch.zeros(n if n_targets is None else n_targets, 4), root / "targets.pt")
    meta = {"source": "digits", "mean": list(mean or digits.mean), "std": list(digits.std),
            "method": "external", "lr": None}
    (root / "distilled.json").write_text(json.dumps(meta))
    if drop:
        (root / drop).unlink()
    return root


def deep_metadata(root: Path) -> Path:
    """A set whose ``extra`` nests 900 objects: within JSON's limits, beyond a copy's."""
    distilled_dir(root)
    meta = (root / "distilled.json").read_text()
    (root / "distilled.json").write_text(
        meta[:-1] + ', "extra": ' + '{"a": ' * 900 + "1" + "}" * 900 + "}")
    return root


EVAL = ("eval", "--no-progress", "--seeds", "0", "--distilled")

# A DistilledSet directory given to ``mkdt-bench eval --distilled``.
DISTILLED_CATALOGUE = [
    ("distilled set directory missing", lambda d: [str(d / "nowhere")], "nowhere"),
    ("distilled set without images", lambda d: [str(distilled_dir(d / "s", drop="images.pt"))],
     "has no images.pt"),
    ("distilled set without targets", lambda d: [
        str(distilled_dir(d / "s", drop="targets.pt"))], "has no targets.pt"),
    ("distilled set with mismatched lengths", lambda d: [
        str(distilled_dir(d / "s", n_targets=7))], "N = 10 images, got shape (7, 4)"),
    ("distilled set of another image size", lambda d: [str(distilled_dir(d / "s", size=16))],
     "1x16x16 images but 'digits' has 1x8x8"),
    ("distilled set with deeply nested metadata", lambda d: [str(deep_metadata(d / "s"))],
     "nests objects or lists more than 32 deep"),
    ("distilled set with NaN values", lambda d: [str(distilled_dir(d / "s", nan=True))],
     "NaN"),
    ("distilled set in another normalisation", lambda d: [
        str(distilled_dir(d / "s", mean=(0.5,)))], "normalised with mean (0.5000)"),
]


@pytest.mark.parametrize("case, build, expected", DISTILLED_CATALOGUE,
                         ids=[c[0] for c in DISTILLED_CATALOGUE])
def test_bad_distilled_set(tmp_path, refused, case, build, expected):
    refused([*EVAL, *build(tmp_path)], case, expected)


@pytest.mark.parametrize("flag", ["--name", "--preset", "--dataset", "--data-root"])
def test_eval_refuses_an_empty_flag_it_used_to_read_as_left_out(tmp_path, refused, flag):
    refused([*EVAL, str(distilled_dir(tmp_path / "s")), flag, ""], flag, f"{flag} is empty")


def test_catalogue_size():
    assert len(CATALOGUE) + len(DISTILLED_CATALOGUE) >= 25


@pytest.mark.parametrize("extra", [[], ["--threads", "1"], ["--dry-run"]])
def test_huge_omp_num_threads_refused(tmp_path, extra):
    """``OMP_NUM_THREADS=100000`` sized torch's pool (a segfault, exit 139) or, with
    ``--threads 1``, a pool of 100,000 worker processes."""
    assert_refused(tmp_path, [*RUN, *extra], "OMP_NUM_THREADS", "OMP_NUM_THREADS=100000",
                   OMP_NUM_THREADS="100000")


def test_debug_shows_the_traceback(tmp_path):
    env = dict(os.environ, MKDT_BENCH_CACHE=str(tmp_path))
    out = subprocess.run([sys.executable, "-m", "mkdt_bench.cli", "run", "--debug",
                          "--methods", "nosuch"], capture_output=True, text=True, env=env,
                         timeout=300)
    assert out.returncode != 0 and "Traceback" in out.stderr
