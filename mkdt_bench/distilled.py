"""DistilledSet: what every method returns and every evaluator consumes.

On disk a set is a directory with ``images.pt`` (N x C x H x W float, square, normalised
as declared), ``targets.pt`` (N x D float), optionally ``lr.pt`` (a 0-d tensor: the learned
pre-training learning rate) and ``distilled.json`` (the metadata below). A set may come
from anyone: :meth:`DistilledSet.load` reads the tensors weights-only (:mod:`.safeload`)
and refuses, in one UserError naming the file, anything of another type, shape or dtype,
and metadata that disagrees with the tensors (issue 29 §1, §5).

A set with an ``ssl_recipe`` has no targets (N x 0): it is pre-trained with that SSL
objective on two augmented views of each image instead of by regression (``random-ssl``).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from mkdt_bench import safeload
from mkdt_bench.errors import UserError

META_FILE = "distilled.json"


@dataclass
class DistilledSet:
    """A (possibly synthetic) pre-training set with regression targets.

    Attributes:
        images: ``N x C x H x W`` float images in the normalised space of ``mean``/``std``.
        targets: ``N x D`` target representations (teacher features or learned ones).
        lr: learned pre-training learning rate (MKDT's eta), or ``None``.
        source: name of the data set the images come from.
        mean, std: per-channel normalisation the images are expressed in.
        method: name of the method that produced the set.
        config_hash: hash of the method's resolved config and inputs.
        extra: free-form method metadata (indices of chosen images, loss curves, ...).
        ssl_recipe: for a set without targets, the SSL pre-training recipe (the
            ``[teacher]`` keys ``ssl``, ``proj_dim``, ``bt_lambda``, ``temperature``,
            ``min_scale``, ``cj_strength``, ``gaussian_blur``, ``hf_prob``); ``None`` for a
            set pre-trained by regression onto its targets.
    """

    images: Tensor
    targets: Tensor
    lr: float | None
    source: str
    mean: tuple[float, ...]
    std: tuple[float, ...]
    method: str
    config_hash: str = ""
    extra: dict[str, Any] = field(default_factory=dict)
    ssl_recipe: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        if self.images.ndim != 4 or min(self.images.shape[1:]) < 1:
            raise UserError(f"distilled images must be N x C x H x W, got shape "
                            f"{tuple(self.images.shape)}")
        if self.images.shape[-2] != self.images.shape[-1]:
            raise UserError(f"distilled images must be square (H = W), got shape "
                            f"{tuple(self.images.shape)}")
        if len(self.mean) != self.channels or len(self.std) != self.channels:
            raise UserError(f"distilled set from {self.method!r}: mean/std have "
                            f"{len(self.mean)}/{len(self.std)} values for {self.channels}-"
                            "channel images; give one per channel")
        if self.targets.ndim != 2 or len(self.targets) != len(self.images):
            raise UserError(f"distilled targets must be N x D with N = {len(self.images)} "
                            f"images, got shape {tuple(self.targets.shape)}")
        if not (torch.isfinite(self.images).all() and torch.isfinite(self.targets).all()):
            raise UserError(f"distilled set from {self.method!r} contains NaN or infinite values")
        if self.lr is not None and not (self.lr > 0 and self.lr < float("inf")):
            raise UserError(f"distilled learning rate must be positive and finite, got {self.lr}")
        if self.ssl_recipe is not None and self.targets.shape[1] != 0:
            raise UserError(f"a distilled set with an SSL recipe has no targets (N x 0), got "
                            f"shape {tuple(self.targets.shape)}")

    def __len__(self) -> int:
        return len(self.images)

    @property
    def image_size(self) -> int:
        return int(self.images.shape[-1])

    @property
    def channels(self) -> int:
        return int(self.images.shape[1])

    @property
    def storage_bytes(self) -> int:
        """Bytes of images + targets + lr, as the budget columns count them."""
        n = self.images.numel() * self.images.element_size()
        n += self.targets.numel() * self.targets.element_size()
        return n + (4 if self.lr is not None else 0)

    def metadata(self) -> dict[str, Any]:
        meta = {k: v for k, v in asdict(self).items() if k not in ("images", "targets")
                and not (k == "ssl_recipe" and v is None)}  # target sets: as before the field
        meta.update(num_images=len(self), image_size=self.image_size, channels=self.channels,
                    target_dim=int(self.targets.shape[1]))
        return meta

    def save(self, directory: str | Path) -> Path:
        """Write the tensors and the JSON manifest into ``directory`` (created if needed)."""
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        torch.save(self.images.detach().cpu().contiguous(), d / "images.pt")
        torch.save(self.targets.detach().cpu().contiguous(), d / "targets.pt")
        if self.lr is not None:
            torch.save(torch.tensor(float(self.lr)), d / "lr.pt")
        (d / META_FILE).write_text(json.dumps(self.metadata(), indent=1, default=str))
        return d

    @classmethod
    def load(cls, directory: str | Path) -> DistilledSet:
        """Read a set written by :meth:`save` (or handed over: nothing in it can run code,
        issue 29 §1); a missing, unreadable or malformed file is a UserError naming it and
        what was expected."""
        d = Path(directory)
        if not d.is_dir():
            raise UserError(f"distilled set {str(d)!r} is not a directory; expected one "
                            f"holding images.pt, targets.pt, {META_FILE} and optionally lr.pt")
        for name in (META_FILE, "images.pt", "targets.pt"):
            if not (d / name).is_file():
                raise UserError(f"distilled set {str(d)!r} has no {name}; expected images.pt, "
                                f"targets.pt, {META_FILE} and optionally lr.pt")
        meta = _read_meta(d / META_FILE)
        images = _read_tensor(d / "images.pt", "N x C x H x W floating-point images", 4)
        targets = _read_tensor(d / "targets.pt", "N x D floating-point targets", 2)
        lr = _read_lr(d / "lr.pt") if (d / "lr.pt").is_file() else None
        recipe = meta.get("ssl_recipe")
        try:
            distilled = cls(images=images, targets=targets, lr=lr, source=meta["source"],
                            mean=tuple(meta["mean"]), std=tuple(meta["std"]),
                            method=meta["method"], config_hash=meta.get("config_hash", ""),
                            extra=meta.get("extra", {}),
                            ssl_recipe=None if recipe is None else _checked_recipe(recipe))
        except UserError as e:
            raise UserError(f"distilled set {str(d)!r}: {e}") from None
        _check_declared(d, meta, distilled)
        return distilled


#: The keys of ``distilled.json`` a set needs, with their JSON types (the others optional).
_REQUIRED_META = {"source": str, "mean": list, "std": list, "method": str}
_OPTIONAL_META = {"config_hash": str, "extra": dict, "ssl_recipe": (dict, type(None))}
#: Keys :meth:`DistilledSet.metadata` derives from the tensors; checked where present.
_DERIVED_META = ("num_images", "channels", "image_size", "target_dim")


def _read_meta(path: Path) -> dict[str, Any]:
    """``distilled.json`` as a dict with the required keys of the right types."""
    try:
        meta = json.loads(path.read_bytes())
    except (OSError, ValueError, RecursionError) as e:
        raise UserError(f"{str(path)!r} is not readable JSON ({type(e).__name__}); expected "
                        "the object DistilledSet.save writes") from None
    if not isinstance(meta, dict):
        raise UserError(f"{str(path)!r} holds a JSON {type(meta).__name__}, not an object "
                        f"with the keys {', '.join(_REQUIRED_META)}")
    if _depth(meta) > _MAX_META_DEPTH:  # copying or saving it would exceed the recursion limit
        raise UserError(f"{str(path)!r} nests objects or lists more than {_MAX_META_DEPTH} "
                        "deep; expected the object DistilledSet.save writes")
    for key, kind in {**_REQUIRED_META, **_OPTIONAL_META}.items():
        if key not in meta:
            if key in _REQUIRED_META:
                raise UserError(f"{str(path)!r} has no {key!r}; expected the keys "
                                f"{', '.join(_REQUIRED_META)}")
        elif not isinstance(meta[key], kind):
            raise UserError(f"{str(path)!r}: {key!r} is a JSON {type(meta[key]).__name__}, "
                            f"expected {_json_kind(kind)}")
    for key in ("mean", "std"):
        values = meta[key]
        if not values or not all(_is_finite(v) for v in values):
            raise UserError(f"{str(path)!r}: {key!r} is {_short(values)}, expected a list of "
                            "finite numbers, one per image channel")
    if not all(v > 0 for v in meta["std"]):
        raise UserError(f"{str(path)!r}: 'std' is {_short(meta['std'])}, expected positive "
                        "numbers")
    return meta


_MAX_META_DEPTH = 32


def _depth(value: Any) -> int:
    """How deep ``value`` nests dicts and lists (1 for a scalar), without recursion."""
    deepest, todo = 0, [(value, 1)]
    while todo:
        item, level = todo.pop()
        deepest = max(deepest, level)
        if deepest > _MAX_META_DEPTH:
            break
        children = item.values() if isinstance(item, dict) else item if isinstance(
            item, list) else ()
        todo.extend((child, level + 1) for child in children)
    return deepest


def _read_tensor(path: Path, expected: str, ndim: int) -> Tensor:
    """The floating-point tensor of ``ndim`` dimensions in ``path``, as float32."""
    value = safeload.load(path, map_location="cpu")
    if not isinstance(value, Tensor):
        raise UserError(f"{str(path)!r} holds a {type(value).__name__}, not a tensor; "
                        f"expected {expected}")
    if value.layout != torch.strided or value.is_quantized or not value.dtype.is_floating_point:
        raise UserError(f"{str(path)!r} holds a {value.dtype} tensor ({value.layout}); "
                        f"expected {expected}")
    if value.ndim != ndim:
        raise UserError(f"{str(path)!r} holds a tensor of shape {tuple(value.shape)}; "
                        f"expected {expected}")
    return value.detach().float().contiguous()


def _read_lr(path: Path) -> float:
    """The learned learning rate in ``lr.pt``: one finite positive number."""
    value = safeload.load(path, map_location="cpu")
    if (not isinstance(value, Tensor) or value.numel() != 1 or value.dtype.is_complex
            or value.dtype == torch.bool or value.layout != torch.strided):
        shown = (f"a {value.dtype} tensor of shape {tuple(value.shape)}"
                 if isinstance(value, Tensor) else f"a {type(value).__name__}")
        raise UserError(f"{str(path)!r} holds {shown}; expected one number (a 0-d tensor), "
                        "the learned pre-training learning rate")
    lr = float(value.reshape(()))
    if not (lr > 0 and math.isfinite(lr)):
        raise UserError(f"{str(path)!r} holds the learning rate {lr}; expected a positive, "
                        "finite number")
    return lr


def _check_declared(d: Path, meta: dict[str, Any], distilled: DistilledSet) -> None:
    """What ``distilled.json`` says about the tensors (written by :meth:`DistilledSet.save`)
    agrees with them: a set whose files were swapped, or that lost its ``lr.pt``, is refused."""
    have = {"num_images": len(distilled), "channels": distilled.channels,
            "image_size": distilled.image_size, "target_dim": int(distilled.targets.shape[1])}
    lr = distilled.lr
    for key in _DERIVED_META:
        if key in meta and not (_is_number(meta[key]) and meta[key] == have[key]):
            raise UserError(f"distilled set {str(d)!r}: {META_FILE} declares {key} "
                            f"{_short(meta[key])} but the tensors have {have[key]}")
    declared = meta.get("lr")
    if declared is None:
        return
    if not _is_finite(declared):
        raise UserError(f"distilled set {str(d)!r}: {META_FILE} declares lr "
                        f"{_short(declared)}; expected a number or null")
    if lr is None:
        raise UserError(f"distilled set {str(d)!r}: {META_FILE} declares the learning rate "
                        f"{declared} but lr.pt is missing")
    if not math.isclose(lr, declared, rel_tol=1e-6):
        raise UserError(f"distilled set {str(d)!r}: {META_FILE} declares the learning rate "
                        f"{declared} but lr.pt holds {lr}")


def _checked_recipe(recipe: dict[str, Any]) -> dict[str, Any]:
    """An SSL recipe with exactly the ``random-ssl`` keys, each valid as that method's option."""
    from mkdt_bench.methods.random_ssl import RECIPE_KEYS, RandomSubsetSSL

    if set(recipe) != set(RECIPE_KEYS):
        raise UserError(f"{META_FILE}: 'ssl_recipe' has the keys "
                        f"{', '.join(sorted(recipe)) or '(none)'}; expected "
                        f"{', '.join(RECIPE_KEYS)}")
    return dict(RandomSubsetSSL(**recipe).config)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_finite(value: Any) -> bool:
    """A JSON number that is a finite float (``1e999`` and 400-digit integers are not)."""
    try:
        return _is_number(value) and math.isfinite(float(value))
    except OverflowError:
        return False


def _json_kind(kind: type | tuple[type, ...]) -> str:
    names = {str: "a string", list: "a list", dict: "an object", type(None): "null"}
    return " or ".join(names[k] for k in (kind if isinstance(kind, tuple) else (kind,)))


def _short(value: Any) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) <= 60 else text[:57] + "..."


def check_compatible(distilled: DistilledSet, channels: int, image_size: int,
                     mean: tuple[float, ...], std: tuple[float, ...], data_name: str,
                     where: str) -> None:
    """UserError unless ``distilled`` has the data's image shape and normalisation."""
    have = f"{distilled.channels}x{distilled.image_size}x{distilled.image_size}"
    want = f"{channels}x{image_size}x{image_size}"
    if have != want:
        raise UserError(f"{where} holds {have} images but {data_name!r} has {want}; distil "
                        "(or resize) at the evaluation data's size")
    same = (len(distilled.mean) == len(mean)
            and torch.allclose(torch.tensor(distilled.mean), torch.tensor(mean), atol=1e-3)
            and torch.allclose(torch.tensor(distilled.std), torch.tensor(std), atol=1e-3))
    if not same:
        def fmt(v: tuple[float, ...]) -> str:
            return "(" + ", ".join(f"{x:.4f}" for x in v) + ")"

        raise UserError(f"{where} is normalised with mean {fmt(distilled.mean)}, std "
                        f"{fmt(distilled.std)} but {data_name!r} uses mean {fmt(mean)}, std "
                        f"{fmt(std)}; convert the images to the evaluation data's "
                        "normalisation")
