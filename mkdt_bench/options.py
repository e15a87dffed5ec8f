"""Validation of plain-data options (scikit-learn style: one place, one clear message).

A plug-in declares each option once, as an :class:`Opt`: its default, the values allowed
(an :class:`Interval` for a number, :class:`Each` for a list, or a collection of choices)
and a help line. :class:`Configurable` derives ``defaults``, ``choices`` and ``bounds``
from those declarations, :func:`resolve_options` checks them (a value that makes no sense
is refused before any work starts), and ``mkdt-bench list --options NAME`` prints them.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from mkdt_bench.errors import UserError

_CLOSED = ("left", "right", "both", "neither")

#: The largest seed: NumPy's generators take seeds below 2**32 (torch's and Python's more).
SEED_MAX = 2**32 - 1


def _number(value: float) -> str:
    return str(value) if isinstance(value, int) else f"{value:g}"


def _short(value: Any, limit: int = 60) -> str:
    """``repr(value)``, cut to ``limit`` characters (a 400-digit number stays short)."""
    try:
        text = repr(value)
    except ValueError:  # an integer too long to print
        return "(an integer of over 4000 digits)"
    return text if len(text) <= limit else f"{text[:limit - 3]}..."


@dataclass(frozen=True)
class Interval:
    """A range of ints or numbers, like scikit-learn's ``Interval``: ``Interval(int, 1,
    None)`` is [1, inf), ``Interval(float, 0, 1, closed="right")`` is (0, 1]. ``None`` is
    an unbounded end; infinities and NaN are never inside. ``note`` says what a special
    value means (e.g. ``"0 = off"``)."""

    kind: type
    low: float | None
    high: float | None
    closed: str = "both"
    note: str = ""

    def __post_init__(self) -> None:
        if self.kind not in (int, float) or self.closed not in _CLOSED:
            raise ValueError(f"Interval({self.kind!r}, closed={self.closed!r}): kind must be "
                             f"int or float, closed one of {', '.join(_CLOSED)}")

    def __contains__(self, value: Any) -> bool:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return False
        if self.kind is int and not isinstance(value, int):
            return False
        if isinstance(value, float) and not math.isfinite(value):
            return False
        if self.low is not None and (value < self.low or (
                value == self.low and self.closed in ("right", "neither"))):
            return False
        return self.high is None or not (value > self.high or (
            value == self.high and self.closed in ("left", "neither")))

    def __str__(self) -> str:
        left = "[" if self.low is not None and self.closed in ("left", "both") else "("
        right = "]" if self.high is not None and self.closed in ("right", "both") else ")"
        low = "-inf" if self.low is None else _number(self.low)
        high = "inf" if self.high is None else _number(self.high)
        what = "an int" if self.kind is int else "a number"
        return f"{what} in {left}{low}, {high}{right}" + (f" ({self.note})" if self.note else "")

    def convert(self, value: Any) -> Any:
        """``value``, or the number a string such as ``"3"`` or ``"1e-3"`` spells."""
        if isinstance(value, str):
            try:
                return self.kind(value.strip())
            except ValueError:
                return value
        return value


@dataclass(frozen=True)
class Each:
    """A list whose every item lies in ``item`` (an :class:`Interval`, or a type such as
    ``str`` the items must have), at least ``min_len`` long, with no item twice when
    ``distinct``."""

    item: Interval | type | None = None
    distinct: bool = False
    min_len: int = 0


def check_bounds(where: str, key: str, value: Any, bound: Interval | Each) -> Any:
    """``value`` if it satisfies ``bound`` (list items converted to numbers where the bound
    says so), else a UserError naming ``key``, the value and the allowed range."""
    if isinstance(bound, Interval):
        if value not in bound:
            raise UserError(f"{where}: {key}={_short(value)} must be {bound}")
        return value
    items = list(value)
    if len(items) < bound.min_len:
        raise UserError(f"{where}: {key} is empty; give at least {bound.min_len} value"
                        + ("s" if bound.min_len > 1 else ""))
    if isinstance(bound.item, Interval):
        items = [bound.item.convert(v) for v in items]
        for v in items:
            if v not in bound.item:
                raise UserError(f"{where}: {key} holds {_short(v)}; each value must be "
                                f"{bound.item}")
    elif bound.item is not None:
        for v in items:
            if not isinstance(v, bound.item) or (isinstance(v, bool) and bound.item is not bool):
                raise UserError(f"{where}: {key} holds {_short(v)}; each value must be of "
                                f"type {bound.item.__name__}")
    if bound.distinct:
        seen: list[Any] = []
        for v in items:
            if v in seen:
                raise UserError(f"{where}: {key} lists {_short(v)} twice; give each value once")
            seen.append(v)
    return items


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
        try:
            return float(value)
        except OverflowError:
            raise UserError(f"{where}: {key}={_short(value)} is too large for a number "
                            f"(default {default!r})") from None
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
                    choices: Mapping[str, Any] | None = None,
                    bounds: Mapping[str, Interval | Each] | None = None) -> dict[str, Any]:
    """Defaults overridden by ``given``; unknown keys, wrong types and values outside
    ``bounds`` raise UserError."""
    unknown = sorted(set(given) - set(defaults))
    if unknown:
        hint = did_you_mean(unknown[0], defaults)
        raise UserError(f"{where}: unknown option {unknown[0]!r}{hint}; allowed: "
                        f"{', '.join(sorted(defaults)) or '(none)'}")
    out = dict(defaults)
    for key, value in given.items():
        out[key] = coerce(where, key, value, defaults[key], choices or {})
    for key, bound in (bounds or {}).items():
        if out.get(key) is not None:
            out[key] = check_bounds(where, key, out[key], bound)
    return out


@dataclass(frozen=True)
class Opt:
    """One option of a plug-in, declared once: its ``default``, the values ``allowed`` (an
    :class:`Interval`, an :class:`Each`, a collection of choices, or ``None`` for any value
    of the default's type) and a one-line ``help`` (cite the spec section it implements)."""

    default: Any
    allowed: Interval | Each | Collection[Any] | None = None
    help: str = ""

    def allowed_text(self) -> str:
        """What values the option takes, in words (``mkdt-bench list --options``)."""
        if isinstance(self.allowed, Interval):
            return str(self.allowed)
        if isinstance(self.allowed, Each):
            item = self.allowed.item
            what = (str(item) if isinstance(item, Interval) else
                    f"of type {item.__name__}" if item is not None else "any value")
            return (f"a list, each {what}" + (", distinct" if self.allowed.distinct else "")
                    + (f", at least {self.allowed.min_len}" if self.allowed.min_len else ""))
        if self.allowed is not None:
            return "one of " + ", ".join(map(repr, self.allowed))
        return "any value" if self.default is None else f"a {type(self.default).__name__}"


class Configurable:
    """Base of the plug-ins configured by options (methods, evaluators): a sub-class
    declares ``options = {name: Opt(default, allowed, help)}``; ``defaults``, ``choices``
    and ``bounds`` are derived from it, and ``self.config`` holds the resolved options."""

    #: What the plug-in is, for messages ("method", "evaluator").
    kind: ClassVar[str] = "plug-in"
    name: ClassVar[str] = ""
    #: Every option, declared once (:class:`Opt`).
    options: ClassVar[dict[str, Opt]] = {}
    #: Derived from :attr:`options`: the defaults, the choices of enumerations and the
    #: ranges of numbers and lists. Checks across options or against the data stay in code.
    defaults: ClassVar[dict[str, Any]] = {}
    choices: ClassVar[dict[str, Collection[Any]]] = {}
    bounds: ClassVar[dict[str, Interval | Each]] = {}
    #: Small option values for the contract checks of :mod:`mkdt_bench.testing`, so that
    #: each check takes seconds on a tiny problem (e.g. ``{"iterations": 4}``).
    test_options: ClassVar[dict[str, Any]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        for derived in ("defaults", "choices", "bounds"):
            if derived in cls.__dict__:
                raise TypeError(f"{cls.__qualname__} sets {derived}; declare each option once "
                                "instead: options = {name: Opt(default, allowed, help)}")
        cls.defaults = {k: o.default for k, o in cls.options.items()}
        cls.bounds = {k: o.allowed for k, o in cls.options.items()
                      if isinstance(o.allowed, (Interval, Each))}
        cls.choices = {k: o.allowed for k, o in cls.options.items()
                       if o.allowed is not None and not isinstance(o.allowed, (Interval, Each))}

    @classmethod
    def describe_options(cls) -> list[str]:
        """One entry per option, ``name = default  (allowed)`` over its help line: what
        ``mkdt-bench list --options NAME`` prints."""
        inherited: frozenset[str] = getattr(cls, "teacher_options", frozenset())
        lines = []
        for key, opt in cls.options.items():
            default = ("the [teacher] value" if key in inherited else "") or repr(opt.default)
            lines.append(f"{key} = {default}  ({opt.allowed_text()})")
            if opt.help:
                lines.append(f"    {opt.help}")
        return lines

    def __init__(self, **options: Any) -> None:
        name = self.name or type(self).__name__
        self.config = resolve_options(f"{self.kind} {name!r}", options, self.defaults,
                                      self.choices, self.bounds)
