"""Method variants: one method listed several times with different options, each a row.

A variant is the method's name with options in brackets::

    mkdt                      the method with its [methods.mkdt] options
    mkdt[init=random]         the same, with init = "random" on top (the paper's Table 2)
    mkdt[iterations=0,init=random]

in ``--methods`` and in a preset's ``run.methods`` alike. The label (spaces removed) names
the row in every table, CSV and plot; the set itself is cached under the method's name
and resolved options, so a variant equal to another row's options reuses its set.
Values are read as TOML literals where they parse (``1e3``, ``true``) and as plain text
otherwise; they cannot hold ``,``, ``[`` or ``]``.
"""

from __future__ import annotations

import re
import tomllib
from typing import Any

from mkdt_bench.errors import UserError

_LABEL = re.compile(r"^(?P<name>[^\[\]]+?)(?:\[(?P<options>[^\[\]]*)\])?$")


def parse_label(label: str) -> tuple[str, dict[str, Any]]:
    """``"mkdt[init=random]"`` -> ``("mkdt", {"init": "random"})``; a UserError names a
    malformed label and shows the form."""
    match = _LABEL.match(label.strip())
    if not match:
        raise UserError(f"method {label!r} is not NAME or NAME[KEY=VALUE,...] "
                        "(e.g. mkdt[init=random])")
    options: dict[str, Any] = {}
    text = match.group("options")
    if text is None:
        return match.group("name").strip(), options
    for item in text.split(","):
        key, sep, raw = item.partition("=")
        if not sep or not key.strip() or not raw.strip():
            raise UserError(f"method {label!r}: {item.strip()!r} is not KEY=VALUE "
                            "(e.g. mkdt[init=random,iterations=50])")
        if key.strip() in options:
            raise UserError(f"method {label!r} sets {key.strip()!r} twice")
        options[key.strip()] = _value(raw.strip())
    return match.group("name").strip(), options


def _value(raw: str) -> Any:
    try:
        return tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        return raw


def canonical_label(label: str) -> str:
    """The label with spaces removed (``"mkdt[ init = random ]"`` -> ``"mkdt[init=random]"``);
    a label without options is the method's name."""
    name, options = parse_label(label)
    if not options:
        return name
    inside = re.sub(r"\s+", "", label.strip().partition("[")[2][:-1])
    return f"{name}[{inside}]"


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
        if char == "," and depth == 0:
            items.append(current)
            current = ""
        else:
            current += char
    items.append(current)
    if depth != 0:
        raise UserError(f"--methods {text!r} has unbalanced brackets")
    return [item.strip() for item in items if item.strip()]
