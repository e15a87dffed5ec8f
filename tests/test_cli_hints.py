"""Small command-line fixes: hints for near-miss input, ``--version``, percentages where the
tables print them, and nothing written for a refused data folder."""

from __future__ import annotations

import pytest

from mkdt_bench import __version__
from mkdt_bench.cli import build_parser, main
from mkdt_bench.config import build_config
from mkdt_bench.errors import UserError


def error_of(capsys, *argv: str) -> str:
    """The stderr of ``mkdt-bench ARGV`` that is refused, checked to be one line."""
    try:
        code = main(list(argv))
    except SystemExit as e:  # argparse's refusals
        code = e.code
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and err.startswith("error: "), err
    return err


def test_unknown_option_names_the_close_one(capsys):
    err = error_of(capsys, "run", "--set", "teacher.epoch=5", "--no-progress")
    assert "unknown option 'epoch' (did you mean 'epochs'?)" in err


def test_unknown_method_in_another_case_names_the_registered_one(capsys):
    err = error_of(capsys, "run", "--methods", "MKDT", "--no-progress")
    assert "unknown method 'MKDT' (did you mean 'mkdt'?)" in err


def test_set_with_a_space_asks_for_key_equals_value(capsys):
    err = error_of(capsys, "run", "--set", "teacher.epochs", "5")
    assert "SECTION.KEY=VALUE" in err and "--set teacher.epochs=VALUE" in err


def test_fractions_as_percentages():
    args = build_parser().parse_args(["run", "--fractions", "1%,5%"])
    assert args.fractions == [0.01, 0.05]
    assert build_parser().parse_args(["run", "--fractions", "0.01, 5%"]).fractions == [0.01, 0.05]
    cfg = build_config(overrides=['run.fractions=["1%", 0.05]']).to_dict()
    assert cfg["run"]["fractions"] == [0.01, 0.05]
    with pytest.raises(UserError, match="150%"):
        build_config(overrides=['run.fractions=["150%"]'])


def test_a_folder_given_as_dataset_suggests_imagefolder(capsys, tmp_path):
    err = error_of(capsys, "run", "--dataset", str(tmp_path), "--no-progress")
    assert f"imagefolder:{tmp_path}" in err
    err = error_of(capsys, "run", "--dataset", "nosuch", "--no-progress")
    assert "imagefolder" not in err.split(";")[0]  # a plain name gets the usual list


def test_version(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0 and capsys.readouterr().out.strip() == f"mkdt-bench {__version__}"


def test_budget_text_is_normalised():
    assert build_config(flags={"budget": "2 %"}).to_dict()["run"]["budget"] == "2%"
    assert build_config(flags={"budget": " 143 "}).to_dict()["run"]["budget"] == "143"


def test_refused_image_folder_writes_nothing(capsys, tmp_path):
    cache = tmp_path / "cache"
    err = error_of(capsys, "run", "--dataset", f"imagefolder:{tmp_path / 'nowhere'}",
                   "--cache-dir", str(cache), "--no-progress")
    assert "nowhere" in err
    assert not cache.exists()  # no results.sqlite, no artifacts/
