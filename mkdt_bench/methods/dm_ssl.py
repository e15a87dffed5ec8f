"""``dm-ssl``: distribution matching (Zhao & Bilen, WACV 2023) adapted to SSL, the
"DM adapted to SSL" baseline of MKDT's appendix (spec ``mkdt.md`` §5 item 8; that table's
content is not public, so the adaptation below is this harness's).

DM learns synthetic images whose mean embedding under randomly initialised networks
matches that of real images, class by class. Without labels:

- groups: the latent classes of the SSL setting, k-means clusters of the teacher's
  representations (``clusters``; 1 matches the whole pool at once). Each synthetic image
  belongs to the cluster of the real image it starts from.
- per iteration: a freshly initialised encoder (the student ConvNet, frozen), and for each
  cluster holding synthetic images, a random real batch of that cluster; loss = sum over
  clusters of ||mean f(real) - mean f(synthetic)||² (DM, Eq. 4), minimised over the images
  by SGD (DM: lr 1, momentum 0.5). Real and synthetic batches get the same random crop and
  flip draws, as DM's siamese augmentation (DSA) does; the other DSA transformations
  (colour, scale, rotation, cutout) are not implemented.
- targets: the learned images are no longer the real images whose teacher targets they
  started with, so the set's targets are the teacher's representations of the final images:
  the minimiser of ||Y - g*(X)||² over Y (regressing the targets onto the teacher's view of
  their images), computed exactly instead of by gradient steps.

The images start as the ``random`` subset of the seed. The run snapshots every
``snapshot_every`` iterations into ``ctx.scratch`` and resumes from there bit-identically.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from mkdt_bench.augment import apply_crop_flip, draw_crop_flip
from mkdt_bench.cache import atomic_torch_save
from mkdt_bench.distilled import DistilledSet
from mkdt_bench.errors import UserError
from mkdt_bench.methods._coreset import kmeans
from mkdt_bench.methods.base import Method, MethodContext
from mkdt_bench.methods.registry import register_method
from mkdt_bench.models import Encoder, create_model
from mkdt_bench.options import Interval, Opt
from mkdt_bench.safeload import check_ints, check_optimizer, check_progress, check_rows, resume
from mkdt_bench.seeding import rng_state, set_rng_state
from mkdt_bench.teachers.encoder import encode

SNAPSHOT_FILE = "dm_state.pt"
#: The parts of a resume snapshot and their types (tensors and plain data only).
_SNAPSHOT_KEYS: dict[str, type | tuple[type, ...]] = {
    "images": Tensor, "optimizer": dict, "generator": Tensor, "iteration": int,
    "losses": list, "indices": list, "rng": dict}


def crop_padding(image_size: int) -> int:
    """DSA's crop shifts by up to 1/8 of the side (4 px at 32 px); at least 1 px."""
    return max(1, round(image_size / 8))


@dataclass
class _State:
    images: Tensor
    optimizer: torch.optim.SGD
    generator: torch.Generator
    iteration: int
    losses: list[float]
    indices: list[int]

    def save(self, path: Path) -> None:
        atomic_torch_save({"images": self.images.detach(),
                           "optimizer": self.optimizer.state_dict(),
                           "generator": self.generator.get_state(), "iteration": self.iteration,
                           "losses": self.losses, "indices": self.indices, "rng": rng_state()},
                          path)


@register_method("dm-ssl")
class DistributionMatchingSSL(Method):
    """Distribution matching of random-network embeddings, per latent class, with teacher
    targets of the learned images (module doc); defaults = DM's CIFAR setting. Needs the
    teacher (the final targets).
    """

    options = {
        "model": Opt("convnet", None, "the randomly initialised embedding network (DM: "
                                      "ConvNet)"),
        "width": Opt(128, Interval(int, 0, None, note="0 = the model's default"),
                     "its width (DM: 128)"),
        "norm": Opt("", None, "its normalisation (DM: instance norm; \"\" = the model's "
                              "default)"),
        "clusters": Opt(10, Interval(int, 1, None),
                        "latent classes, k-means of the teacher representations; DM matches "
                        "per class (10 for CIFAR-10, 100 for CIFAR-100, 200 for Tiny)"),
        "iterations": Opt(20_000, Interval(int, 1, None), "DM's SGD steps on the images"),
        "lr_img": Opt(1.0, Interval(float, 0, None, closed="neither"), "SGD lr of the images"),
        "momentum": Opt(0.5, Interval(float, 0, 1, closed="left"), "SGD momentum"),
        "real_batch": Opt(256, Interval(int, 1, None),
                          "real images per cluster and iteration (DM's batch_real)"),
        "augment": Opt("crop_flip", ("crop_flip", "none"),
                       "siamese random crop (shift up to 1/8 of the side) + flip of real and "
                       "synthetic batches, the part of DSA implemented here"),
        "snapshot_every": Opt(1000, Interval(int, 1, None),
                              "resumable state interval (ctx.scratch)"),
    }
    resumable = True
    cost_options = ("iterations",)
    test_options = {"width": 8, "clusters": 2, "iterations": 4, "real_batch": 8,
                    "snapshot_every": 2}

    def rough_passes(self, budget: int,
                     pool: int) -> dict[str, tuple[str, dict[str, Any], float, int]]:
        """Each iteration embeds ``real_batch`` real images per cluster (forward only, a
        third of a pass) and passes the set forward and backward."""
        cfg = self.config
        options = {k: cfg[k] for k in ("width", "norm") if cfg[k]}
        return {"distilled": (cfg["model"], options, cfg["iterations"] * (
            cfg["clusters"] * cfg["real_batch"] / 3 + budget), cfg["real_batch"])}

    def distill(self, ctx: MethodContext) -> DistilledSet:
        cfg = self.config
        if cfg["clusters"] > len(ctx.images):
            raise UserError(f"method 'dm-ssl': clusters={cfg['clusters']} is larger than the "
                            f"{len(ctx.images)} training images; lower it")
        if ctx.load_teacher is None:
            raise UserError("method 'dm-ssl' needs the teacher (targets of the learned "
                            "images) but the context has none")
        clusters = self._clusters(ctx)
        path = ctx.scratch / SNAPSHOT_FILE
        state = resume(path, _SNAPSHOT_KEYS, lambda snap: self._resume(ctx, snap))
        if state is None:
            state = self._initial_state(ctx)
            state.save(path)
        syn_clusters = clusters[torch.tensor(state.indices, dtype=torch.long)]
        groups = [(members, (syn_clusters == c).nonzero().squeeze(1))
                  for c, members in enumerate(self._members(clusters, cfg["clusters"]))]
        groups = [(real, syn) for real, syn in groups if len(syn)]
        bar = ctx.progress.bar(cfg["iterations"], "dm-ssl", initial=state.iteration)
        while state.iteration < cfg["iterations"]:
            loss = self._step(ctx, state, groups)
            state.losses.append(loss)
            state.iteration += 1
            if state.iteration % cfg["snapshot_every"] == 0 or state.iteration == cfg["iterations"]:
                state.save(path)
                bar.set_postfix(loss=f"{loss:.4f}")
            bar.update(1)
        bar.close()
        images = state.images.detach()
        targets = encode(ctx.load_teacher(), images, ctx.device)
        every = cfg["snapshot_every"]
        curve = [sum(state.losses[i:i + every]) / len(state.losses[i:i + every])
                 for i in range(0, len(state.losses), every)]
        return self.make_set(ctx, images, targets, indices=state.indices,
                             iterations=state.iteration, loss_curve=curve,
                             loss_curve_every=every, cluster=syn_clusters.tolist())

    # ------------------------------------------------------------------ state

    def _clusters(self, ctx: MethodContext) -> Tensor:
        """Each training image's latent class (all 0 for ``clusters = 1``)."""
        if self.config["clusters"] == 1:
            return torch.zeros(len(ctx.images), dtype=torch.long)
        return kmeans(ctx.targets.detach().float().cpu(), self.config["clusters"], ctx.seed)[0]

    @staticmethod
    def _members(clusters: Tensor, k: int) -> list[Tensor]:
        return [(clusters == c).nonzero().squeeze(1) for c in range(k)]

    def _state(self, images: Tensor, generator: torch.Generator, indices: list[int],
               device: torch.device) -> _State:
        images = images.detach().clone().to(device).requires_grad_(True)
        opt = torch.optim.SGD([images], lr=self.config["lr_img"],
                              momentum=self.config["momentum"])
        return _State(images, opt, generator, 0, [], indices)

    def _initial_state(self, ctx: MethodContext) -> _State:
        """The ``random`` subset of the seed (DM initialises from real images)."""
        generator = torch.Generator().manual_seed(ctx.seed)
        idx = torch.randperm(len(ctx.images), generator=generator)[: ctx.budget]
        return self._state(ctx.images[idx], generator, idx.tolist(), ctx.device)

    def _resume(self, ctx: MethodContext, snap: dict[str, Any]) -> _State:
        """The snapshot's state (loaded on the host), checked against this run, the images
        and their optimiser's state on ``ctx.device``; raises ``ValueError`` (or torch's
        errors) when it does not fit."""
        check_rows(snap["images"], ctx.images, ctx.budget, "images")
        check_ints(snap["indices"], "indices", ctx.budget, 0, len(ctx.images))
        check_progress(snap["iteration"], snap["losses"], self.config["iterations"])
        generator = torch.Generator()
        generator.set_state(snap["generator"])
        state = self._state(snap["images"], generator, snap["indices"], ctx.device)
        check_optimizer(snap["optimizer"], state.optimizer, "optimizer")
        state.optimizer.load_state_dict(snap["optimizer"])
        state.iteration, state.losses = snap["iteration"], snap["losses"]
        set_rng_state(snap["rng"])
        return state

    def _network(self, ctx: MethodContext, seed: int) -> Encoder:
        """A freshly initialised, frozen embedding network."""
        cfg = self.config
        kwargs: dict[str, Any] = {}
        if cfg["width"]:
            kwargs["width"] = cfg["width"]
        if cfg["norm"]:
            kwargs["norm"] = cfg["norm"]
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            net = create_model(cfg["model"], in_channels=int(ctx.images.shape[1]),
                               image_size=int(ctx.images.shape[-1]), out_dim=1, **kwargs)
        return net.to(ctx.device).train().requires_grad_(False)

    # ------------------------------------------------------------------ one iteration

    def _step(self, ctx: MethodContext, state: _State,
              groups: list[tuple[Tensor, Tensor]]) -> float:
        """DM's iteration: one random network, the summed squared distance between the mean
        embeddings of each cluster's real batch and synthetic images; one SGD step."""
        cfg = self.config
        seed = int(torch.randint(2**31 - 1, (1,), generator=state.generator))
        net = self._network(ctx, seed)
        mean, std = (torch.tensor(v, device=ctx.device).view(1, -1, 1, 1)
                     for v in (ctx.mean, ctx.std))
        padding = crop_padding(int(ctx.images.shape[-1]))
        loss = torch.zeros((), device=ctx.device)
        for real_members, syn_positions in groups:
            pick = torch.randperm(len(real_members), generator=state.generator)
            real = ctx.images[real_members[pick[: cfg["real_batch"]]]].to(ctx.device)
            syn = state.images[syn_positions.to(ctx.device)]
            if cfg["augment"] == "crop_flip":  # the same draws for both batches (siamese)
                offsets, flips = draw_crop_flip(max(len(real), len(syn)), padding,
                                                state.generator)
                real = apply_crop_flip(real, mean, std, padding, offsets[: len(real)],
                                       flips[: len(real)])
                syn = apply_crop_flip(syn, mean, std, padding, offsets[: len(syn)],
                                      flips[: len(syn)])
            with torch.no_grad():
                target = net.features(real).mean(0)
            loss = loss + (target - net.features(syn).mean(0)).pow(2).sum()
        value = loss.item()
        if not math.isfinite(value):
            every = cfg["snapshot_every"]
            raise UserError(
                f"dm-ssl diverged at iteration {state.iteration + 1}: the loss is {value}; "
                f"lower lr_img (now {cfg['lr_img']:g}); the last good snapshot (iteration "
                f"{state.iteration // every * every}) is kept in {ctx.scratch / SNAPSHOT_FILE}")
        state.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        state.optimizer.step()
        return value
