"""What the artifact cache holds for the results database: the stored set a method made
(:func:`find_stored_set`, for ``show``) and the artifacts no result row uses any more
(:func:`unused_artifacts`, for ``cache prune``). Above :mod:`mkdt_bench.methods`: a set's
method says whether its seed names it."""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mkdt_bench.cache import ArtifactCache, CorruptManifest, read_manifest
from mkdt_bench.errors import UserError
from mkdt_bench.methods import METHODS
from mkdt_bench.results import ResultStore
from mkdt_bench.variants import parse_label


def find_stored_set(cache_dir: str | Path, label: str, seed: int | None,
                    budget: int | None) -> tuple[Path, dict[str, Any]]:
    """The directory and manifest of the one distilled set in the cache made by ``label``
    (a method or variant, ``mkdt[init=random]``; a plain name prefers the set at the
    method's defaults over its variants) with ``seed`` (ignored for unseeded methods) and
    ``budget``; a UserError lists the candidates when none or several match. A corrupt
    set (:meth:`ArtifactCache.verify`) is left out with a warning."""
    name, options = parse_label(label)
    cls = METHODS.get(name) if not name.startswith("import:") and name in METHODS else None
    seeded = cls is not None and cls.seeded
    # a set's manifest holds the options that name it (Method.key_options): the engine
    # options are left out, and so are those at their compatible value
    compatible = cls.compatible_defaults if cls is not None else {}
    options = {k: v for k, v in options.items() if cls is None or k not in cls.engine_options}
    cache = ArtifactCache(cache_dir, create=False)
    stored = []
    for stage, key in cache.artifacts():
        if stage != "distilled":
            continue
        try:
            manifest = cache.manifest(stage, key).to_json()
        except CorruptManifest:
            manifest = {}
        config = manifest.get("config", {})
        if "options" in config:
            config = {**config, "options": {**compatible, **config["options"]}}
        if manifest and (config.get("method", manifest.get("method")) != name or any(
                config.get("options", {}).get(k) != v for k, v in options.items())):
            continue
        bad = cache.verify(stage, key)
        if bad:
            warnings.warn(f"corrupt stored set {cache.path(stage, key)} ({', '.join(bad)}) "
                          "left out; the next run that needs it computes it again",
                          stacklevel=2)
            continue
        stored.append((cache.path(stage, key), manifest, config))
    if not stored:
        raise UserError(f"no set of {label!r} is stored in {str(cache_dir)!r}; run a grid "
                        "with it first (or give the set's directory)")

    def describe(config: dict[str, Any]) -> str:
        return f"budget {config.get('budget', '?')}, seed {config.get('seed', '?')}"

    matching = [s for s in stored
                if (seed is None or not seeded or s[2].get("seed") == seed)
                and (budget is None or s[2].get("budget") == budget)]
    if not matching:
        have = "; ".join(sorted({describe(c) for *_, c in stored}))
        raise UserError(f"no set of {label!r} with seed {seed}"
                        f"{f' and budget {budget}' if budget is not None else ''} is stored; "
                        f"stored: {have}")
    differing = sorted({k for *_, c in matching for k in c.get("options", {})
                        if len({json.dumps(m[2].get("options", {}).get(k))
                                for m in matching}) > 1})
    if len(matching) > 1 and not options and name in METHODS:
        # the plain name is the row without a variant: the method's defaults where they differ
        defaults = METHODS.get(name).defaults
        plain = [m for m in matching
                 if all(m[2].get("options", {}).get(k) == defaults.get(k) for k in differing)]
        matching = plain if len(plain) == 1 else matching
    if len(matching) > 1:
        choices = sorted({describe(c) for *_, c in matching})
        hint = ("; they differ in " + ", ".join(differing) + ": name the variant, e.g. "
                f"--method {name}[{differing[0]}=...]") if differing else ""
        raise UserError(f"{len(matching)} stored sets of {label!r} match ({'; '.join(choices)})"
                        f"; choose one with --seed and --budget{hint}")
    return matching[0][0], matching[0][1]


def set_directory(text: str) -> tuple[Path, dict[str, Any]]:
    """The DistilledSet directory ``text`` and, for a set of the cache (a folder with a
    manifest), the config its manifest records (its seed, budget); ``{}`` otherwise."""
    directory = Path(text).expanduser()
    if not directory.is_dir():
        raise UserError(f"distilled set directory {text!r} "
                        f"{'is not a directory' if directory.exists() else 'does not exist'}")
    if not (directory / "manifest.json").is_file():
        return directory, {}
    try:
        return directory, dict(read_manifest(directory).config)
    except CorruptManifest:
        return directory, {}


@dataclass(frozen=True)
class Pruning:
    """What :func:`unused_artifacts` found: ``unused`` (path, bytes) of each artifact,
    corrupt copy or orphaned temporary that no row uses, of ``checked`` artifact folders
    against ``rows`` result rows."""

    unused: list[tuple[Path, int]]
    checked: int
    rows: int


def unused_artifacts(cache: ArtifactCache, store: ResultStore, apply: bool = False) -> Pruning:
    """The artifacts of ``cache`` that no row of ``store`` (with the rows its spill files
    keep) was computed from (its ``artifacts``), moved-aside corrupt copies and orphaned
    temporary files; deleted only with ``apply``. A UserError where a row cannot say what
    it uses (malformed, or written before rows recorded it)."""
    frame = store.frame()
    where = f"results database {str(store.path)!r}"
    if store.malformed:
        raise UserError(f"{where} has {len(store.malformed)} malformed rows "
                        f"({store.malformed[0]}); prune cannot tell what they use (delete "
                        "those rows first)")
    keep: set[str] = set()
    for record in frame["provenance"]:
        if not record.artifacts:
            raise UserError(f"{where} has rows written before mkdt-bench recorded the "
                            "artifacts each row uses; prune cannot tell what they need (rerun "
                            "the grids into a new database first)")
        keep.update(record.artifact_names)
    checked = len(cache.folders())
    return Pruning(cache.prune(keep, apply=apply), checked, len(frame))


__all__ = ["Pruning", "find_stored_set", "set_directory", "unused_artifacts"]
