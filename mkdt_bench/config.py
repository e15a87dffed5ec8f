"""Run configuration: defaults, TOML presets shipped in the package, ``--set`` overrides.

A resolved config (:class:`BenchConfig`, built once by :func:`build_config`) has five
sections, the first three typed (:class:`RunConfig`, :class:`TeacherConfig`,
:class:`PretrainConfig`: each field with its help and bounds), the last two the
plug-in-defined option tables::

    run        what to run (dataset, methods, budget, archs, fractions, seeds, ...)
    teacher    the teacher (see mkdt_bench.teachers.options.TEACHER_DEFAULTS)
    pretrain   pre-training on a distilled set (docs/protocol.md A.1)
    methods    methods.<name>.<option>, checked against each method's declared
               ``options``; a variant ``name[key=value,...]`` of ``run.methods`` gets its
               resolved options here under its label (see :mod:`mkdt_bench.variants`)
    evaluators evaluators.<name>.<option>, checked against each evaluator's declared
               ``options``

Precedence: defaults < preset < command-line flags < ``--set section.key=value``. Cache keys
hash the plain data of :meth:`BenchConfig.to_dict`.
"""

from __future__ import annotations

import copy
import tomllib
from dataclasses import dataclass, field, fields
from importlib import resources
from pathlib import Path
from typing import Any

from mkdt_bench.device import PRECISIONS, check_device_name
from mkdt_bench.errors import UserError
from mkdt_bench.options import SEED_MAX, Each, Interval, check_bounds, resolve_options
from mkdt_bench.pretraining import PRETRAIN_BOUNDS, PRETRAIN_DEFAULTS
from mkdt_bench.teachers import TEACHER_BOUNDS, TEACHER_CHOICES, TEACHER_DEFAULTS
from mkdt_bench.variants import canonical_label, parse_label, parse_value


def _option(default: Any, help: str, bounds: Interval | Each | None = None) -> Any:
    """A field of a config section: its default, a one-line ``help`` and its ``bounds``."""
    return field(default=default, metadata={"help": help, "bounds": bounds})


@dataclass(frozen=True)
class RunConfig:
    """What to run (``[run]``, the ``run``/``eval`` flags). The lists are non-empty with no
    value twice (a value twice would be the same rows twice); budget and fractions have
    parsers of their own (:func:`parse_budget`, :func:`parse_fraction`)."""

    dataset: str = _option("digits", "the source data set (a registered name or "
                           "imagefolder:PATH)")
    data_root: str = _option("", "where data sets are read from (default: <cache>/data)")
    methods: tuple[str, ...] = _option(("random", "none"), "the rows: methods or variants "
                                       "name[key=value,...]",
                                       Each(str, distinct=True, min_len=1))
    budget: str = _option("10%", "images per set: a count (1000) or a share of the source "
                          "(2%)")
    train_pool: int = _option(0, "the training images methods distil from",
                              Interval(int, 0, None, note="0 = every training image"))
    archs: tuple[str, ...] = _option(("convnet",), "encoders pre-trained on each set",
                                     Each(str, distinct=True, min_len=1))
    fractions: tuple[float, ...] = _option((0.01, 0.05), "label fractions of the downstream "
                                           "evaluation (docs/protocol.md A.2)")
    seeds: tuple[int, ...] = _option((0, 1, 2), "seeds: an encoder and its cells per seed",
                                     Each(Interval(int, 0, SEED_MAX), distinct=True,
                                          min_len=1))
    tasks: tuple[str, ...] = _option((), "downstream data sets (default: the source)",
                                     Each(str, distinct=True))
    evaluators: tuple[str, ...] = _option(("linear",), "how each encoder is scored",
                                          Each(str, distinct=True, min_len=1))
    device: str = _option("auto", "cpu, cuda, cuda:N or auto")
    precision: str = _option("default", "the numeric precision of the device's work")
    deterministic: bool = _option(False, "deterministic algorithms only")
    shared_distillation: bool = _option(False, "each method distils once (seed 0) for "
                                        "every seed")
    teacher_row: bool = _option(True, "a row of the teacher's own encoder")


#: The ``run`` defaults and ranges, as :func:`mkdt_bench.options.resolve_options` reads them.
RUN_DEFAULTS: dict[str, Any] = {f.name: list(f.default) if isinstance(f.default, tuple)
                                else f.default for f in fields(RunConfig)}
RUN_BOUNDS: dict[str, Interval | Each] = {f.name: f.metadata["bounds"] for f in fields(RunConfig)
                                          if f.metadata["bounds"] is not None}


def _teacher(name: str, help: str) -> Any:
    return _option(TEACHER_DEFAULTS[name], help, TEACHER_BOUNDS.get(name))


@dataclass(frozen=True)
class TeacherConfig:
    """The teacher (``[teacher]``): its kind and SSL objective (the registries'
    ``mkdt_bench.teachers.TEACHERS``, ``mkdt_bench.ssl.SSL_RECIPES``), its encoder and
    its training recipe, or a checkpoint to load instead."""

    kind: str = _teacher("kind", "how the teacher is made (a registered teacher kind)")
    arch: str = _teacher("arch", "the teacher's encoder")
    ssl: str = _teacher("ssl", "the SSL objective (a registered recipe)")
    epochs: int = _teacher("epochs", "training epochs")
    batch_size: int = _teacher("batch_size", "images per batch")
    lr: float = _teacher("lr", "SGD learning rate")
    momentum: float = _teacher("momentum", "SGD momentum")
    weight_decay: float = _teacher("weight_decay", "SGD weight decay")
    proj_dim: int = _teacher("proj_dim", "width of the projection head")
    bt_lambda: float = _teacher("bt_lambda", "Barlow Twins' off-diagonal weight")
    temperature: float = _teacher("temperature", "SimCLR's temperature")
    min_scale: float = _teacher("min_scale", "the smallest random crop's area share")
    cj_strength: float = _teacher("cj_strength", "colour jitter strength")
    gaussian_blur: float = _teacher("gaussian_blur", "probability of a Gaussian blur")
    hf_prob: float = _teacher("hf_prob", "probability of a horizontal flip")
    train_images: int = _teacher("train_images", "training images the teacher sees")
    seed: int = _teacher("seed", "the teacher's seed")
    checkpoint: str = _teacher("checkpoint", "a checkpoint file to load instead of training")


def _pretrain(name: str, help: str) -> Any:
    return _option(PRETRAIN_DEFAULTS[name], help, PRETRAIN_BOUNDS.get(name))


@dataclass(frozen=True)
class PretrainConfig:
    """Pre-training an encoder on a distilled set (``[pretrain]``, docs/protocol.md A.1)."""

    epochs: int = _pretrain("epochs", "epochs over the set")
    lr: float = _pretrain("lr", "SGD learning rate")
    use_learned_lr: bool = _pretrain("use_learned_lr", "take a set's learned lr where it "
                                     "has one")
    momentum: float = _pretrain("momentum", "SGD momentum")
    weight_decay: float = _pretrain("weight_decay", "SGD weight decay")
    batch_size: int = _pretrain("batch_size", "images per batch")
    steps: int = _pretrain("steps", "a fixed number of steps instead of epochs")


def _section(record: Any) -> dict[str, Any]:
    return {f.name: list(getattr(record, f.name)) if isinstance(getattr(record, f.name), tuple)
            else getattr(record, f.name) for f in fields(record)}


@dataclass(frozen=True)
class BenchConfig:
    """A resolved configuration (:func:`build_config`): the typed ``run``, ``teacher`` and
    ``pretrain`` sections, and the plug-in-defined option tables ``methods`` (by row
    label, variants included) and ``evaluators`` (by name), each resolved by its class."""

    run: RunConfig
    teacher: TeacherConfig
    pretrain: PretrainConfig
    methods: dict[str, dict[str, Any]]
    evaluators: dict[str, dict[str, Any]]

    @classmethod
    def from_dict(cls, cfg: dict[str, Any]) -> BenchConfig:
        """The record of a config that :func:`validate` checked."""
        run: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v
                               for k, v in cfg["run"].items()}
        return cls(RunConfig(**run), TeacherConfig(**cfg["teacher"]),
                   PretrainConfig(**cfg["pretrain"]), copy.deepcopy(cfg["methods"]),
                   copy.deepcopy(cfg["evaluators"]))

    def to_dict(self) -> dict[str, Any]:
        """The config as plain data (a fresh copy, lists as lists): what cache keys hash."""
        return {"run": _section(self.run), "teacher": _section(self.teacher),
                "pretrain": _section(self.pretrain), "methods": copy.deepcopy(self.methods),
                "evaluators": copy.deepcopy(self.evaluators)}


SECTIONS = tuple(f.name for f in fields(BenchConfig))


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
            raise UserError(f"preset file {name!r} "
                            f"{'is not a file' if path.exists() else 'does not exist'}")
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise UserError(f"preset file {name!r} cannot be read as UTF-8 text: {e}") from None
    else:
        if name not in list_presets():
            raise UserError(f"unknown preset {name!r}; known: {', '.join(list_presets())}")
        text = (resources.files("mkdt_bench") / "presets" / f"{name}.toml").read_text()
    try:
        data = tomllib.loads(text)
    except ValueError as e:  # TOMLDecodeError, or an integer of over 4300 digits
        raise UserError(f"preset {name!r} is not valid TOML: {e}") from None
    except RecursionError:
        raise UserError(f"preset {name!r} nests arrays or tables too deeply") from None
    unknown = sorted(set(data) - set(SECTIONS))
    if unknown:
        raise UserError(f"preset {name!r}: unknown section [{unknown[0]}]; "
                        f"allowed: {', '.join(SECTIONS)}")
    for section, value in data.items():
        if not isinstance(value, dict):
            raise UserError(f"preset {name!r}: {section} = {value!r} must be a table "
                            f"([{section}] with its keys below)")
    return data


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> None:
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            _merge(base[key], value)
        else:
            base[key] = copy.deepcopy(value)


def parse_override(text: str) -> tuple[list[str], Any]:
    """``section.key=value`` -> (path, value); the value is read as one TOML literal if it
    is one, else kept as text (:func:`mkdt_bench.variants.parse_value`)."""
    if "=" not in text:
        raise UserError(f"--set {text!r} must look like section.key=value "
                        "(e.g. teacher.epochs=5)")
    key, raw = text.split("=", 1)
    path = [part.strip() for part in key.split(".")]
    if path[0] not in SECTIONS or len(path) < 2 or not all(path):
        raise UserError(f"--set {text!r}: key must start with one of {', '.join(SECTIONS)} "
                        "(e.g. teacher.epochs=5, methods.mkdt.iterations=100)")
    return path, parse_value(raw.strip())


def build_config(preset: str | None = None, flags: dict[str, Any] | None = None,
                 overrides: list[str] | None = None) -> BenchConfig:
    """Resolve defaults, a preset, ``run`` flags and ``--set`` overrides into one checked,
    typed config."""
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
    return BenchConfig.from_dict(validate(cfg))


def validate(cfg: dict[str, Any]) -> dict[str, Any]:
    """Check every section against its defaults and resolve it (types coerced, options of
    each method and evaluator resolved by its class): the plain data of a
    :class:`BenchConfig`."""
    from mkdt_bench.data import DATASETS
    from mkdt_bench.evaluators import EVALUATORS
    from mkdt_bench.methods import METHODS
    from mkdt_bench.models import MODELS

    for key in ("methods", "archs", "seeds", "fractions", "evaluators"):
        if isinstance(cfg["run"].get(key), list) and not cfg["run"][key]:
            raise UserError(f"run.{key} is empty; give at least one value")
    cfg["run"] = resolve_options("run", cfg["run"], RUN_DEFAULTS, {"precision": PRECISIONS},
                                 RUN_BOUNDS)
    cfg["run"]["methods"] = check_bounds("run", "methods", [
        canonical_label(label) for label in cfg["run"]["methods"]], RUN_BOUNDS["methods"])
    cfg["teacher"] = resolve_options("teacher", cfg["teacher"], TEACHER_DEFAULTS, TEACHER_CHOICES,
                                     TEACHER_BOUNDS)
    cfg["pretrain"] = resolve_options("pretrain", cfg["pretrain"], PRETRAIN_DEFAULTS,
                                      bounds=PRETRAIN_BOUNDS)
    run = cfg["run"]
    for label in run["methods"]:
        METHODS.get(parse_label(label)[0])
    for name in run["evaluators"]:
        EVALUATORS.get(name)
    for name in [*run["archs"], cfg["teacher"]["arch"]]:
        MODELS.get(name)
    for name in [run["dataset"], *run["tasks"]]:
        _check_dataset(name, DATASETS)
    run["fractions"] = check_bounds("run", "fractions",
                                    [parse_fraction(f) for f in run["fractions"]],
                                    Each(distinct=True, min_len=1))
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
    run["budget"] = budget_text(run["budget"])
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
    try:
        text = str(value).strip()
        number = float(text[:-1]) / 100 if text.endswith("%") else float(text)
    except ValueError:  # not a number, or an integer too long to print
        number = float("nan")
    if isinstance(value, bool) or not 0 < number <= 1:
        raise UserError(f"label fraction {_shown(value)} must be a number in (0, 1] or a "
                        "percentage in (0%, 100%] (e.g. 0.05 or 5%)")
    return number


def parse_budget(budget: Any) -> tuple[str, float]:
    """``"2%"`` -> ("fraction", 0.02); ``1000`` -> ("count", 1000)."""
    try:
        text = str(budget).strip()
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
        raise UserError(f"budget {_shown(budget)} must be a positive image count (e.g. 1000) "
                        "or a percentage in (0, 100] (e.g. 2%)") from None


def _shown(value: Any) -> str:
    """``repr(value)`` for a message, cut to 60 characters."""
    try:
        text = repr(value)
    except ValueError:  # an integer too long to print
        return "(an integer of over 4000 digits)"
    return text if len(text) <= 60 else f"{text[:56]}...{text[-1]}"


def budget_text(budget: Any) -> str:
    """The budget as tables and cache keys spell it: ``" 2 %"`` -> ``"2%"``, ``1000`` ->
    ``"1000"``; a percentage keeps the digits it was given (up to 15)."""
    kind, value = parse_budget(budget)
    return f"{value * 100:.15g}%" if kind == "fraction" else str(value)


def resolve_budget(budget: Any, n_train: int) -> int:
    """The number of images a budget allows on a training set of ``n_train`` images."""
    kind, value = parse_budget(budget)
    count = max(1, int(n_train * value)) if kind == "fraction" else int(value)
    if count > n_train:
        raise UserError(f"budget {budget!r} ({count} images) is larger than the training set "
                        f"({n_train} images)")
    return count
