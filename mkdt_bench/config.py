"""Run configuration: defaults, TOML presets shipped in the package, ``--set`` overrides.

A resolved config is plain data with five sections::

    run        what to run (dataset, methods, budget, archs, fractions, seeds, ...)
    teacher    SSL teacher (see mkdt_bench.teacher.TEACHER_DEFAULTS)
    pretrain   pre-training on a distilled set (evaluation.md A.1)
    methods    methods.<name>.<option>, validated by each method's ``defaults``; a variant
               ``name[key=value,...]`` of ``run.methods`` gets its resolved options here
               under its label (see :mod:`mkdt_bench.variants`)
    evaluators evaluators.<name>.<option>, validated by each evaluator's ``defaults``

Precedence: defaults < preset < command-line flags < ``--set section.key=value``.
"""

from __future__ import annotations

import copy
import tomllib
from importlib import resources
from pathlib import Path
from typing import Any

from mkdt_bench.device import PRECISIONS, check_device_name
from mkdt_bench.errors import UserError
from mkdt_bench.evaluators.pretrain import PRETRAIN_DEFAULTS
from mkdt_bench.options import resolve_options
from mkdt_bench.teacher import TEACHER_CHOICES, TEACHER_DEFAULTS
from mkdt_bench.variants import canonical_label, parse_label

RUN_DEFAULTS: dict[str, Any] = {
    "dataset": "digits",
    "data_root": "",
    "methods": ["random", "none"],
    "budget": "10%",
    "train_pool": 0,
    "archs": ["convnet"],
    "fractions": [0.01, 0.05],
    "seeds": [0, 1, 2],
    "tasks": [],
    "evaluators": ["linear"],
    "device": "auto",
    "precision": "default",
    "deterministic": False,
    "shared_distillation": False,
    "teacher_row": True,
}

SECTIONS = ("run", "teacher", "pretrain", "methods", "evaluators")


def default_config() -> dict[str, Any]:
    return {"run": dict(RUN_DEFAULTS), "teacher": dict(TEACHER_DEFAULTS),
            "pretrain": dict(PRETRAIN_DEFAULTS), "methods": {}, "evaluators": {}}


def list_presets() -> list[str]:
    folder = resources.files("mkdt_bench") / "presets"
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".toml"))


def read_preset(name: str) -> dict[str, Any]:
    """A shipped preset by name, or a TOML file by path."""
    if name.endswith(".toml") or "/" in name:
        path = Path(name)
        if not path.is_file():
            raise UserError(f"preset file {name!r} does not exist")
        text = path.read_text()
    else:
        if name not in list_presets():
            raise UserError(f"unknown preset {name!r}; known: {', '.join(list_presets())}")
        text = (resources.files("mkdt_bench") / "presets" / f"{name}.toml").read_text()
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise UserError(f"preset {name!r} is not valid TOML: {e}") from None
    unknown = sorted(set(data) - set(SECTIONS))
    if unknown:
        raise UserError(f"preset {name!r}: unknown section [{unknown[0]}]; "
                        f"allowed: {', '.join(SECTIONS)}")
    return data


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> None:
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            _merge(base[key], value)
        else:
            base[key] = copy.deepcopy(value)


def parse_override(text: str) -> tuple[list[str], Any]:
    """``section.key=value`` -> (path, value); the value is read as a TOML literal if it can."""
    if "=" not in text:
        raise UserError(f"--set {text!r} must look like section.key=value "
                        "(e.g. teacher.epochs=5)")
    key, raw = text.split("=", 1)
    path = key.strip().split(".")
    if path[0] not in SECTIONS or len(path) < 2 or not all(path):
        raise UserError(f"--set {text!r}: key must start with one of {', '.join(SECTIONS)} "
                        "(e.g. teacher.epochs=5, methods.mkdt.iterations=100)")
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw
    return path, value


def build_config(preset: str | None = None, flags: dict[str, Any] | None = None,
                 overrides: list[str] | None = None) -> dict[str, Any]:
    """Resolve defaults, a preset, ``run`` flags and ``--set`` overrides into one config."""
    cfg = default_config()
    if preset:
        _merge(cfg, read_preset(preset))
    for key, value in (flags or {}).items():
        if value is not None:
            cfg["run"][key] = value
    for text in overrides or []:
        path, value = parse_override(text)
        node = cfg
        for part in path[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise UserError(f"--set {text!r}: {part!r} is not a section")
        node[path[-1]] = value
    return validate(cfg)


def validate(cfg: dict[str, Any]) -> dict[str, Any]:
    """Check every section against its defaults; returns the typed config."""
    from mkdt_bench.data import DATASETS
    from mkdt_bench.evaluators import EVALUATORS
    from mkdt_bench.methods import METHODS
    from mkdt_bench.models import MODELS

    cfg["run"] = resolve_options("run", cfg["run"], RUN_DEFAULTS, {"precision": PRECISIONS})
    cfg["teacher"] = resolve_options("teacher", cfg["teacher"], TEACHER_DEFAULTS, TEACHER_CHOICES)
    cfg["pretrain"] = resolve_options("pretrain", cfg["pretrain"], PRETRAIN_DEFAULTS)
    run = cfg["run"]
    for key in ("methods", "archs", "seeds", "fractions", "evaluators"):
        if not run[key]:
            raise UserError(f"run.{key} is empty; give at least one value")
    run["methods"] = [canonical_label(label) for label in run["methods"]]
    repeated = sorted({m for m in run["methods"] if run["methods"].count(m) > 1})
    if repeated:
        raise UserError(f"run.methods lists {repeated[0]!r} twice; give each row once")
    for label in run["methods"]:
        METHODS.get(parse_label(label)[0])
    for name in run["evaluators"]:
        EVALUATORS.get(name)
    for name in [*run["archs"], cfg["teacher"]["arch"]]:
        MODELS.get(name)
    for name in [run["dataset"], *run["tasks"]]:
        _check_dataset(name, DATASETS)
    run["fractions"] = [parse_fraction(f) for f in run["fractions"]]
    for s in run["seeds"]:
        if not isinstance(s, int) or isinstance(s, bool) or s < 0:
            raise UserError(f"seed {s!r} must be a non-negative integer")
    check_device_name(run["device"])
    for section, registry in (("methods", METHODS), ("evaluators", EVALUATORS)):
        for label in run[section]:
            cfg[section].setdefault(parse_label(label)[0], {})
        for name, options in cfg[section].items():
            if not isinstance(options, dict):
                raise UserError(f"{section}.{name} must be a table of options")
            cls = registry.get(name)
            inherited = {k: cfg["teacher"][k] for k in getattr(cls, "teacher_options", ())}
            cfg[section][name] = cls(**{**inherited, **options}).config
    for label in run["methods"]:  # a variant: its method's options with its own on top
        name, extra = parse_label(label)
        if extra:
            try:
                cfg["methods"][label] = METHODS.get(name)(
                    **{**cfg["methods"][name], **extra}).config
            except UserError as e:
                raise UserError(f"{label}: {e}") from None
    kind, value = parse_budget(run["budget"])
    run["budget"] = f"{value * 100:g}%" if kind == "fraction" else str(int(value))
    if run["train_pool"] < 0:
        raise UserError(f"run.train_pool={run['train_pool']} must be 0 (every training image) "
                        "or a positive image count")
    return cfg


def _check_dataset(name: str, registry: Any) -> None:
    """A registered data set name; a folder's path gets the ``imagefolder:`` hint."""
    try:
        registry.get(name)
    except UserError as e:
        looks_like_path = "/" in name or name.startswith(("~", ".")) or Path(name).is_dir()
        if ":" in name or not looks_like_path:
            raise
        raise UserError(f"{e}; a folder of images is read as imagefolder:{name} "
                        "(PATH/train/<class>/<image> and PATH/test/<class>/<image>)") from None


def parse_fraction(value: Any) -> float:
    """A label fraction in (0, 1]: ``0.05``, or ``"5%"`` as the tables print it."""
    text = str(value).strip()
    try:
        number = float(text[:-1]) / 100 if text.endswith("%") else float(text)
    except ValueError:
        number = float("nan")
    if isinstance(value, bool) or not 0 < number <= 1:
        raise UserError(f"label fraction {value!r} must be a number in (0, 1] or a "
                        "percentage in (0%, 100%] (e.g. 0.05 or 5%)")
    return number


def parse_budget(budget: Any) -> tuple[str, float]:
    """``"2%"`` -> ("fraction", 0.02); ``1000`` -> ("count", 1000)."""
    text = str(budget).strip()
    try:
        if text.endswith("%"):
            value = float(text[:-1]) / 100
            if not 0 < value <= 1:
                raise ValueError
            return "fraction", value
        count = int(text)
        if count <= 0:
            raise ValueError
        return "count", count
    except ValueError:
        raise UserError(f"budget {budget!r} must be a positive image count (e.g. 1000) or a "
                        "percentage in (0, 100] (e.g. 2%)") from None


def resolve_budget(budget: Any, n_train: int) -> int:
    """The number of images a budget allows on a training set of ``n_train`` images."""
    kind, value = parse_budget(budget)
    count = max(1, int(n_train * value)) if kind == "fraction" else int(value)
    if count > n_train:
        raise UserError(f"budget {budget!r} ({count} images) is larger than the training set "
                        f"({n_train} images)")
    return count
