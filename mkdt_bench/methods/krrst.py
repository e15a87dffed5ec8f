"""KRR-ST: self-supervised dataset distillation by kernel ridge regression against a pool of
online-trained models (Lee et al., ICLR 2024, arXiv 2310.06511). Spec: ``krrst.md``.

Per outer step (§2.9): one pool model's features Φ = [f(·), 1] of the learned images X_s and
of an augmented real batch give the closed-form ridge prediction
Ŷ_t = K_ts (K_ss + λI)⁻¹ Y_s (§2.2); the loss mean((Ŷ_t − g*(x̃_t))²) (§2.3) trains X_s and
Y_s with Adam (§2.6); then the sampled model takes one full-batch SGD step on the updated set
and is re-initialised after ``online_iterations`` steps (§2.5).
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mkdt_bench.allocator import retained_heap
from mkdt_bench.augment import crop_flip
from mkdt_bench.cache import ArtifactCache, atomic_torch_save
from mkdt_bench.data.stats import KRRST_STATS, lookup, renormalize
from mkdt_bench.device import resident, to_device, to_host
from mkdt_bench.distilled import DistilledSet
from mkdt_bench.errors import UserError
from mkdt_bench.methods._teacher_views import TeacherViews, ensure_views
from mkdt_bench.methods.base import Method, MethodContext
from mkdt_bench.methods.registry import register_method
from mkdt_bench.models import Encoder, create_model
from mkdt_bench.models.convnet import parse_widths
from mkdt_bench.options import Interval, Opt
from mkdt_bench.safeload import (
    check_ints,
    check_like,
    check_optimizer,
    check_progress,
    check_rows,
    resume,
)
from mkdt_bench.seeding import rng_state, set_rng_state
from mkdt_bench.training import StepRecords

SNAPSHOT_FILE = "krrst_state.pt"
#: The parts of a resume snapshot and their types (tensors and plain data only).
_SNAPSHOT_KEYS: dict[str, type | tuple[type, ...]] = {
    "images": Tensor, "targets": Tensor, "optimizer": dict, "generator": Tensor, "pool": dict,
    "batches": dict, "step": int, "losses": list, "untrained_steps": int, "indices": list,
    "rng": dict}
#: Outer steps between reads of the divergence checks off the CPU (on the CPU: every one).
CHECK_EVERY = 100
#: RandomCrop padding of the real batch (§2.4).
CROP_PADDING = 4


def krr_predict(phi_s: Tensor, phi_t: Tensor, y_s: Tensor, ridge: float) -> Tensor:
    """Ŷ_t = K_ts (K_ss + λI)⁻¹ Y_s with λ = ridge · tr(K_ss), detached (§2.2).

    ``phi_s``, ``phi_t`` already hold the constant-1 bias column. Solved with
    ``torch.linalg.solve_ex`` (no explicit inverse, and no check that would wait for the
    GPU: a failed solve gives non-finite values, which the caller's checks report).
    """
    k_ss = phi_s @ phi_s.T
    k_ts = phi_t @ phi_s.T
    lam = ridge * torch.trace(k_ss).detach()
    eye = torch.eye(len(k_ss), dtype=k_ss.dtype, device=k_ss.device)
    return k_ts @ torch.linalg.solve_ex(k_ss + lam * eye, y_s)[0]


def outer_lr_at(outer_lr: float, final_factor: float, step: int, total: int) -> float:
    """The outer lr of step ``step`` (0-based): ``LinearLR`` from 1 to ``final_factor`` over
    ``total`` steps (§2.6), in closed form (the reference's ``LinearLR`` multiplies the
    previous lr by a ratio every step; the two agree to float64 rounding)."""
    return outer_lr * (1 - (1 - final_factor) * min(step, total) / total)


def reference_widths(image_size: int) -> list[int]:
    """KRR-ST's pool / evaluation ConvNet widths (krrst.md §7): ``convnet_128_256_512_bn``
    up to 32 px, ``convnet_64_128_256_512_bn`` above."""
    return [128, 256, 512] if image_size <= 32 else [64, 128, 256, 512]


def with_bias(features: Tensor) -> Tensor:
    """Φ = [f(x), 1] (§2.2)."""
    return torch.cat([features, features.new_ones(len(features), 1)], dim=1)


class ModelPool:
    """The §2.5 pool: ``size`` models, each with its SGD optimiser and step counter.

    ``reference_counter=False`` (default, §8.1): a re-initialised model's counter restarts at
    0, so it is trained again. ``True`` reproduces the reference code (§6.1): the counter is
    never reset, so after its first re-initialisation a model is re-created, untrained, every
    time it is sampled. ``since_init`` counts the SGD steps each model has taken since its last
    (re-)initialisation, in both modes.
    """

    def __init__(self, build: Any, cfg: dict[str, Any], generator: torch.Generator) -> None:
        self.build, self.cfg, self.generator = build, cfg, generator
        self.models: list[Encoder] = []
        self.optimizers: list[torch.optim.SGD] = []
        self.counters: list[int] = []
        self.since_init: list[int] = []
        for _ in range(cfg["pool_size"]):
            model, opt = self._fresh()
            self.models.append(model)
            self.optimizers.append(opt)
            self.counters.append(0)
            self.since_init.append(0)

    def _fresh(self) -> tuple[Encoder, torch.optim.SGD]:
        seed = int(torch.randint(2**31 - 1, (1,), generator=self.generator))
        model = self.build(seed)
        opt = torch.optim.SGD(model.parameters(), lr=self.cfg["pool_lr"],
                              momentum=self.cfg["pool_momentum"],
                              weight_decay=self.cfg["pool_wd"])
        return model, opt

    def warm_up(self, images: Tensor, targets: Tensor) -> None:
        """Model i takes t_i ~ Uniform{1, ..., T-1} full-batch steps (§2.5, ``randint(1, T)``)."""
        for i in range(len(self.models)):
            steps = int(torch.randint(1, self.cfg["online_iterations"], (1,),
                                      generator=self.generator))
            for _ in range(steps):
                self._sgd_step(i, images, targets)
            self.counters[i] = steps

    def sample(self) -> int:
        return int(torch.randint(len(self.models), (1,), generator=self.generator))

    def _sgd_step(self, i: int, images: Tensor, targets: Tensor) -> None:
        model, opt = self.models[i], self.optimizers[i]
        model.train()
        loss = F.mse_loss(model(images), targets)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        self.since_init[i] += 1

    def update(self, i: int, images: Tensor, targets: Tensor) -> None:
        """After an outer step: one SGD step on the (detached) set, or re-initialisation."""
        if self.counters[i] < self.cfg["online_iterations"]:
            self.counters[i] += 1
            self._sgd_step(i, images, targets)
            return
        self.models[i], self.optimizers[i] = self._fresh()
        self.since_init[i] = 0
        if not self.cfg["reference_counter"]:
            self.counters[i] = 0

    def state_dict(self) -> dict[str, Any]:
        return {"models": [m.state_dict() for m in self.models],
                "optimizers": [o.state_dict() for o in self.optimizers],
                "counters": list(self.counters), "since_init": list(self.since_init)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`'s result; raises ``ValueError`` (or torch's errors) when
        it is not one of a pool like this one."""
        size = len(self.models)
        for key in ("models", "optimizers"):
            if not (isinstance(state[key], list) and len(state[key]) == size):
                raise ValueError(f"the pool's {key} are not a list of {size}")
        for key in ("counters", "since_init"):
            check_ints(state[key], f"the pool's {key}", size, 0, 2**62)
        for model, opt, m_state, o_state in zip(self.models, self.optimizers, state["models"],
                                                state["optimizers"]):
            check_like(m_state, model.state_dict(), "pool model")
            check_optimizer(o_state, opt, "pool optimizer")
            model.load_state_dict(m_state)
            opt.load_state_dict(o_state)
        self.counters, self.since_init = list(state["counters"]), list(state["since_init"])


class RealBatches:
    """Batches of a fresh permutation of the training set, recycled forever; the last,
    smaller batch of a pass is kept (``DataLoader(shuffle=True)`` over the set, §2.4)."""

    def __init__(self, n: int, batch: int, generator: torch.Generator) -> None:
        self.n, self.batch, self.generator = n, batch, generator
        self.perm = torch.randperm(n, generator=generator)
        self.position = 0

    def next(self) -> Tensor:
        if self.position >= self.n:
            self.perm, self.position = torch.randperm(self.n, generator=self.generator), 0
        idx = self.perm[self.position:self.position + self.batch]
        self.position += len(idx)
        return idx

    def state_dict(self) -> dict[str, Any]:
        return {"perm": self.perm, "position": self.position}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.perm, self.position = state["perm"], state["position"]


@dataclass
class _State:
    images: Tensor
    targets: Tensor
    optimizer: torch.optim.Optimizer
    generator: torch.Generator
    pool: ModelPool
    batches: RealBatches
    step: int
    losses: list[float]
    untrained_steps: int
    indices: list[int]

    def save(self, path: Path) -> None:
        """The state on the host, so that it resumes on any device."""
        atomic_torch_save(to_host({
            "images": self.images, "targets": self.targets,
            "optimizer": self.optimizer.state_dict(), "generator": self.generator.get_state(),
            "pool": self.pool.state_dict(), "batches": self.batches.state_dict(),
            "step": self.step, "losses": self.losses, "untrained_steps": self.untrained_steps,
            "indices": self.indices, "rng": rng_state(),
        }), path)


@register_method("krrst")
class KRRST(Method):
    """KRR-ST (spec ``krrst.md``); defaults = the CIFAR100 column of §7.

    ``teacher_channels_last`` is an engine option (results equal to float rounding, not part
    of the set's cache key). On the CPU the loop runs in a retained glibc heap
    (``allocator.retained_heap``; identical numbers). ``teacher_views`` is an opt-in
    deviation (``docs/krrst.md``): the teacher sees V fixed views per image.
    """

    #: 2: at width 0 the pool is KRR-ST's own ConvNet (``widths="auto"``), no longer the
    #: harness's default ConvNet, so sets of version 1 are not reused.
    version = 2
    options = {
        "model": Opt("convnet", None, "the pool's feature network (§2.5)"),
        "width": Opt(0, Interval(int, 0, None, note="0 = use widths"),
                     "give every block of the pool's convnet this width (D3 at 32 px, D4 "
                     "above)"),
        "widths": Opt("auto", None,
                      "one width per block, \"A-B-C\"; \"auto\": KRR-ST's "
                      "convnet_128_256_512_bn up to 32 px, convnet_64_128_256_512_bn above; "
                      "\"\": the model's own"),
        "norm": Opt("batchnorm", None, "the pool's normalisation (BatchNorm as the "
                                       "reference, §8.3; \"\" = the model's own)"),
        "pool_size": Opt(10, Interval(int, 1, None), "models in the pool (§2.5)"),
        "online_iterations": Opt(1000, Interval(int, 2, None, note="pool models start after "
                                                "Uniform{1..T-1} steps"),
                                 "T, a pool model's steps before its re-initialisation (§2.5)"),
        "pool_lr": Opt(0.1, Interval(float, 0, None, closed="neither"),
                       "the pool's full-batch SGD lr"),
        "pool_momentum": Opt(0.9, Interval(float, 0, 1, closed="left"),
                             "the pool's SGD momentum"),
        "pool_wd": Opt(1e-3, Interval(float, 0, None), "the pool's SGD weight decay"),
        "reference_counter": Opt(False, None, "reproduce the reference's never-reset "
                                              "counter (§6.1)"),
        "outer_steps": Opt(160_000, Interval(int, 1, None), "outer updates (§2.3)"),
        "outer_lr": Opt(1e-4, Interval(float, 0, None, closed="neither"),
                        "outer lr of X_s and Y_s (§2.6; 1e-5 for Tiny / ImageNet-64)"),
        "final_lr_factor": Opt(1e-3, Interval(float, 0, 1, closed="right"),
                               "linear decay of the outer lr to outer_lr · final_lr_factor"),
        "outer_optimizer": Opt("adam", ("adam", "sgd"),
                               "Adam (β 0.9/0.999, no weight decay) on X_s and Y_s, or SGD "
                               "with momentum 0.5 (the reference's option)"),
        "real_batch": Opt(1024, Interval(int, 1, None), "real images per outer step (§2.4)"),
        "augment": Opt(True, None, "crop (padding 4) + flip of the real batch only (§2.4)"),
        "ridge": Opt(1e-6, Interval(float, 0, None, closed="neither"),
                     "λ = ridge · tr(K_ss) (§2.2)"),
        "reference_input_space": Opt(False, None,
                                     "store X_s in raw pixel space and feed it raw while real "
                                     "images are normalised, as the reference (§6.2, §8.2); "
                                     "the set then declares mean 0 / std 1"),
        "input_stats": Opt("dataset", ("dataset", "krrst"),
                           "statistics of the inputs while distilling: the data set's own, or "
                           "KRR-ST's (what its released teacher saw); the stored set is "
                           "re-expressed in the data set's either way"),
        "snapshot_every": Opt(1000, Interval(int, 1, None),
                              "resumable state interval (ctx.scratch)"),
        "teacher_channels_last": Opt(True, None, "engine: on the CPU, run a channels-last copy "
                                                 "of the frozen teacher (oneDNN; faster)"),
        "teacher_views": Opt(0, Interval(int, 0, None, note="0 = off"),
                             "deviation: V > 0 precomputes V crop + flip views of every pool "
                             "image and their teacher targets, and each outer step draws one "
                             "stored view per image (docs/krrst.md); needs augment"),
    }
    engine_options = frozenset({"teacher_channels_last"})
    cost_options = ("outer_steps",)
    compatible_defaults = {"teacher_views": 0, "widths": "auto", "input_stats": "dataset"}
    resumable = True
    test_options = {"width": 8, "pool_size": 2, "online_iterations": 3, "outer_steps": 4,
                    "real_batch": 16, "snapshot_every": 2, "outer_lr": 1e-2}

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        cfg, where = self.config, f"method {self.name!r}"
        if cfg["teacher_views"] and not cfg["augment"]:
            raise UserError(f"{where}: teacher_views={cfg['teacher_views']} needs augment=True "
                            "(the views are augmentations)")
        if cfg["widths"] not in ("auto", ""):
            parse_widths(cfg["widths"])
            if cfg["width"]:
                raise UserError(f"{where}: width={cfg['width']} and widths={cfg['widths']!r} "
                                "both set; give one (width=0 to use widths)")

    def distill(self, ctx: MethodContext) -> DistilledSet:
        cfg = self.config
        source, ctx = ctx, self._stats_context(ctx)
        if cfg["real_batch"] > len(ctx.images):
            raise UserError(f"method 'krrst': real_batch={cfg['real_batch']} is larger than the "
                            f"{len(ctx.images)} training images; lower it")
        if ctx.load_teacher is None:
            raise UserError("method 'krrst' needs the teacher (targets of augmented real "
                            "batches) but the context has none")
        views = self._views(ctx) if cfg["teacher_views"] else None
        teacher = None if views else self._teacher(ctx, ctx.load_teacher())
        path = ctx.scratch / SNAPSHOT_FILE
        state = resume(path, _SNAPSHOT_KEYS, lambda snap: self._resume(ctx, snap))
        if state is None:
            state = self._initial_state(ctx)
            state.save(path)
        mean, std = (torch.tensor(v, device=ctx.device).view(1, -1, 1, 1)
                     for v in (ctx.mean, ctx.std))
        images = ctx.images if views else resident(ctx.images, ctx.device)
        check_every = 1 if ctx.device.type == "cpu" else CHECK_EVERY
        records = StepRecords()
        bar = ctx.progress.bar(cfg["outer_steps"], "krrst", initial=state.step)
        with retained_heap(ctx.device.type == "cpu"):  # no page-fault churn; same numbers
            while state.step < cfg["outer_steps"]:
                records.add(*self._step(ctx, teacher, state, mean, std, views, images))
                state.step += 1
                snapshot = (state.step % cfg["snapshot_every"] == 0
                            or state.step == cfg["outer_steps"])
                if snapshot or state.step % check_every == 0:
                    self._check(ctx, state, records.read())
                if snapshot:
                    state.save(path)
                    bar.set_postfix(loss=f"{state.losses[-1]:.4f}")
                bar.update(1)
        bar.close()
        every = cfg["snapshot_every"]
        curve = [sum(state.losses[i:i + every]) / len(state.losses[i:i + every])
                 for i in range(0, len(state.losses), every)]
        space = "raw" if cfg["reference_input_space"] else "normalized"
        images = state.images.detach()
        if not cfg["reference_input_space"]:  # stored in the data set's statistics
            images = renormalize(images, (ctx.mean, ctx.std), (source.mean, source.std))
        distilled = self.make_set(
            source, images, state.targets, indices=state.indices, input_space=space,
            steps=state.step, loss_curve=curve, loss_curve_every=every,
            untrained_step_fraction=state.untrained_steps / max(state.step, 1),
            input_stats={"mean": list(ctx.mean), "std": list(ctx.std)})
        if cfg["reference_input_space"]:
            distilled.mean = (0.0,) * distilled.channels
            distilled.std = (1.0,) * distilled.channels
        return distilled

    # ------------------------------------------------------------------ state

    def _stats_context(self, ctx: MethodContext) -> MethodContext:
        """``ctx``, or with ``input_stats="krrst"`` the same pixels re-normalised with
        KRR-ST's statistics of the source data set (a separate cache namespace for the
        teacher views)."""
        if self.config["input_stats"] == "dataset":
            return ctx
        stats = lookup(KRRST_STATS, ctx.source, "method 'krrst' input_stats='krrst' (KRR-ST's "
                                                "data/augmentation.py)")
        if stats == (tuple(ctx.mean), tuple(ctx.std)):
            return ctx
        key = ArtifactCache.key("krrst-stats", {"mean": stats[0], "std": stats[1]},
                                {"representations": ctx.inputs_key})
        return replace(ctx, images=renormalize(ctx.images, (ctx.mean, ctx.std), stats),
                       mean=stats[0], std=stats[1], inputs_key=key)

    def _teacher(self, ctx: MethodContext, teacher: nn.Module) -> nn.Module:
        """``teacher``, or on the CPU a channels-last copy if ``teacher_channels_last``."""
        if self.config["teacher_channels_last"] and ctx.device.type == "cpu":
            teacher = copy.deepcopy(teacher).to(memory_format=torch.channels_last)
        return teacher

    def _views(self, ctx: MethodContext) -> TeacherViews:
        """The cached ``teacher_views`` views of ``ctx.images`` (computed on a miss with the
        teacher the faithful path would use)."""
        assert ctx.load_teacher is not None
        load = ctx.load_teacher
        channels_last = self.config["teacher_channels_last"] and ctx.device.type == "cpu"
        return ensure_views(ctx, self.config["teacher_views"], CROP_PADDING, channels_last,
                            lambda: self._teacher(ctx, load()))

    def rough_passes(self, budget: int,
                     pool: int) -> dict[str, tuple[str, dict[str, Any], float, int]]:
        """Each outer step passes the real batch and the set forward and backward through a
        pool model, then the set again for that model's online step (the model's default
        widths stand in for ``widths="auto"``; the teacher's targets are not counted)."""
        cfg = self.config
        options: dict[str, Any] = {}
        if cfg["width"]:
            options["width"] = cfg["width"]
        elif cfg["widths"] not in ("auto", ""):
            options["widths"] = parse_widths(cfg["widths"])
        if cfg["norm"]:
            options["norm"] = cfg["norm"]
        return {"distilled": (cfg["model"], options,
                              cfg["outer_steps"] * (cfg["real_batch"] + 2 * budget),
                              cfg["real_batch"] + budget)}

    def _build(self, ctx: MethodContext, seed: int) -> Encoder:
        cfg = self.config
        kwargs: dict[str, Any] = {}
        if cfg["width"]:
            kwargs["width"] = cfg["width"]
        elif cfg["widths"] == "auto" and cfg["model"] == "convnet":
            kwargs["widths"] = reference_widths(int(ctx.images.shape[-1]))
        elif cfg["widths"] not in ("auto", ""):
            kwargs["widths"] = parse_widths(cfg["widths"])
        if cfg["norm"]:
            kwargs["norm"] = cfg["norm"]
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = create_model(cfg["model"], in_channels=int(ctx.images.shape[1]),
                                 image_size=int(ctx.images.shape[-1]),
                                 out_dim=int(ctx.targets.shape[1]), **kwargs)
        return model.to(ctx.device)

    def _state(self, ctx: MethodContext, images: Tensor, targets: Tensor,
               generator: torch.Generator, indices: list[int]) -> _State:
        cfg = self.config
        images, targets = (to_device(t.detach(), ctx.device).clone().requires_grad_(True)
                           for t in (images, targets))
        if cfg["outer_optimizer"] == "adam":
            opt: torch.optim.Optimizer = torch.optim.Adam([images, targets], lr=cfg["outer_lr"])
        else:
            opt = torch.optim.SGD([images, targets], lr=cfg["outer_lr"], momentum=0.5)
        pool = ModelPool(lambda seed: self._build(ctx, seed), cfg, generator)
        batches = RealBatches(len(ctx.images), cfg["real_batch"], generator)
        return _State(images, targets, opt, generator, pool, batches, 0, [], 0, indices)

    def _initial_state(self, ctx: MethodContext) -> _State:
        """X_s = the ``random`` method's subset for this seed, Y_s = its teacher targets
        (§2.7; recomputed by the teacher when ``input_stats`` changed the normalisation);
        then the pool's warm-up (§2.5)."""
        generator = torch.Generator().manual_seed(ctx.seed)
        idx = torch.randperm(len(ctx.images), generator=generator)[: ctx.budget]
        images = ctx.images[idx]
        targets = ctx.targets[idx]
        if self.config["input_stats"] != "dataset" and ctx.load_teacher is not None:
            teacher = ctx.load_teacher()
            with torch.no_grad():
                targets = torch.cat([teacher.features(images[i:i + 256].to(ctx.device)).cpu()
                                     for i in range(0, len(images), 256)])
        if self.config["reference_input_space"]:
            mean, std = (torch.tensor(v).view(1, -1, 1, 1) for v in (ctx.mean, ctx.std))
            images = images * std + mean
        state = self._state(ctx, images, targets, generator, idx.tolist())
        state.pool.warm_up(state.images.detach(), state.targets.detach())
        return state

    def _resume(self, ctx: MethodContext, snap: dict[str, Any]) -> _State:
        """The snapshot's state (loaded on the host), checked against this run: the learned
        set, the pool and the optimisers' states go to ``ctx.device``; the generator state and
        the batch order stay on the host, where they are used. Raises ``ValueError`` (or
        torch's errors) when it does not fit."""
        cfg, n = self.config, len(ctx.images)
        check_rows(snap["images"], ctx.images, ctx.budget, "images")
        check_rows(snap["targets"], ctx.targets, ctx.budget, "targets")
        check_ints(snap["indices"], "indices", ctx.budget, 0, n)
        check_progress(snap["step"], snap["losses"], cfg["outer_steps"])
        if not 0 <= snap["untrained_steps"] <= snap["step"]:
            raise ValueError(f"untrained_steps {snap['untrained_steps']} is out of range")
        perm, position = snap["batches"].get("perm"), snap["batches"].get("position")
        if not (isinstance(perm, Tensor) and perm.dtype == torch.long and perm.shape == (n,)
                and torch.equal(perm.sort().values, torch.arange(n))
                and type(position) is int and 0 <= position <= n):
            raise ValueError(f"the real batches are not a permutation of {n} and a position")
        generator = torch.Generator()
        state = self._state(ctx, snap["images"], snap["targets"], generator, snap["indices"])
        check_optimizer(snap["optimizer"], state.optimizer, "optimizer")
        state.optimizer.load_state_dict(snap["optimizer"])
        state.pool.load_state_dict(snap["pool"])
        state.batches.load_state_dict(snap["batches"])
        state.step, state.losses = snap["step"], snap["losses"]
        state.untrained_steps = snap["untrained_steps"]
        generator.set_state(snap["generator"])  # after building the pool, which draws from it
        set_rng_state(snap["rng"])
        return state

    # ------------------------------------------------------------------ one outer step

    def _step(self, ctx: MethodContext, teacher: nn.Module | None, state: _State, mean: Tensor,
              std: Tensor, views: TeacherViews | None = None,
              images: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """§2.9, one iteration, without a host read; returns, on the device, the outer loss
        before the update and whether the images and targets are finite after it
        (:meth:`_check` reads them). ``images``: the real images, on the device when they
        fit there (default ``ctx.images``). With ``views`` (``teacher_views`` mode) the
        augmented batch and its targets come from the stored views; ``teacher`` is then
        unused."""
        cfg = self.config
        i = state.pool.sample()
        model = state.pool.models[i]
        model.eval()
        idx = state.batches.next()
        if views is not None:
            real, y_t = views.batch(ctx.images, idx, mean, std, state.generator)
        else:
            assert teacher is not None
            images = ctx.images if images is None else images
            if images.device == ctx.device:
                real = images[to_device(idx, ctx.device)]
            else:
                real = to_device(images[idx], ctx.device)
            if cfg["augment"]:
                real = crop_flip(real, mean, std, CROP_PADDING, state.generator)
            with torch.no_grad():
                y_t = teacher.features(real)
        with torch.no_grad():
            phi_t = with_bias(model.features(real))
        phi_s = with_bias(model.features(state.images))
        y_hat = krr_predict(phi_s, phi_t, state.targets, cfg["ridge"])
        loss = F.mse_loss(y_hat, y_t)
        grads = torch.autograd.grad(loss, [state.images, state.targets])
        state.images.grad, state.targets.grad = grads
        for group in state.optimizer.param_groups:  # LinearLR(1 -> final_lr_factor), §2.6
            group["lr"] = outer_lr_at(cfg["outer_lr"], cfg["final_lr_factor"], state.step,
                                      cfg["outer_steps"])
        state.optimizer.step()
        state.optimizer.zero_grad(set_to_none=True)
        with torch.no_grad():
            finite = torch.isfinite(state.images).all() & torch.isfinite(state.targets).all()
        state.untrained_steps += state.pool.since_init[i] == 0
        state.pool.update(i, state.images.detach(), state.targets.detach())
        return loss.detach(), finite

    def _check(self, ctx: MethodContext, state: _State, records: list[list[float]]) -> None:
        """Read the records of the steps just run (the last ``len(records)``): append their
        losses, or raise at the first that diverged."""
        first = state.step - len(records)
        for n, (loss, finite) in enumerate(records, start=first + 1):
            if not math.isfinite(loss):
                raise self._diverged(ctx, n, f"the outer loss is {loss}")
            if not finite:
                raise self._diverged(ctx, n, "the images or targets are not finite")
            state.losses.append(loss)

    def _diverged(self, ctx: MethodContext, step: int, what: str) -> UserError:
        every = self.config["snapshot_every"]
        return UserError(
            f"krrst diverged at outer step {step}: {what}; lower outer_lr (now "
            f"{self.config['outer_lr']:g}); the last good snapshot (step "
            f"{(step - 1) // every * every}) is kept in {ctx.scratch / SNAPSHOT_FILE}")
