"""The plug-in contract kit: the checks every method and evaluator must pass (scikit-learn's
``check_estimator``, for mkdt-bench's plug-ins).

A plug-in author runs them on a class before registering it::

    from mkdt_bench.testing import check_method
    check_method(MyMethod)

Each check runs on a tiny problem (60 images of the embedded ``digits`` data set, the
representations of a tiny ConvNet teacher, a budget of 6) under the class's
``test_options`` (small option values that make every check take seconds), and a broken
contract raises :class:`ContractError` naming the plug-in, the check and what broke.
:func:`method_checks` and :func:`evaluator_checks` list the checks one by one.
"""

from __future__ import annotations

import functools
import importlib
import json
import math
import pickle
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mkdt_bench.cache import ArtifactCache
from mkdt_bench.code_version import code_key, declared_version
from mkdt_bench.data import load_dataset
from mkdt_bench.data.base import ImageDataset
from mkdt_bench.distilled import DistilledSet
from mkdt_bench.errors import UserError
from mkdt_bench.evaluators.base import Evaluator
from mkdt_bench.methods.base import Method, MethodContext
from mkdt_bench.models import Encoder, create_model
from mkdt_bench.options import Configurable, Each, Interval
from mkdt_bench.progress import Progress
from mkdt_bench.rows import REFERENCES

#: The tiny problem: training images of ``digits``, and the budget.
POOL, BUDGET = 60, 6
#: The labelled fraction an evaluator is checked with.
FRACTION = 0.2


class ContractError(AssertionError):
    """A plug-in breaks one or more contracts; the message names each."""


@dataclass(frozen=True)
class Check:
    """One named contract check of one plug-in class."""

    name: str
    run: Callable[[], None]


def check_method(cls: type[Method], workdir: str | Path | None = None) -> None:
    """Run every :func:`method_checks` on ``cls``; raise :class:`ContractError` listing
    the broken contracts. ``workdir`` holds the tiny problem (default: a temporary folder)."""
    _run_all(cls, method_checks, workdir)


def check_evaluator(cls: type[Evaluator], workdir: str | Path | None = None) -> None:
    """Run every :func:`evaluator_checks` on ``cls``; raise :class:`ContractError` listing
    the broken contracts."""
    _run_all(cls, evaluator_checks, workdir)


def _run_all(cls: type[Configurable], checks: Callable[[Any, Path], list[Check]],
             workdir: str | Path | None) -> None:
    try:
        cls(**cls.test_options)
    except UserError as e:
        raise _fail(cls, "options validated", f"its test_options are refused: {e}") from None
    with tempfile.TemporaryDirectory() as tmp:
        failures = []
        for check in checks(cls, Path(workdir) if workdir else Path(tmp)):
            try:
                check.run()
            except ContractError as e:
                failures.append(str(e))
        if failures:
            raise ContractError("\n".join(failures))


def _fail(cls: type[Configurable], check: str, what: str) -> ContractError:
    return ContractError(f"{cls.kind} {cls.name or cls.__name__!r} breaks '{check}': {what}")


def method_checks(cls: type[Method], workdir: Path) -> list[Check]:
    """The contracts of a method: its options, config, pickling and code key, then on the
    tiny problem: budget and shapes, labels only when declared, determinism per seed, and
    resume after a kill when it declares :attr:`~Method.resumable`."""
    problem = _MethodProblem(cls, workdir)
    checks = [*_option_checks(cls), Check("declarations", lambda: _declarations(cls)),
              Check("picklable", lambda: _picklable(cls)),
              Check("budget and shapes", problem.check_shapes),
              Check("labels only when declared", problem.check_labels),
              Check("deterministic per seed", problem.check_determinism)]
    if cls.resumable:
        checks.append(Check("resumes after a kill", problem.check_resume))
    return checks


def evaluator_checks(cls: type[Evaluator], workdir: Path) -> list[Check]:
    """The contracts of an evaluator: its options, config, pickling and code key, then on
    the tiny problem: finite percentages, determinism per seed, an untouched encoder."""
    problem = _EvaluatorProblem(cls, workdir)
    return [*_option_checks(cls), Check("picklable", lambda: _picklable(cls)),
            Check("scores", problem.check_scores),
            Check("deterministic per seed", problem.check_determinism),
            Check("encoder untouched", problem.check_encoder_untouched)]


# ---- options, config, pickling, code key ---------------------------------------------------

def _option_checks(cls: type[Configurable]) -> list[Check]:
    return [Check("options validated", lambda: _options_validated(cls)),
            Check("config round-trips", lambda: _config_round_trips(cls)),
            Check("code change changes the key", lambda: _code_key_reacts(cls))]


def _build(cls: type[Configurable], check: str, **options: Any) -> Any:
    try:
        return cls(**{**cls.test_options, **options})
    except UserError as e:
        raise _fail(cls, check, f"its test_options are refused: {e}") from None


def _refuses(cls: type[Configurable], check: str, key: str, value: Any) -> None:
    """``cls`` with ``key=value`` must raise one line of UserError naming ``key``."""
    try:
        cls(**{**cls.test_options, key: value})
    except UserError as e:
        message = str(e)
        if "\n" in message or key not in message:
            raise _fail(cls, check, f"{key}={value!r} is refused, but not in one line naming "
                                    f"{key!r}: {message!r}") from None
        return
    raise _fail(cls, check, f"{key}={value!r} is outside what its declaration allows but is "
                            "accepted")


def _outside(bound: Interval | Each) -> Any:
    """A value outside ``bound``, or ``None`` where every value of its kind is inside."""
    if isinstance(bound, Each):
        return [] if bound.min_len else None
    if bound.low is not None:
        return bound.low if bound.closed in ("right", "neither") else bound.kind(bound.low - 1)
    if bound.high is not None:
        return bound.high if bound.closed in ("left", "neither") else bound.kind(bound.high + 1)
    return math.nan if bound.kind is float else None


def _options_validated(cls: type[Configurable]) -> None:
    check = "options validated"
    _build(cls, check)
    _refuses(cls, check, "no_such_option", 1)
    for key, bound in cls.bounds.items():
        value = _outside(bound)
        if value is not None:
            _refuses(cls, check, key, value)
    for key in cls.choices:
        _refuses(cls, check, key, "not-a-choice")


def _config_round_trips(cls: type[Configurable]) -> None:
    check = "config round-trips"
    config = _build(cls, check).config
    again = json.loads(json.dumps(config))  # as a result row stores it
    if cls(**again).config != config:
        raise _fail(cls, check, f"building it from its own config {again} gives "
                                f"{cls(**again).config}")


def _declarations(cls: type[Method]) -> None:
    """The class attributes that name options name declared ones; ``reference`` is a role."""
    check = "declarations"
    for attribute in ("engine_options", "compatible_defaults", "teacher_options",
                      "cost_options"):
        unknown = sorted(set(getattr(cls, attribute)) - set(cls.options) - {"budget"})
        if unknown:
            raise _fail(cls, check, f"{attribute} names {unknown[0]!r}, which is not one of "
                                    "its options")
    if cls.reference is not None and cls.reference not in REFERENCES:
        raise _fail(cls, check, f"reference = {cls.reference!r}; use None or one of "
                                f"{', '.join(REFERENCES)}")


def _picklable(cls: type[Configurable]) -> None:
    """What a process pool needs to send an instance and its sub-units to a worker: they
    serialise, and the class is found again under its module and qualified name."""
    check = "picklable"
    instance = _build(cls, check)
    try:
        pickle.dumps(instance)
        pickle.dumps(instance.sub_units("inputs") if isinstance(instance, Method) else [])
    except Exception as e:  # noqa: BLE001 - any failure to pickle is the finding
        raise _fail(cls, check, f"it cannot be sent to a worker process: {type(e).__name__}: "
                                f"{e}") from None
    found: Any = importlib.import_module(cls.__module__)
    for part in cls.__qualname__.split("."):
        found = getattr(found, part, None)
    if found is not cls:
        raise _fail(cls, check, f"a worker process cannot find the class as "
                                f"{cls.__module__}.{cls.__qualname__}")


def _code_key_reacts(cls: type[Configurable]) -> None:
    check = "code change changes the key"
    version = declared_version(cls)
    if version is None:
        if "source_sha256" not in code_key(cls):
            raise _fail(cls, check, "it declares no version and is not keyed by its source")
        return
    bumped = type(cls.__name__, (cls,), {"version": version + 1, "__module__": cls.__module__,
                                         "name": cls.name})
    if code_key(bumped) == code_key(cls):
        raise _fail(cls, check, f"raising its version to {version + 1} leaves its code key "
                                f"{code_key(cls)} unchanged")


# ---- methods on the tiny problem -----------------------------------------------------------

class _Killed(BaseException):
    """The simulated kill of :meth:`_MethodProblem.check_resume` (a BaseException, so that
    no ``except Exception`` swallows it)."""


class _KillAfterSnapshot(Progress):
    """Progress whose bars raise :class:`_Killed` one iteration after the run wrote a
    snapshot into ``scratch``: between two snapshots, as a real kill would be."""

    def __init__(self, scratch: Path) -> None:
        super().__init__(enabled=False)
        self.scratch = scratch
        self.seen: set[tuple[str, int, int]] = set()
        self.snapshot_written = False

    def _state(self) -> set[tuple[str, int, int]]:
        return {(p.name, p.stat().st_ino, p.stat().st_mtime_ns)
                for p in self.scratch.iterdir() if p.is_file()}

    def tick(self) -> None:
        if self.snapshot_written:
            raise _Killed
        self.snapshot_written = self._state() != self.seen

    def bar(self, total: int | None, desc: str, initial: int = 0) -> Any:
        self.seen = self._state()  # a snapshot written before the loop does not count
        return _KillingBar(super().bar(total, desc, initial), self)


class _KillingBar:
    def __init__(self, bar: Any, progress: _KillAfterSnapshot) -> None:
        self._bar, self._progress = bar, progress

    def update(self, n: int = 1) -> None:
        self._bar.update(n)
        self._progress.tick()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._bar, name)


class _LabelsWithheld(MethodContext):
    """A context without labels that records whether the method asked for them."""

    labels_read = False

    @property  # type: ignore[override]
    def labels(self) -> None:
        self.labels_read = True
        return None

    @labels.setter
    def labels(self, value: None) -> None:
        pass


def _tiny_teacher() -> nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(7)
        return create_model("convnet", in_channels=1, image_size=8, out_dim=8,
                            width=4, depth=2).eval()


@functools.cache
def _digits(cache_dir: str) -> ImageDataset:
    return load_dataset("digits", cache_dir=cache_dir)


class _MethodProblem:
    """The tiny problem a method is run on, and its runs by seed, kept."""

    def __init__(self, cls: type[Method], workdir: Path) -> None:
        self.cls, self.workdir = cls, workdir
        self.runs: dict[int, DistilledSet] = {}
        self.count = 0

    def context(self, seed: int, labels: bool, progress: Progress | None = None,
                scratch: Path | None = None) -> MethodContext:
        digits = _digits(str(self.workdir / "data"))
        images = digits.normalized("train")[:POOL]
        with torch.no_grad():
            targets = _tiny_teacher().features(images)
        self.count += 1
        scratch = scratch or self.workdir / "scratch" / f"{self.cls.name}-{self.count}"
        scratch.mkdir(parents=True, exist_ok=True)
        kind = MethodContext if labels else _LabelsWithheld
        return kind(source="digits", images=images, targets=targets,
                             mean=digits.mean, std=digits.std, budget=BUDGET, seed=seed,
                             device=torch.device("cpu"),
                             cache=ArtifactCache(self.workdir / "cache"),
                             inputs_key="contract-kit", scratch=scratch,
                             progress=progress or Progress(enabled=False),
                             load_teacher=_tiny_teacher,
                             labels=digits.train_labels[:POOL] if labels else None)

    def distill(self, check: str, seed: int = 0, progress: Progress | None = None,
                scratch: Path | None = None) -> DistilledSet:
        """A fresh instance's set; the training labels only where it declares them."""
        ctx = self.context(seed, self.cls.uses_labels, progress, scratch)
        try:
            return _build(self.cls, check).distill(ctx)
        except Exception as e:
            if getattr(ctx, "labels_read", False):
                raise _fail(self.cls, "labels only when declared",
                            "it fails without the training labels (ctx.labels is None: "
                            f"{type(e).__name__}: {e}); declare uses_labels = True if it "
                            "needs them") from None
            raise _fail(self.cls, check, f"distill fails on the tiny problem: "
                                         f"{type(e).__name__}: {e}") from None

    def run(self, check: str, seed: int = 0) -> DistilledSet:
        if seed not in self.runs:
            self.runs[seed] = self.distill(check, seed)
        return self.runs[seed]

    def check_shapes(self) -> None:
        check = "budget and shapes"
        out = self.run(check)
        ctx = self.context(0, True)
        if not isinstance(out, DistilledSet):
            raise _fail(self.cls, check, f"distill returns {type(out).__name__}, not a "
                                         "DistilledSet")
        if tuple(out.images.shape[1:]) != tuple(ctx.images.shape[1:]):
            raise _fail(self.cls, check, f"images of shape {tuple(out.images.shape[1:])}, "
                                         f"not the source's {tuple(ctx.images.shape[1:])}")
        size = _build(self.cls, check).set_size(BUDGET, POOL)
        if len(out) != size:
            raise _fail(self.cls, check, f"{len(out)} images where set_size({BUDGET}, {POOL}) "
                                         f"says {size}")
        width = 0 if out.ssl_recipe is not None else ctx.targets.shape[1]
        if tuple(out.targets.shape) != (len(out), width):
            raise _fail(self.cls, check, f"targets of shape {tuple(out.targets.shape)}, not "
                                         f"({len(out)}, {width})")
        if not (torch.isfinite(out.images).all() and torch.isfinite(out.targets).all()):
            raise _fail(self.cls, check, "non-finite images or targets")
        if (out.source, tuple(out.mean), tuple(out.std)) != ("digits", tuple(ctx.mean),
                                                             tuple(ctx.std)):
            raise _fail(self.cls, check, "the set does not carry the context's source and "
                                         "normalisation (use Method.make_set)")

    def check_labels(self) -> None:
        self.run("labels only when declared")

    def check_determinism(self) -> None:
        check = "deterministic per seed"
        runs = []
        with torch.random.fork_rng(devices=[]):
            for global_seed in (1, 2):  # the global generator's state must not matter
                torch.manual_seed(global_seed)
                runs.append(self.distill(check))
        first, again = runs
        if not _same(first, again):
            raise _fail(self.cls, check, "two runs with seed 0 give different sets")
        if not self.cls.seeded and not _same(first, self.run(check, seed=1)):
            raise _fail(self.cls, check, "seeds 0 and 1 give different sets, but it declares "
                                         "seeded = False")

    def check_resume(self) -> None:
        check = "resumes after a kill"
        whole = self.run(check)
        scratch = self.workdir / "scratch" / f"{self.cls.name}-killed"
        scratch.mkdir(parents=True, exist_ok=True)
        try:
            self.distill(check, progress=_KillAfterSnapshot(scratch), scratch=scratch)
        except _Killed:
            pass
        else:
            raise _fail(self.cls, check, "it declares resumable = True but rewrote no snapshot "
                                         "in ctx.scratch before its last iteration (give "
                                         "test_options a snapshot interval below its length)")
        resumed = self.distill(check, scratch=scratch)
        if not _same(whole, resumed):
            raise _fail(self.cls, check, "the run resumed from its snapshot gives another set "
                                         "than an uninterrupted run")


def _same(a: DistilledSet, b: DistilledSet) -> bool:
    return (torch.equal(a.images, b.images) and torch.equal(a.targets, b.targets)
            and a.lr == b.lr and a.ssl_recipe == b.ssl_recipe
            and json.dumps(a.extra, sort_keys=True, default=repr)
            == json.dumps(b.extra, sort_keys=True, default=repr))


# ---- evaluators on the tiny problem --------------------------------------------------------

class _EvaluatorProblem:
    """A tiny ConvNet encoder scored on ``digits`` with a labelled fraction of 0.2."""

    def __init__(self, cls: type[Evaluator], workdir: Path) -> None:
        self.cls, self.workdir = cls, workdir
        self.scores: dict[str, float] | None = None

    def encoder(self) -> Encoder:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(3)
            return create_model("convnet", in_channels=1, image_size=8, out_dim=8,
                                width=4, depth=2)

    def evaluate(self, check: str, encoder: Encoder | None = None) -> dict[str, float]:
        task = _digits(str(self.workdir / "data"))
        try:
            return _build(self.cls, check).evaluate(encoder or self.encoder(), task, FRACTION,
                                                    0, torch.device("cpu"))
        except UserError as e:
            raise _fail(self.cls, check, f"evaluate fails on the tiny problem: {e}") from None

    def first(self, check: str) -> dict[str, float]:
        if self.scores is None:
            self.scores = self.evaluate(check)
        return self.scores

    def check_scores(self) -> None:
        check = "scores"
        scores = self.first(check)
        if not isinstance(scores, dict) or "accuracy" not in scores:
            raise _fail(self.cls, check, f"evaluate returns {scores!r}, without 'accuracy'")
        for metric, value in scores.items():
            if isinstance(value, bool) or not isinstance(value, (int, float)) \
                    or not math.isfinite(value):
                raise _fail(self.cls, check, f"{metric}={value!r} is not a finite number")
            if "accuracy" in metric and not 0 <= value <= 100:
                raise _fail(self.cls, check, f"{metric}={value!r} is not a percentage")

    def check_determinism(self) -> None:
        check = "deterministic per seed"
        scores = []
        with torch.random.fork_rng(devices=[]):
            for global_seed in (1, 2):  # the global generator's state must not matter
                torch.manual_seed(global_seed)
                scores.append(self.evaluate(check))
        if scores[0] != scores[1]:
            raise _fail(self.cls, check, "two evaluations with seed 0 give different scores")

    def check_encoder_untouched(self) -> None:
        check = "encoder untouched"
        encoder = self.encoder()
        before = {k: v.clone() for k, v in encoder.state_dict().items()}
        self.evaluate(check, encoder)
        changed = [k for k, v in encoder.state_dict().items() if not torch.equal(v, before[k])]
        if changed:
            raise _fail(self.cls, check, f"evaluate changed the given encoder's {changed[0]} "
                                         "(train a copy)")


__all__ = ["BUDGET", "Check", "ContractError", "check_evaluator", "check_method",
           "evaluator_checks", "method_checks"]
