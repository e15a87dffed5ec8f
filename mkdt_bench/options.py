"""Validation of plain-data options (scikit-learn style: one place, one clear message)."""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping
from typing import Any

from mkdt_bench.errors import UserError


def coerce(where: str, key: str, value: Any, default: Any, choices: Mapping[str, Any]) -> Any:
    """``value`` converted to the type of ``default``; a UserError names key, value and type."""
    if key in choices and value not in choices[key]:
        allowed = ", ".join(map(repr, choices[key]))
        raise UserError(f"{where}: {key}={value!r} is not allowed; choose one of {allowed}")
    if default is None or value is None:
        return value
    kind = type(default)
    if kind is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "1", "0"):
            return value.lower() in ("true", "1")
    elif kind is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    elif kind is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    elif kind is list and isinstance(value, (list, tuple)):
        return list(value)
    elif kind is str and isinstance(value, str):
        return value
    elif isinstance(value, str):
        try:
            if kind in (int, float):
                return kind(value)
            if kind is list:
                return [v for v in value.split(",") if v]
        except ValueError:
            pass
    raise UserError(f"{where}: {key}={value!r} must be of type {kind.__name__} "
                    f"(default {default!r})")


def did_you_mean(name: str, known: Iterable[str]) -> str:
    """`` (did you mean 'epochs'?)`` for the closest known name (case ignored), else ``""``."""
    by_lower = {k.lower(): k for k in known}
    close = difflib.get_close_matches(name.lower(), list(by_lower), n=1)
    return f" (did you mean {by_lower[close[0]]!r}?)" if close else ""


def resolve_options(where: str, given: Mapping[str, Any], defaults: Mapping[str, Any],
                    choices: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Defaults overridden by ``given``; unknown keys and wrong types raise UserError."""
    unknown = sorted(set(given) - set(defaults))
    if unknown:
        hint = did_you_mean(unknown[0], defaults)
        raise UserError(f"{where}: unknown option {unknown[0]!r}{hint}; allowed: "
                        f"{', '.join(sorted(defaults)) or '(none)'}")
    out = dict(defaults)
    for key, value in given.items():
        out[key] = coerce(where, key, value, defaults[key], choices or {})
    return out
