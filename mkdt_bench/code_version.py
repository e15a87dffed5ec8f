"""Which version of a method's or evaluator's code computed a result, for the cache keys.

A class declares ``version`` (an integer, raised whenever a change of its code changes
what it computes). At :data:`INITIAL_VERSION` the version stays out of the keys, so the
keys of sets and cells stored before versions existed stay valid; any later version is
part of them, so raising it recomputes. A class that declares no version of its own (a
plug-in written as the README shows) is keyed by the sha256 of its source files instead:
editing its code recomputes its results rather than passing old ones off as new.
"""

from __future__ import annotations

import hashlib
import inspect
import sys
from pathlib import Path

from mkdt_bench.errors import UserError

INITIAL_VERSION = 1


def _top(module: str) -> str:
    return module.split(".", 1)[0]


def declared_version(cls: type) -> int | None:
    """The ``version`` of ``cls`` when its own package declares one; mkdt-bench's own
    classes are at :data:`INITIAL_VERSION` until they declare another. ``None`` for a
    class from elsewhere that declares none (or inherits one from another package, e.g.
    a plug-in's subclass of a built-in method)."""
    for klass in cls.__mro__:
        if klass.__dict__.get("version") is not None:
            same_package = _top(klass.__module__) == _top(cls.__module__)
            return klass.__dict__["version"] if same_package else None
    return INITIAL_VERSION if _top(cls.__module__) == "mkdt_bench" else None


def _source_files(cls: type) -> list[Path]:
    """Every ``.py`` file of the packages (or modules) that define ``cls`` and its bases,
    outside mkdt-bench and the standard library."""
    files: set[Path] = set()
    for klass in cls.__mro__:
        top = _top(klass.__module__)
        if top in ("mkdt_bench", "__main__") or top in sys.stdlib_module_names:
            continue
        module = sys.modules.get(top)
        paths = getattr(module, "__path__", None)
        if paths:  # a package: all of its modules, helpers included
            files.update(p for d in paths for p in Path(d).rglob("*.py"))
        else:
            source = inspect.getsourcefile(sys.modules[klass.__module__])
            if source:
                files.add(Path(source))
    return sorted(files)


def source_sha256(cls: type) -> str:
    """sha256 of the source files behind ``cls`` (names and contents)."""
    files = _source_files(cls)
    h = hashlib.sha256()
    if files:
        for path in files:
            h.update(path.name.encode())
            h.update(path.read_bytes())
        return h.hexdigest()
    try:
        h.update(inspect.getsource(cls).encode())
    except (OSError, TypeError):
        raise UserError(f"{cls.__name__} declares no version and its source cannot be read; "
                        "give the class a version (an int, raised when its results change)"
                        ) from None
    return h.hexdigest()


def code_version(cls: type) -> dict[str, int | str]:
    """What identifies the code of ``cls``: ``{"version": N}``, or ``{"source_sha256": ...}``
    for a class without a declared version (recorded in each result row)."""
    version = declared_version(cls)
    if version is None:
        return {"source_sha256": source_sha256(cls)}
    if not isinstance(version, int) or isinstance(version, bool) or version < INITIAL_VERSION:
        raise UserError(f"{cls.__name__}.version = {version!r} must be an integer >= "
                        f"{INITIAL_VERSION}")
    return {"version": version}


def code_key(cls: type) -> dict[str, int | str]:
    """The part of a cache key that names the code of ``cls``: empty at the initial
    version (keys from before versions existed stay valid), else :func:`code_version`."""
    version = code_version(cls)
    return {} if version == {"version": INITIAL_VERSION} else version
