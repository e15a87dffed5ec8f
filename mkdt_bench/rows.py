"""Typed records of what a result row says about itself: where its artifacts are
(:class:`ArtifactRef`), how it was made (:class:`Provenance`, the row's ``config`` JSON) and
what it cost (:class:`Timings`, its ``timings`` JSON).

A row records :data:`SCHEMA_VERSION`; rows without it are version 1 (written before it was
recorded). :meth:`Provenance.from_json` is the one place that reads and upgrades older rows,
and it checks every field of what it reads (a database or spill file is untrusted data): a
malformed row is one :class:`~mkdt_bench.errors.UserError` line. Cross-row fill-ins for
version-1 rows that recorded no sizes are :func:`source_images` and :func:`set_images`.

Plain data only: no torch, no pandas; the registries are asked (lazily) only when a
version-1 row is upgraded.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any

from mkdt_bench.errors import UserError
from mkdt_bench.variants import split_variant

if TYPE_CHECKING:
    from mkdt_bench.registry import Registry

#: Version of the row records. 1: rows without a version (options without the compatible
#: defaults added since, no ``reference``); 2: ``schema`` and ``reference`` recorded.
SCHEMA_VERSION = 2

#: What a reference row is (``Method.reference``): the floor (``none``, no pre-training
#: set), the high mark (``full``, every training image) or the low mark (``random``).
REFERENCES = ("floor", "high", "low")

JSON = dict[str, Any]


def _short(value: object, limit: int = 60) -> str:
    try:
        text = repr(value)
    except ValueError:  # an integer too long to print
        return "(an integer of over 4000 digits)"
    return text if len(text) <= limit else f"{text[:limit - 3]}..."


@dataclass(frozen=True, order=True)
class ArtifactRef:
    """One artifact of the cache, ``stage/key`` as manifests and rows spell it."""

    stage: str
    key: str

    def __post_init__(self) -> None:
        for part in (self.stage, self.key):
            if not isinstance(part, str) or part in ("", ".", "..") or \
                    any(c in part for c in "/\\\0\n"):
                raise UserError(f"artifact reference {_short(f'{self.stage}/{self.key}')} "
                                "must look like stage/key, each a non-empty name without "
                                "slashes")

    def __str__(self) -> str:
        return f"{self.stage}/{self.key}"

    @classmethod
    def parse(cls, text: object) -> ArtifactRef:
        """``"encoder/0123abcd"`` -> ``ArtifactRef("encoder", "0123abcd")``."""
        if not isinstance(text, str) or "/" not in text:
            raise UserError(f"artifact reference {_short(text)} must look like stage/key "
                            "(e.g. encoder/0123abcd)")
        stage, key = text.split("/", 1)
        return cls(stage, key)


def _load(data: str | Mapping[str, Any], what: str) -> dict[str, Any]:
    """A JSON object from text or a mapping; a UserError otherwise."""
    if isinstance(data, str):
        try:
            data = json.loads(data) if data else {}
        except (ValueError, RecursionError):
            raise UserError(f"{what} is not valid JSON") from None
    if not isinstance(data, Mapping):
        raise UserError(f"{what} {_short(data)} must be a JSON object")
    return dict(data)


def _finite(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and \
        math.isfinite(value)


def _is(value: object, kind: str) -> bool:
    """Whether ``value`` is of ``kind``: text, int, number (finite), bool, object, list,
    stamps (an object of finite numbers) or digests (an object of text)."""
    if kind == "text":
        return isinstance(value, str)
    if kind == "int":
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == "number":
        return _finite(value)
    if kind == "bool":
        return isinstance(value, bool)
    if kind == "list":
        return isinstance(value, list)
    if not isinstance(value, dict):
        return False
    if kind == "stamps":
        return all(_finite(v) for v in value.values())
    return kind == "object" or all(isinstance(v, str) for v in value.values())


def _check(what: str, key: str, value: object, kind: str) -> None:
    """Refuse ``value`` unless it is of ``kind`` (see :func:`_is`)."""
    if not _is(value, kind):
        raise UserError(f"{what}: {key}={_short(value)} must be {kind}")


@dataclass(frozen=True)
class Provenance:
    """How a result row was made (its ``config`` column). Absent fields are ``None`` (a
    teacher row has no method, an imported set no teacher) and are left out of the JSON.

    ``teacher``: the teacher's cache key; ``row``: a variant's label
    (``mkdt[init=random]``); ``source_images``: the images methods distil from;
    ``artifacts``: what the row was computed from, inputs first; ``built_from``: their
    ``created`` stamps when the row was written; ``imported_from``/``files_sha256``/
    ``set_method``: an imported set (``mkdt-bench eval``); ``reference``: the method's
    :data:`REFERENCES` role.
    """

    dataset: str = ""
    fingerprint: str | None = None
    teacher: str | None = None
    source_images: int | None = None
    method: str | None = None
    row: str | None = None
    uses_labels: bool = False
    method_options: JSON | None = None
    method_code: JSON | None = None
    budget: int | None = None
    train_pool: int | None = None
    distill_seed: int | None = None
    arch: str | None = None
    pretrain: JSON | None = None
    teacher_config: JSON | None = None
    artifacts: tuple[ArtifactRef, ...] = ()
    imported_from: str | None = None
    files_sha256: dict[str, str] | None = None
    set_method: str | None = None
    evaluator_options: JSON | None = None
    evaluator_code: JSON | None = None
    built_from: dict[str, float] | None = None
    reference: str | None = None
    schema: int = SCHEMA_VERSION

    def __post_init__(self) -> None:
        if self.reference is not None and self.reference not in REFERENCES:
            raise UserError(f"reference {_short(self.reference)} must be one of "
                            f"{', '.join(REFERENCES)} or none")

    def to_json(self) -> JSON:
        """The JSON object a row stores: set fields only (``uses_labels`` when true)."""
        out: JSON = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if value is None or (f.name in ("uses_labels", "artifacts") and not value):
                continue
            out[f.name] = [str(a) for a in value] if f.name == "artifacts" else value
        return out

    @property
    def artifact_names(self) -> list[str]:
        """``["stage/key", ...]`` of :attr:`artifacts` (what ``built_from`` is keyed by)."""
        return [str(a) for a in self.artifacts]

    @classmethod
    def from_json(cls, data: str | Mapping[str, Any], label: str = "", evaluator: str = "",
                  what: str = "row config") -> Provenance:
        """The record of a stored ``config`` (JSON text or object), upgraded to
        :data:`SCHEMA_VERSION` when older: a version-1 row's method, evaluator and
        pre-training options get the compatible defaults of options added since (the value
        it ran with), and its ``reference`` is filled in. ``label`` and ``evaluator``: the
        row's ``method`` and ``evaluator`` columns (the registered names the options are
        looked up by). Any malformed field is one UserError line naming ``what``."""
        raw = _load(data, what)
        schema = raw.pop("schema", 1)
        _check(what, "schema", schema, "int")
        if not 1 <= schema <= SCHEMA_VERSION:
            raise UserError(f"{what}: schema {schema} is not one this mkdt-bench reads (1 to "
                            f"{SCHEMA_VERSION}); a newer mkdt-bench wrote it")
        known = {f.name: f for f in fields(cls)}
        unknown = sorted(k for k in raw if k not in known)
        if unknown and schema == SCHEMA_VERSION:
            raise UserError(f"{what}: unknown field {_short(unknown[0])}")
        values: dict[str, Any] = {}
        for key, value in raw.items():
            if key not in known:
                continue  # an older row's field that nothing reads any more
            _check(what, key, value, _KINDS[key])
            values[key] = value
        try:
            values["artifacts"] = tuple(ArtifactRef.parse(a) for a in values.get("artifacts", []))
        except (TypeError, UserError) as e:
            raise UserError(f"{what}: artifacts: {e}") from None
        try:
            record = cls(**values, schema=schema)
        except UserError as e:
            raise UserError(f"{what}: {e}") from None
        if schema == SCHEMA_VERSION:
            return record
        return _upgrade(record, split_variant(label)[0] if label else record.method, evaluator)


_KINDS: dict[str, str] = {
    "dataset": "text", "fingerprint": "text", "teacher": "text", "source_images": "int",
    "method": "text", "row": "text", "uses_labels": "bool", "method_options": "object",
    "method_code": "object", "budget": "int", "train_pool": "int", "distill_seed": "int",
    "arch": "text", "pretrain": "object", "teacher_config": "object", "artifacts": "list",
    "imported_from": "text", "files_sha256": "digests", "set_method": "text",
    "evaluator_options": "object", "evaluator_code": "object", "built_from": "stamps",
    "reference": "text",
}


def _registered(section: str, name: str | None) -> type | None:
    """The class registered as ``name`` among the methods or evaluators (None for a name
    made by a prefix such as ``import:DIR``, or no longer registered)."""
    if not name or ":" in name:
        return None
    from mkdt_bench.evaluators import EVALUATORS
    from mkdt_bench.methods import METHODS

    registry: Registry[Any] = METHODS if section == "methods" else EVALUATORS
    return registry.get(name) if name in registry else None


def _upgrade(record: Provenance, method_name: str | None, evaluator: str) -> Provenance:
    """A version-1 record as a current one (see :meth:`Provenance.from_json`)."""
    from mkdt_bench.pretraining import COMPATIBLE_DEFAULTS as PRETRAIN_COMPATIBLE

    method = _registered("methods", method_name)
    scorer = _registered("evaluators", evaluator)
    changes: dict[str, Any] = {"schema": SCHEMA_VERSION,
                               "reference": getattr(method, "reference", None)}
    for name, defaults in (("method_options", getattr(method, "compatible_defaults", {})),
                           ("evaluator_options", getattr(scorer, "compatible_defaults", {})),
                           ("pretrain", PRETRAIN_COMPATIBLE)):
        value = getattr(record, name)
        if value is not None:
            changes[name] = {**defaults, **value}
    return _replace(record, changes)


def _replace(record: Provenance, changes: Mapping[str, Any]) -> Provenance:
    values = {f.name: getattr(record, f.name) for f in fields(record)}
    return Provenance(**{**values, **changes})


@dataclass(frozen=True)
class Timings:
    """What a row's encoder cost (its ``timings`` column): seconds and peak memory (MiB:
    the GPU's on a GPU, else the resident set) of the teacher (with its representations),
    a method's sub-units, the distillation and the pre-training, each counted in full for
    every row that needs it; the pre-training's steps, the set's size on disk and in
    images, and the seconds of the row's own evaluation."""

    teacher_s: float | None = None
    teacher_peak_mib: float | None = None
    substages_s: float | None = None
    substages_peak_mib: float | None = None
    distill_s: float | None = None
    distill_peak_mib: float | None = None
    pretrain_s: float | None = None
    pretrain_peak_mib: float | None = None
    pretrain_steps: float | None = None
    storage_bytes: float | None = None
    set_images: float | None = None
    evaluate_s: float | None = None

    def to_json(self) -> JSON:
        """The JSON object a row stores: set fields only."""
        return {f.name: getattr(self, f.name) for f in fields(self)
                if getattr(self, f.name) is not None}

    @classmethod
    def from_json(cls, data: str | Mapping[str, Any], schema: int = SCHEMA_VERSION,
                  what: str = "row timings") -> Timings:
        """The record of a stored ``timings`` (JSON text or object): finite numbers; an
        unknown field is refused in a current row and left out of an
        older one (``schema``: the version of its :class:`Provenance`)."""
        raw = _load(data, what)
        known = {f.name for f in fields(cls)}
        values: dict[str, Any] = {}
        for key, value in sorted(raw.items()):
            if key not in known:
                if schema == SCHEMA_VERSION:
                    raise UserError(f"{what}: unknown field {_short(key)}")
                continue
            _check(what, key, value, "number")
            values[key] = value
        return cls(**values)


def parse_row(config: str | Mapping[str, Any], timings: str | Mapping[str, Any],
              label: str = "", evaluator: str = "",
              what: str = "row") -> tuple[Provenance, Timings]:
    """The records of a stored row's ``config`` and ``timings`` (JSON text or objects),
    upgraded to :data:`SCHEMA_VERSION` (see :meth:`Provenance.from_json`; ``label`` and
    ``evaluator``: the row's ``method`` and ``evaluator`` columns)."""
    raw = _load(config, f"{what}: config")
    schema = raw.get("schema", 1)
    provenance = Provenance.from_json(raw, label, evaluator, f"{what}: config")
    return provenance, Timings.from_json(timings, schema if isinstance(schema, int) else 1,
                                         f"{what}: timings")


@dataclass(frozen=True)
class SizeFacts:
    """What the size fill-ins read of one stored row: its columns ``dataset``, ``method``
    (the row label) and ``budget``, and its records."""

    dataset: str
    method: str
    budget: int
    provenance: Provenance
    timings: Timings


#: The label of the teacher's row (:data:`mkdt_bench.results.TEACHER_ROW`).
_TEACHER_ROW = "teacher"


def source_images(rows: Sequence[SizeFacts]) -> list[float | None]:
    """Images the methods distilled from, per row (None where unknown): recorded since the
    budget percentage is shown; for older rows their ``train_pool``, else the size of the
    whole training set, as a ``high`` reference row without a pool or a teacher on every
    training image reports it for the same data set."""
    whole: dict[str, float] = {}
    for r in rows:
        p = r.provenance
        if p.reference == "high" and not p.train_pool and r.timings.set_images is not None:
            whole.setdefault(r.dataset, float(r.timings.set_images))
        if r.method == _TEACHER_ROW and not (p.teacher_config or {}).get("train_images"):
            whole.setdefault(r.dataset, float(r.budget))
    out: list[float | None] = []
    for r in rows:
        p = r.provenance
        recorded = p.source_images or (p.train_pool if p.train_pool and p.train_pool > 0
                                       else None)
        out.append(float(recorded) if recorded else whole.get(r.dataset))
    return out


def set_images(rows: Sequence[SizeFacts], sources: Sequence[float | None]) -> list[int]:
    """Images of each row's pre-training set: recorded in its timings, else 0 for the
    ``floor``, the teacher's training images for the teacher, the source for ``high``, the
    size other rows of its set (label, budget, data set, teacher) record, and the budget as
    the last resort (``sources``: :func:`source_images`)."""
    out: list[float | None] = []
    for r, source in zip(rows, sources, strict=True):
        value: float | None = r.timings.set_images
        if r.provenance.reference == "floor":
            value = 0
        if r.method == _TEACHER_ROW:
            value = r.budget
        if value is None and r.provenance.reference == "high":
            value = source
        out.append(value)
    largest: dict[tuple[str, int, str, str], float] = {}
    for r, value in zip(rows, out, strict=True):
        if value is not None:
            group = (r.method, r.budget, r.dataset, r.provenance.teacher or "")
            largest[group] = max(largest.get(group, value), value)
    return [int(value if value is not None else largest.get(
        (r.method, r.budget, r.dataset, r.provenance.teacher or ""), r.budget))
        for r, value in zip(rows, out, strict=True)]


__all__ = ["REFERENCES", "SCHEMA_VERSION", "ArtifactRef", "Provenance", "SizeFacts",
           "Timings", "parse_row", "set_images", "source_images"]
