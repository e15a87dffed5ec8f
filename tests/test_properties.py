"""Property-based tests of what a user types (issue 29 §6): every parser and the config
builder turn any input into a value or one UserError line, never another exception, and
the values they accept read back as what was meant."""

from __future__ import annotations

import argparse
import copy
import json
import math
import string
import tomllib
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mkdt_bench.cli import common as cli
from mkdt_bench.config import (
    SECTIONS,
    build_config,
    parse_budget,
    parse_fraction,
    parse_override,
    validate,
)
from mkdt_bench.errors import UserError
from mkdt_bench.options import SEED_MAX, resolve_options
from mkdt_bench.pipeline.dryrun import render_config
from mkdt_bench.variants import canonical_label, parse_label, parse_value, split_methods

FEW = settings(max_examples=150, deadline=None, derandomize=True)
MANY = settings(max_examples=400, deadline=None, derandomize=True)

# Text a user might type: arbitrary characters, and the ones the parsers care about.
SYNTAX = "0123456789.-+_%eE ,[]={}\"'#\n\tabcdfilmnrstux"
texts = st.one_of(st.text(max_size=24),
                  st.text(alphabet=SYNTAX, max_size=24),
                  st.sampled_from(["nan", "inf", "-inf", "1e400", "0", "1" * 5000, "1e-320",
                                   "٣", "1_000", "100%", "0%", "nan%", "true", "1979-05-27"]))
scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.integers(-2, 2**70),
                    st.sampled_from([10**400, -10**400]), st.floats(), texts)
json_values = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=5), inner, max_size=3)),
    max_leaves=6)
words = st.text(alphabet=string.ascii_lowercase + "_", min_size=1, max_size=8)
spaces = st.sampled_from(["", " ", "  ", "\t"])


def one_line_error(call, *args: Any) -> Any:
    """``call(*args)``, or None where it raised a UserError of one line."""
    try:
        return call(*args)
    except UserError as e:
        assert str(e) and "\n" not in str(e), repr(str(e))
        return None


def same(a: Any, b: Any) -> bool:
    """Equality that takes NaN as equal to itself (``--set x=nan`` reads back as NaN)."""
    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


def toml_text(value: Any) -> str:
    """``value`` spelled as a TOML literal."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, list):
        return "[" + ", ".join(map(toml_text, value)) + "]"
    return json.dumps(value, ensure_ascii=False)


toml_values = st.one_of(
    st.booleans(), st.integers(-2**63, 2**63 - 1), st.floats(allow_nan=False),
    st.text(st.characters(blacklist_categories=("Cc", "Cs")), max_size=10),
    st.lists(st.integers(-1000, 1000), max_size=3))


# -- budgets and fractions -------------------------------------------------------------------

@MANY
@given(scalars)
def test_any_budget_is_a_count_a_fraction_or_one_line(budget):
    parsed = one_line_error(parse_budget, budget)
    if parsed is not None:
        kind, value = parsed
        assert (kind == "count" and type(value) is int and value > 0) or (
            kind == "fraction" and 0 < value <= 1)


@FEW
@given(st.integers(1, 10**30), spaces)
def test_counts_read_back(count, space):
    assert parse_budget(count) == parse_budget(f"{space}{count}{space}") == ("count", count)


@FEW
@given(st.floats(1e-9, 100), spaces)
def test_percentages_read_back(percent, space):
    for text in (f"{percent!r}%", f"{space}{percent!r}{space}%{space}"):
        kind, value = parse_budget(text)
        assert kind == "fraction" and math.isclose(value, percent / 100, rel_tol=1e-12)
        assert math.isclose(parse_fraction(text), percent / 100, rel_tol=1e-12)


@FEW
@given(st.one_of(st.floats(max_value=0), st.floats(min_value=1, exclude_min=True),
                 st.integers(max_value=0), st.booleans()))
def test_out_of_range_budgets_and_fractions_are_refused(number):
    with pytest.raises(UserError):
        parse_fraction(number)
    with pytest.raises(UserError):
        parse_budget(f"{number * 100}%" if isinstance(number, float) else number)


def test_numbers_too_long_to_print_are_refused_in_one_line():
    for parse in (parse_fraction, parse_budget):
        with pytest.raises(UserError, match="over 4000 digits"):
            parse(-10**5000)


@MANY
@given(scalars)
def test_any_fraction_is_in_0_1_or_one_line(value):
    number = one_line_error(parse_fraction, value)
    if number is not None:
        assert isinstance(number, float) and 0 < number <= 1


@FEW
@given(st.floats(0, 1, exclude_min=True))
def test_fractions_read_back(fraction):
    assert parse_fraction(fraction) == parse_fraction(repr(fraction)) == fraction


# -- --set ----------------------------------------------------------------------------------

@MANY
@given(st.one_of(texts, st.builds("{}.{}={}".format, st.sampled_from(SECTIONS), texts, texts)))
def test_any_override_is_a_path_and_plain_value_or_one_line(text):
    parsed = one_line_error(parse_override, text)
    if parsed is not None:
        path, value = parsed
        assert path[0] in SECTIONS and len(path) >= 2
        assert all(part and part == part.strip() for part in path)
        json.dumps(value)  # plain data (no dates), as manifests store it


@MANY
@given(st.sampled_from(SECTIONS), st.lists(words, min_size=1, max_size=3), toml_values,
       spaces, spaces)
def test_overrides_read_back(section, keys, value, before, after):
    text = f"{section}.{'.'.join(keys)}{before}={after}{toml_text(value)}{before}"
    path, parsed = parse_override(text)
    assert path == [section, *keys]
    assert parsed == value and type(parsed) is type(value)


@pytest.mark.parametrize("raw, expected", [
    ("1\nx = 2", "1\nx = 2"),  # two TOML keys: text, not the first one's value
    ("1" * 5000, "1" * 5000),  # too long for int(): text, not a ValueError
    ("2024-01-01", "2024-01-01"),  # a TOML date: the folder name as typed
    ("[1, 2]", [1, 2]), ("1e3", 1000.0), ("convnet:width=16", "convnet:width=16"),
])
def test_values_are_one_literal_or_their_text(raw, expected):
    assert parse_value(raw) == expected
    assert parse_override(f"teacher.x={raw}") == (["teacher", "x"], expected)


@FEW
@given(texts)
def test_cli_set_is_passed_on_or_refused_in_one_line(text):
    try:
        assert cli.override(text) == text and "=" in text
    except argparse.ArgumentTypeError as e:
        assert "=" not in text and "\n" not in str(e).replace(text, "")


# -- --seeds, --fractions, --methods --------------------------------------------------------

@FEW
@given(st.lists(st.integers(0, 2**70), max_size=5), spaces)
def test_seed_lists_read_back(seeds, space):
    assert cli.csv_list(int)(f",{space}".join(map(str, seeds))) == seeds


@MANY
@given(texts)
def test_any_seed_text_is_a_list_of_ints_or_refused(text):
    try:
        seeds = cli.csv_list(int)(text)
    except argparse.ArgumentTypeError:
        return
    assert all(type(s) is int for s in seeds)


@FEW
@given(st.lists(st.floats(0, 1, exclude_min=True), max_size=5), st.booleans())
def test_fraction_lists_read_back(fractions, as_percent):
    text = ",".join(f"{f * 100!r}%" if as_percent else repr(f) for f in fractions)
    parsed = cli.fractions(text)
    assert len(parsed) == len(fractions)
    assert all(math.isclose(p, f, rel_tol=1e-12) for p, f in zip(parsed, fractions))


@MANY
@given(texts)
def test_any_fraction_text_is_a_list_or_refused(text):
    try:
        fractions = cli.fractions(text)
    except argparse.ArgumentTypeError as e:
        assert "\n" not in str(e).replace(repr(text), "")
        return
    assert all(0 < f <= 1 for f in fractions)


# -- method labels and variants --------------------------------------------------------------

plain_values = st.one_of(
    st.integers(-10**6, 10**6), st.booleans(), st.floats(allow_nan=False, allow_infinity=False),
    st.one_of(words, st.text(alphabet=string.ascii_letters + " .:-", min_size=1, max_size=8))
    .filter(lambda s: s.strip() == s and parse_value(s) == s))


@st.composite
def labels(draw) -> tuple[str, str, dict[str, Any]]:
    """(label with spaces anywhere around its parts, the same without them, its options)."""
    name = draw(st.sampled_from(["mkdt", "random", "krrst", "import:/data/x y", "my-method"]))
    options = draw(st.dictionaries(words, plain_values, max_size=3))
    if not options:
        return f"{draw(spaces)}{name}{draw(spaces)}", name, options
    items = [(k, v if isinstance(v, str) else toml_text(v)) for k, v in options.items()]
    spaced = ",".join(f"{draw(spaces)}{k}{draw(spaces)}={draw(spaces)}{v}{draw(spaces)}"
                      for k, v in items)
    return (f"{draw(spaces)}{name}{draw(spaces)}[{spaced}]{draw(spaces)}",
            f"{name}[{','.join(f'{k}={v}' for k, v in items)}]", options)


@MANY
@given(labels())
def test_labels_read_back_and_canonical_drops_only_the_spaces_around(case):
    label, canonical, options = case
    name = canonical.partition("[")[0]
    assert parse_label(label) == parse_label(canonical) == (name, options)
    assert canonical_label(label) == canonical_label(canonical) == canonical


@MANY
@given(st.one_of(texts, labels().map(lambda case: case[0]), json_values))
def test_canonical_label_is_idempotent_and_means_the_same(label):
    parsed = one_line_error(parse_label, label)
    if parsed is None:
        with pytest.raises(UserError):
            canonical_label(label)
        return
    canonical = canonical_label(label)
    assert canonical_label(canonical) == canonical
    assert same(parse_label(canonical), parsed)
    json.dumps(parsed[1])


def test_spaces_inside_a_value_are_part_of_it():
    assert parse_label("mkdt[iterations=1 0]") == ("mkdt", {"iterations": "1 0"})
    assert canonical_label("mkdt[ iterations = 1 0 ]") == "mkdt[iterations=1 0]"
    assert canonical_label("mkdt[init=ran dom]") != "mkdt[init=random]"
    assert parse_label("mkdt[iterations=1\nfoo=2]") == ("mkdt", {"iterations": "1\nfoo=2"})


@MANY
@given(st.lists(labels().map(lambda case: case[0]), max_size=4), spaces)
def test_method_lists_read_back(items, space):
    text = f",{space}".join(items)
    assert split_methods(text) == [item.strip() for item in items if item.strip()]


@MANY
@given(texts)
def test_any_method_list_is_balanced_labels_or_one_line(text):
    try:
        items = cli.method_labels(text)
    except argparse.ArgumentTypeError as e:
        assert "unbalanced brackets" in str(e)
        return
    for item in items:
        depth = 0
        for char in item:
            depth += {"[": 1, "]": -1}.get(char, 0)
            assert depth >= 0
        assert depth == 0 and item == item.strip() and item


# -- options and whole configs -----------------------------------------------------------------

defaults = st.sampled_from([0, 7, 0.5, True, False, "", "convnet", [], [0, 1], None])


@MANY
@given(json_values, defaults)
def test_any_option_value_takes_the_defaults_type_or_one_line(value, default):
    resolved = one_line_error(resolve_options, "section", {"key": value}, {"key": default})
    if resolved is not None and default is not None and value is not None:  # None: unset
        assert type(resolved["key"]) is type(default)


method_labels = st.one_of(
    st.sampled_from(["random", "none", "mkdt", "mkdt[init=random]", " mkdt[ iterations = 0 ] ",
                     "mkdt[iterations=1 0]", "random[x=1]", "nosuch", "", "krrst", "dm_ssl"]),
    texts)
list_items = st.one_of(st.sampled_from(["convnet", "linear", "digits", "knn", "cpu"]), scalars)
flags = st.fixed_dictionaries({}, optional={
    "methods": st.lists(method_labels, max_size=3),
    "seeds": st.lists(st.one_of(st.integers(-3, 5), st.integers(0, 2**70), scalars),
                      max_size=3),
    "fractions": st.lists(st.one_of(st.sampled_from([0.01, "5%", 1]), scalars), max_size=3),
    "budget": st.one_of(st.sampled_from(["10%", "100", "12.3456789%"]), scalars),
    "archs": st.lists(list_items, max_size=2),
    "tasks": st.lists(list_items, max_size=2),
    "evaluators": st.lists(list_items, max_size=2),
    "device": st.one_of(st.sampled_from(["cpu", "auto", "cuda:7"]), scalars),
    "dataset": st.one_of(st.sampled_from(["digits", "imagefolder:/nonexistent"]), scalars),
})
override_keys = st.sampled_from([
    "teacher.epochs", "teacher.lr", "teacher.arch", "pretrain.epochs", "pretrain.lr",
    "run.seeds", "run.budget", "run.train_pool", "run.methods", "run.archs", "run.tasks",
    "run.fractions", "run.data_root", "methods.mkdt.iterations", "methods.mkdt.init",
    "methods.random", "evaluators.linear.epochs", "evaluators.linear", "run.seeds.x"])
overrides = st.lists(st.one_of(
    st.builds("{}={}".format, override_keys, st.one_of(texts, toml_values.map(toml_text))),
    texts), max_size=3)


@settings(max_examples=300, deadline=None, derandomize=True)
@given(st.sampled_from([None, "quick"]), flags, overrides)
def test_any_flags_and_overrides_give_a_valid_config_or_one_line(preset, given_flags, sets):
    config = one_line_error(build_config, preset, copy.deepcopy(given_flags), sets)
    if config is None:
        return
    cfg = config.to_dict()
    run = cfg["run"]
    assert run["seeds"] and len(set(run["seeds"])) == len(run["seeds"])
    assert all(type(s) is int and 0 <= s <= SEED_MAX for s in run["seeds"])
    assert run["fractions"] and all(0 < f <= 1 for f in run["fractions"])
    assert len(set(run["fractions"])) == len(run["fractions"])
    assert len(set(run["methods"])) == len(run["methods"])
    assert all(canonical_label(m) == m for m in run["methods"])
    kind, value = parse_budget(run["budget"])
    if given_flags.get("budget") is not None and not any("budget" in s for s in sets):
        want_kind, want = parse_budget(given_flags["budget"])
        assert kind == want_kind and math.isclose(value, want, rel_tol=1e-12)
    json.dumps(cfg)  # plain data, as manifests store it
    # --dry-run's printout, less the variants' sections, reads back as the same config
    printed = tomllib.loads(render_config(cfg))
    for label in run["methods"]:
        if "[" in label:
            del printed["methods"][label]
    assert same(validate(printed), cfg)


@pytest.mark.parametrize("given_flags, sets", [
    ({"seeds": [0, 0]}, []),
    ({"seeds": [2**70]}, []),
    ({"seeds": [-1]}, []),
    ({}, ["run.seeds=[1, 1]"]),
    ({}, ["run.archs=[1]"]),
    ({}, ["run.methods=[1]"]),
    ({}, ["run.tasks=[{a=1}]"]),
    ({"methods": ["mkdt[in it=random]"]}, []),
    ({}, ["teacher.lr=1" + "0" * 400]),
    ({}, ["teacher.epochs=1\nteacher.lr = 5"]),
])
def test_configs_found_wrong_are_refused(given_flags, sets):
    with pytest.raises(UserError):
        build_config(None, given_flags, sets)
