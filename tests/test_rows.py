"""Typed row records (mkdt_bench.rows): round trips, upgrades of version-1 rows, and hostile
JSON refused in one line."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mkdt_bench.errors import UserError
from mkdt_bench.rows import (
    SCHEMA_VERSION,
    ArtifactRef,
    Provenance,
    SizeFacts,
    Timings,
    set_images,
    source_images,
)

#: A method row's config as the planner and the evaluation stage wrote it before rows had a
#: schema (version 1): krrst without its later options, linear without labelled_mode, a
#: pre-training config without steps.
V1_ROW = {
    "dataset": "digits", "fingerprint": "f" * 16, "teacher": "t" * 16, "source_images": 1437,
    "method": "krrst", "method_options": {"outer_steps": 10}, "method_code": {"version": 1},
    "budget": 143, "train_pool": 0, "distill_seed": 0, "arch": "convnet",
    "pretrain": {"epochs": 20, "lr": 0.1, "use_learned_lr": True, "momentum": 0.9,
                 "weight_decay": 1e-4, "batch_size": 256},
    "teacher_config": {"kind": "ssl", "arch": "convnet", "epochs": 1},
    "artifacts": ["teacher/" + "t" * 16, "distilled/" + "d" * 16, "encoder/" + "e" * 16],
    "evaluator_options": {"steps": 100}, "evaluator_code": {"version": 1},
    "built_from": {"teacher/" + "t" * 16: 1.5},
}


def test_artifact_ref_round_trips_and_orders() -> None:
    ref = ArtifactRef.parse("encoder/0123abcd")
    assert ref == ArtifactRef("encoder", "0123abcd") and str(ref) == "encoder/0123abcd"
    assert ArtifactRef.parse(str(ref)) == ref
    assert sorted([ArtifactRef("teacher", "a"), ArtifactRef("encoder", "b")])[0].stage == \
        "encoder"


@pytest.mark.parametrize("text", ["encoder", "/key", "stage/", "a/b/c", "s/..", "s/.",
                                  "s/a\nb", 7, None, ["s/k"]])
def test_a_malformed_artifact_ref_is_one_line(text: object) -> None:
    with pytest.raises(UserError) as e:
        ArtifactRef.parse(text)
    assert "\n" not in str(e.value) and "stage/key" in str(e.value)


def test_a_current_row_round_trips_exactly() -> None:
    record = Provenance.from_json({**V1_ROW, "schema": SCHEMA_VERSION, "reference": "low",
                                   "row": "krrst[outer_steps=10]", "uses_labels": True})
    assert record.reference == "low" and record.row == "krrst[outer_steps=10]"
    assert record.artifacts[1] == ArtifactRef("distilled", "d" * 16)
    assert record.method_options == {"outer_steps": 10}  # a current row is not filled in
    again = Provenance.from_json(json.dumps(record.to_json()))
    assert again == record
    assert record.to_json() == {**V1_ROW, "schema": SCHEMA_VERSION, "reference": "low",
                                "row": "krrst[outer_steps=10]", "uses_labels": True}


def test_absent_fields_stay_absent_in_the_json() -> None:
    """A teacher row holds no method, no pre-training and no label mark: the JSON it stores
    has the keys it always had, plus the schema."""
    teacher = Provenance(dataset="digits", fingerprint="f", teacher="t", source_images=10,
                         teacher_config={"kind": "ssl"}, artifacts=(ArtifactRef("teacher", "t"),))
    assert teacher.to_json() == {"dataset": "digits", "fingerprint": "f", "teacher": "t",
                                 "source_images": 10, "teacher_config": {"kind": "ssl"},
                                 "artifacts": ["teacher/t"], "schema": SCHEMA_VERSION}
    assert teacher.artifact_names == ["teacher/t"]


def test_a_v1_row_is_upgraded_with_the_compatible_defaults() -> None:
    """Options added after a row was stored read as the value the row ran with."""
    from mkdt_bench.evaluators import EVALUATORS
    from mkdt_bench.methods import METHODS
    from mkdt_bench.pretraining import COMPATIBLE_DEFAULTS

    record = Provenance.from_json(json.dumps(V1_ROW), "krrst[outer_steps=10]", "linear")
    assert record.schema == SCHEMA_VERSION
    assert record.method_options == {**METHODS.get("krrst").compatible_defaults,
                                     "outer_steps": 10}
    assert "teacher_views" in record.method_options
    assert record.evaluator_options == {**EVALUATORS.get("linear").compatible_defaults,
                                        "steps": 100}
    assert record.pretrain == {**V1_ROW["pretrain"], **COMPATIBLE_DEFAULTS}
    assert record.reference == getattr(METHODS.get("krrst"), "reference", None)
    assert record.built_from == V1_ROW["built_from"]


def test_a_v1_row_of_an_unregistered_method_or_imported_set_keeps_its_options() -> None:
    gone = Provenance.from_json({**V1_ROW, "method": "retired-method"}, evaluator="gone")
    assert gone.method_options == {"outer_steps": 10} and gone.reference is None
    gone = Provenance.from_json(V1_ROW, "retired-method[x=1]", "gone")
    assert gone.method_options == {"outer_steps": 10} and gone.reference is None
    imported = Provenance.from_json({"dataset": "digits", "imported_from": "/sets/a",
                                     "files_sha256": {"images.pt": "0" * 64},
                                     "artifacts": ["distilled/k"], "ancient_field": 1})
    assert imported.imported_from == "/sets/a" and imported.method is None
    assert "ancient_field" not in imported.to_json()  # a v1 field nothing reads is dropped


@pytest.mark.parametrize("data", [
    "not json", "[1, 2]", '"text"', "[" * 100_000 + "]" * 100_000,
    {"budget": "ten"}, {"budget": True}, {"uses_labels": "yes"}, {"artifacts": "teacher/t"},
    {"artifacts": ["teacher"]}, {"artifacts": [3]}, {"built_from": {"a/b": "now"}},
    '{"built_from": {"a/b": NaN}}', {"files_sha256": {"a": 1}}, {"method_options": [1]},
    {"reference": "middle"}, {"schema": 99}, {"schema": "2"},
    {"schema": SCHEMA_VERSION, "surprise": 1},
])
def test_hostile_row_configs_are_refused_in_one_line(data: object) -> None:
    with pytest.raises(UserError) as e:
        Provenance.from_json(data, what="cell abc")  # type: ignore[arg-type]
    assert "\n" not in str(e.value)
    assert "cell abc" in str(e.value)


def test_timings_round_trip_and_refuse_bad_values() -> None:
    timings = Timings(teacher_s=1.5, pretrain_steps=30, set_images=143, evaluate_s=0.25)
    assert timings.to_json() == {"teacher_s": 1.5, "pretrain_steps": 30, "set_images": 143,
                                 "evaluate_s": 0.25}
    assert Timings.from_json(json.dumps(timings.to_json())) == timings
    assert Timings.from_json({"teacher_s": 1.0, "old": 2}, schema=1) == Timings(teacher_s=1.0)
    for bad in ({"teacher_s": "1"}, {"set_images": True}, '{"pretrain_s": Infinity}',
                {"old": 2}, "[]"):
        with pytest.raises(UserError) as e:
            Timings.from_json(bad)
        assert "\n" not in str(e.value)


_text = st.text(st.characters(codec="utf-8"), max_size=8)
_plain = st.dictionaries(_text, st.one_of(st.integers(), _text, st.booleans(), st.none()),
                         max_size=3)
_name = st.text("abcdef0123456789-_", min_size=1, max_size=8)


@settings(max_examples=60, deadline=None)
@given(st.builds(
    Provenance, dataset=_text, fingerprint=st.none() | _text, method=st.none() | _text,
    row=st.none() | _text, uses_labels=st.booleans(), method_options=st.none() | _plain,
    budget=st.none() | st.integers(0, 10**6), pretrain=st.none() | _plain,
    artifacts=st.lists(st.builds(ArtifactRef, _name, _name), max_size=3).map(tuple),
    built_from=st.none() | st.dictionaries(_text, st.floats(allow_nan=False,
                                                            allow_infinity=False)),
    reference=st.none() | st.sampled_from(["floor", "high", "low"])))
def test_any_current_provenance_round_trips_through_json_text(record: Provenance) -> None:
    assert Provenance.from_json(json.dumps(record.to_json())) == record


def _facts(method: str, budget: int, reference: str | None = None, set_size: int | None = None,
           **provenance: object) -> SizeFacts:
    return SizeFacts("digits", method, budget,
                     Provenance(dataset="digits", reference=reference, **provenance),
                     Timings(set_images=set_size))


def test_legacy_rows_get_their_source_and_set_sizes_from_the_rows_beside_them() -> None:
    """Rows from before sizes were recorded: the source is the pool, else the training set
    as the ``high`` row or a teacher on every image reports it; a set's size is 0 for the
    floor, the source for ``high``, what other rows of its set record, else the budget."""
    rows = [
        _facts("full", 99, "high", set_size=1437, teacher="t"),
        _facts("none", 99, "floor", set_size=5, teacher="t"),
        _facts("random", 143, "low", teacher="t"),
        _facts("random", 143, "low", set_size=140, teacher="t"),
        _facts("mkdt", 143, teacher="t", train_pool=1000),
        _facts("teacher", 1437, teacher_config={"train_images": 0}),
        _facts("krrst", 143, teacher="t", source_images=500),
        _facts("full", 99, "high", teacher="t"),
    ]
    sources = source_images(rows)
    assert sources == [1437.0, 1437.0, 1437.0, 1437.0, 1000.0, 1437.0, 500.0, 1437.0]
    assert set_images(rows, sources) == [1437, 0, 140, 140, 143, 1437, 143, 1437]
    unknown = [_facts("mkdt", 143, teacher="t")]
    assert source_images(unknown) == [None] and set_images(unknown, [None]) == [143]
