"""Method variants: one method listed several times with different options, each a row.

A variant is the method's name with options in brackets::

    mkdt                      the method with its [methods.mkdt] options
    mkdt[init=random]         the same, with init = "random" on top (the paper's Table 2)
    mkdt[iterations=0,init=random]

in ``--methods`` and in a preset's ``run.methods`` alike. The label (without the spaces
around its name, keys and values) names the row in every table, CSV and plot; the set
itself is cached under the method's name and resolved options, so a variant equal to
another row's options reuses its set.
Values are read as TOML literals where they parse (``1e3``, ``true``) and as plain text
otherwise (see :func:`parse_value`); they cannot hold ``,``, ``[`` or ``]``.
"""

from __future__ import annotations

import datetime
import re
import tomllib
from typing import Any

from mkdt_bench.errors import UserError

_LABEL = re.compile(r"^(?P<name>[^\[\]]+?)(?:\[(?P<options>[^\[\]]*)\])?$")


def parse_label(label: str) -> tuple[str, dict[str, Any]]:
    """``"mkdt[init=random]"`` -> ``("mkdt", {"init": "random"})``; a UserError names a
    malformed label and shows the form."""
    name, items = _split_label(label)
    return name, {key: parse_value(raw) for key, raw in items}


def _split_label(label: str) -> tuple[str, list[tuple[str, str]]]:
    """The method's name and the label's ``(key, raw value)`` pairs, each stripped."""
    match = _LABEL.match(label.strip()) if isinstance(label, str) else None
    if not match:
        raise UserError(f"method {label!r} is not NAME or NAME[KEY=VALUE,...] "
                        "(e.g. mkdt[init=random])")
    text = match.group("options")
    items: list[tuple[str, str]] = []
    for item in [] if text is None else text.split(","):
        key, sep, raw = (part.strip() for part in item.partition("="))
        if not sep or not key or not raw:
            raise UserError(f"method {label!r}: {item.strip()!r} is not KEY=VALUE "
                            "(e.g. mkdt[init=random,iterations=50])")
        if key in dict(items):
            raise UserError(f"method {label!r} sets {key!r} twice")
        items.append((key, raw))
    return match.group("name").strip(), items


def parse_value(raw: str) -> Any:
    """``raw`` as the one TOML value it spells (``5``, ``1e3``, ``true``, ``"a b"``,
    ``[1, 2]``), else as the text itself: text that is no TOML value, or more than one
    (a value, a line break, ``x = 2``), a date or time, or an integer too long for Python
    to read stays text, so a value is always plain data that JSON can hold."""
    try:
        document = tomllib.loads(f"v = {raw}")
    except (ValueError, RecursionError):  # TOMLDecodeError, a 4300-digit integer, deep nesting
        return raw
    value = document.get("v")
    if document.keys() != {"v"} or _holds_datetime(value):
        return raw
    return value


def _holds_datetime(value: Any) -> bool:
    if isinstance(value, dict):
        return any(_holds_datetime(v) for v in value.values())
    if isinstance(value, list):
        return any(_holds_datetime(v) for v in value)
    return isinstance(value, (datetime.date, datetime.time))


def canonical_label(label: str) -> str:
    """The label without the spaces around its name, keys and values
    (``"mkdt[ init = random ]"`` -> ``"mkdt[init=random]"``); a label without options is
    the method's name. Spaces inside a value are kept: they are part of it."""
    name, items = _split_label(label)
    if not items:
        return name
    return f"{name}[{','.join(f'{key}={raw}' for key, raw in items)}]"


def split_variant(label: str) -> tuple[str, str]:
    """A row label as (method, variant): ``"mkdt[init=random]"`` -> ``("mkdt", "init=random")``,
    ``"random"`` -> ``("random", "")``."""
    name, _, rest = label.partition("[")
    return name, rest[:-1] if rest.endswith("]") else rest


def split_methods(text: str) -> list[str]:
    """A comma-separated method list whose items may hold commas inside brackets:
    ``"mkdt,mkdt[init=random,iterations=0],random"`` -> three labels."""
    items, depth, current = [], 0, ""
    for char in text:
        depth += {"[": 1, "]": -1}.get(char, 0)
        if depth < 0:
            break
        if char == "," and depth == 0:
            items.append(current)
            current = ""
        else:
            current += char
    items.append(current)
    if depth != 0:
        raise UserError(f"--methods {text!r} has unbalanced brackets")
    return [item.strip() for item in items if item.strip()]
