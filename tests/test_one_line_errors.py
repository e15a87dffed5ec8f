"""Every command fails in one line (issue 29 §5): a bad path, a file where a folder is
expected, a set or reference file of the wrong kind, shape or type, an unknown output
extension, each answered by one ``error: ...`` line and exit code 2, no traceback, and
nothing left behind; read-only commands open the results database read-only."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from mkdt_bench.cli import main
from mkdt_bench.distilled import DistilledSet


def good_set(root: Path, channels: int = 1) -> Path:
    """A valid digits-shaped set (``channels`` x 8 x 8, digits' statistics when 1)."""
    DistilledSet(images=torch.randn(5, channels, 8, 8), targets=torch.randn(5, 4), lr=0.1,
                 source="digits", mean=(0.3,) * channels, std=(0.2,) * channels,
                 method="m").save(root)
    return root


def broken_set(root: Path, name: str, content: bytes | object) -> Path:
    """A valid set whose file ``name`` holds ``content`` (bytes, or saved with torch.save)."""
    good_set(root)
    if isinstance(content, bytes):
        (root / name).write_bytes(content)
    else:
        torch.save(content, root / name)
    return root


def reference(root: Path, **files: object) -> Path:
    """A reference repository's output folder: ``name_pt=tensor-or-object`` each saved."""
    root.mkdir(parents=True)
    for name, value in files.items():
        torch.save(value, root / name.replace("_pt", ".pt"))
    return root


def mkdt_files(root: Path, **changes: object) -> Path:
    files = {"images_5000_pt": torch.randn(5, 1, 8, 8), "labels_5000_pt": torch.randn(5, 4),
             "synlr_5000_pt": torch.tensor(0.1)}
    return reference(root, **{**files, **changes})


def a_file(root: Path, content: str | bytes = "x") -> Path:
    root.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, bytes):
        root.write_bytes(content)
    else:
        root.write_text(content)
    return root


def a_folder(root: Path) -> Path:
    root.mkdir(parents=True)
    return root


def a_database(root: Path) -> Path:
    from mkdt_bench.results import ResultStore

    root.parent.mkdir(parents=True, exist_ok=True)
    ResultStore(root).close()
    return root


def db(d: Path) -> list[str]:
    return ["--results-db", str(a_database(d / "r.sqlite"))]


CONVERT = ("convert", "--dataset", "digits", "--stats", "dataset")
EVAL = ("eval", "--no-progress", "--seeds", "0", "--distilled")

# (case, arguments built in a scratch folder, text the one error line must contain)
CASES = [
    ("table: database missing", lambda d: ["table", "--results-db", str(d / "no.sqlite")],
     "does not exist"),
    ("table: database not SQLite", lambda d: ["table", "--results-db",
                                              str(a_file(d / "r.sqlite", "garbage" * 50))],
     "cannot be used"),
    ("table: --out a folder", lambda d: ["table", *db(d), "--out", str(a_folder(d / "o"))],
     "is a directory"),
    ("table: --out under a file", lambda d: ["table", *db(d), "--out",
                                             str(a_file(d / "f") / "t.md")],
     "is not a writable folder"),
    ("table: a method without rows", lambda d: ["table", *db(d), "--methods", "randon"],
     "--methods: no stored rows of 'randon'"),
    ("table: a data set without rows", lambda d: ["table", *db(d), "--dataset", "cifar"],
     "--dataset: no stored rows of 'cifar'"),
    ("show: unknown extension", lambda d: ["show", str(good_set(d / "s")), "--out",
                                           str(d / "grid.txt")], ".png, .pdf, .svg"),
    ("show: --out a folder", lambda d: ["show", str(good_set(d / "s")), "--out",
                                        str(a_folder(d / "grid.png"))], "is a folder"),
    ("show: a file, not a set", lambda d: ["show", str(a_file(d / "f")), "--out",
                                           str(d / "g.png")], "is not a directory"),
    ("show: metadata a JSON list", lambda d: [
        "show", str(broken_set(d / "s", "distilled.json", b"[1]")), "--out", str(d / "g.png")],
     "holds a JSON list"),
    ("show: images a dict", lambda d: [
        "show", str(broken_set(d / "s", "images.pt", {"x": torch.zeros(1)})), "--out",
        str(d / "g.png")], "holds a dict, not a tensor"),
    ("show: images truncated", lambda d: [
        "show", str(broken_set(d / "s", "images.pt", b"PK\x03\x04")), "--out",
        str(d / "g.png")], "cannot be loaded"),
    ("show: images of wrong shape", lambda d: [
        "show", str(broken_set(d / "s", "images.pt", torch.zeros(5, 64))), "--out",
        str(d / "g.png")], "shape (5, 64)"),
    ("show: targets of wrong dtype", lambda d: [
        "show", str(broken_set(d / "s", "targets.pt", torch.zeros(5, 4, dtype=torch.int64))),
        "--out", str(d / "g.png")], "torch.int64"),
    ("show: two-channel images", lambda d: ["show", str(good_set(d / "s", channels=2)),
                                            "--out", str(d / "g.png")], "2 channels"),
    ("plot: unknown extension", lambda d: ["plot", *db(d), "--out", str(d / "grid.txt")],
     ".png, .pdf, .svg"),
    ("plot: --out an existing file", lambda d: ["plot", *db(d), "--out", str(a_file(d / "f"))],
     "is a file, not a folder"),
    ("plot: unknown format", lambda d: ["plot", *db(d), "--format", "txt"], "'txt'"),
    ("convert: source missing", lambda d: [*CONVERT, "mkdt", str(d / "no"), "--out",
                                           str(d / "o")], "does not exist"),
    ("convert: source a file", lambda d: [*CONVERT, "mkdt", str(a_file(d / "f")), "--out",
                                          str(d / "o")], "is not a directory"),
    ("convert: images a dict", lambda d: [
        *CONVERT, "mkdt", str(mkdt_files(d / "r", images_5000_pt={"a": 1})), "--out",
        str(d / "o")], "images_5000.pt' holds a dict"),
    ("convert: lr without a value", lambda d: [
        *CONVERT, "mkdt", str(mkdt_files(d / "r", synlr_5000_pt=torch.zeros(0))), "--out",
        str(d / "o")], "expected one number"),
    ("convert: labels of other rows", lambda d: [
        *CONVERT, "mkdt", str(mkdt_files(d / "r", labels_5000_pt=torch.zeros(3, 4))),
        "--out", str(d / "o")], "labels_5000.pt' holds targets of shape (3, 4)"),
    ("convert: integer images", lambda d: [
        *CONVERT, "mkdt", str(mkdt_files(d / "r", images_5000_pt=torch.zeros(
            5, 1, 8, 8, dtype=torch.uint8))), "--out", str(d / "o")], "torch.uint8"),
    ("convert: images of another data set", lambda d: [
        *CONVERT, "mkdt", str(mkdt_files(d / "r", images_5000_pt=torch.zeros(5, 3, 8, 8))),
        "--out", str(d / "o")], "3-channel images but 'digits' has 1"),
    ("convert: krrst without images", lambda d: [
        *CONVERT[:3], "krrst", str(reference(d / "r", y_syn_pt=torch.zeros(5, 4))), "--out",
        str(d / "o")], "neither x_syn.pt nor x_syn_final.pt"),
    ("convert: --out under a file", lambda d: [
        *CONVERT, "mkdt", str(mkdt_files(d / "r")), "--out", str(a_file(d / "f") / "o")],
     "is not a writable folder"),
    ("eval: a file, not a set", lambda d: [*EVAL, str(a_file(d / "f"))], "is not a directory"),
    ("eval: metadata without a source", lambda d: [
        *EVAL, str(broken_set(d / "s", "distilled.json", b'{"mean": [0.3]}'))],
     "has no 'source'"),
    ("eval: lr a list", lambda d: [*EVAL, str(broken_set(d / "s", "lr.pt", [0.1]))],
     "holds a list; expected one number"),
    ("eval: --out a folder", lambda d: [*EVAL, str(good_set(d / "s")), "--out",
                                        str(a_folder(d / "o"))], "is a directory"),
    ("run: --out a folder", lambda d: ["run", "--dry-run", "--out", str(a_folder(d / "o"))],
     "is a directory"),
    ("run: teacher checkpoint a folder", lambda d: [
        "run", "--dry-run", "--teacher-checkpoint", str(a_folder(d / "ck.pt"))], "is not a file"),
    ("run: teacher.checkpoint a folder", lambda d: [
        "run", "--dry-run", "--set", f"teacher.checkpoint='{a_folder(d / 'ck')}'"],
     "is not a file"),
    ("run: preset a folder", lambda d: ["run", "--dry-run", "--preset",
                                        str(a_folder(d / "p.toml"))], "is not a file"),
    ("run: preset section not a table", lambda d: [
        "run", "--dry-run", "--preset", str(a_file(d / "p.toml", "run = 3\n"))],
     "run = 3 must be a table"),
    ("run: preset not UTF-8", lambda d: [
        "run", "--dry-run", "--preset", str(a_file(d / "p.toml", b"\xff\xfe[run]"))],
     "cannot be read as UTF-8 text"),
    ("cache: cache a file", lambda d: ["cache", "verify", "--cache-dir", str(a_file(d / "f"))],
     "holds no artifacts"),
]


@pytest.mark.parametrize("case, build, expected", CASES, ids=[c[0] for c in CASES])
def test_one_line(tmp_path, monkeypatch, capsys, case, build, expected):
    monkeypatch.setenv("MKDT_BENCH_CACHE", str(tmp_path / "cache"))
    scratch = tmp_path / "in"
    scratch.mkdir()
    args = build(scratch)
    before = {p for p in tmp_path.rglob("*")}
    code = main(args)
    err = capsys.readouterr().err.strip()
    assert code == 2, (case, err)
    assert err.startswith("error: ") and "\n" not in err, err
    assert expected in err, (expected, err)
    assert {p for p in tmp_path.rglob("*")} - before <= {tmp_path / "cache"}, "left behind"


def test_a_teacher_checkpoint_path_with_quotes_and_a_backslash_is_found(tmp_path, capsys):
    """The path reaches the loader as it is (it used to be read as a TOML string)."""
    checkpoint = tmp_path / "we\\ird'na\"me.pt"
    torch.save({"x": torch.zeros(1)}, checkpoint)
    args = ["run", "--cache-dir", str(tmp_path / "c"), "--no-progress", "--executor",
            "inprocess", "--teacher-checkpoint", str(checkpoint), "--set",
            "teacher.arch=resnet18-teacher"]
    assert main([*args, "--dry-run"]) == 0
    assert f"checkpoint = {json.dumps(str(checkpoint))}" in capsys.readouterr().out
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: state dict does not fit resnet18") and "\n" not in err


def test_table_and_plot_open_the_database_read_only(tmp_path, monkeypatch, capsys):
    """``table`` and ``plot`` write nothing, so they work on read-only media: they never
    open the database for writing."""
    from mkdt_bench.results import ResultStore

    database = a_database(tmp_path / "r.sqlite")

    def refuse(*args, **kwargs):
        raise PermissionError(13, "read-only file system", str(database))

    monkeypatch.setattr(ResultStore, "__init__", refuse)
    assert main(["table", "--results-db", str(database)]) == 0
    assert "(no results)" in capsys.readouterr().out
    assert main(["plot", "--results-db", str(database), "--out", str(tmp_path / "p")]) == 2
    assert capsys.readouterr().err.startswith("error: no result rows in")


@pytest.mark.parametrize("command", [["list"], ["table"], ["run", "--dry-run"]])
def test_ctrl_c_while_the_modules_load_is_one_line(monkeypatch, capsys, command):
    """Ctrl-C in the first seconds (torch and the plug-ins importing while the parser is
    built) was a 40-line traceback; it is one line and exit 130, like a later Ctrl-C."""
    import mkdt_bench.cli as cli

    def interrupted() -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "build_parser", interrupted)
    assert main(command) == 130
    err = capsys.readouterr().err.strip()
    assert err == "interrupted before anything started"
