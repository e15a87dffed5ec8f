"""Reading torch files that nobody vouches for (issue 29 §1).

Every file the harness reads (cache artifacts, resume snapshots, distilled and imported sets,
converted files, teacher checkpoints, decoded-data caches) may have been written by someone
else: a shared cache is writable by all its users, a set is handed over by a colleague. So
every torch file is read here, with PyTorch's restricted unpickler (``weights_only=True``,
passed explicitly, which ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD`` does not override): a file can
hold tensors and plain data (dicts, lists, tuples, numbers, strings, None, ``OrderedDict``),
and nothing in it can run code. A file that cannot be read, or holds anything else, raises
:class:`UnreadableFileError` naming the file and the reason.

Resume snapshots go through :func:`resume`: a snapshot that is unreadable, refused or not
shaped as this run's (:func:`check_like` and friends) is treated as absent (moved aside, one
warning, the stage starts over). A file of a published cache artifact goes through
:func:`load_artifact`: a refused one makes the artifact corrupt (moved aside, recomputed by the
next run).
"""

from __future__ import annotations

import os
import pickle
import re
import time
import uuid
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import torch

from mkdt_bench.cache import CORRUPT_MARK
from mkdt_bench.errors import UserError

_TRUE = ("1", "y", "yes", "true")
_T = TypeVar("_T")


class UnreadableFileError(UserError):
    """A torch file that cannot be read or holds more than tensors and plain data.

    ``path`` is the file, ``reason`` why it was refused (one line); ``content`` is False when
    the file itself could not be opened (absent, not a regular file, no permission), True when
    what it holds is at fault.
    """

    def __init__(self, path: str | Path, reason: str, content: bool = True) -> None:
        super().__init__(f"{str(path)!r} cannot be loaded: {reason}")
        self.path = str(path)
        self.reason = reason
        self.content = content


def _refusal(e: pickle.UnpicklingError) -> str:
    """The restricted unpickler's reason, without its advice to lift the restriction."""
    found = re.search(r"GLOBAL ([\w.]+)", str(e))
    if found:
        return f"refused: it holds more than tensors and plain data (global {found[1]})"
    found = re.search(r"operand (\d+)", str(e))
    return "not a readable torch file" + (f" (pickle opcode {found[1]})" if found else "")


def load(path: str | Path, *, map_location: Any = None, mmap: bool = False) -> Any:
    """``torch.load(path, weights_only=True)`` whatever the environment says.

    Raises :class:`UnreadableFileError` (a :class:`UserError`) naming ``path`` when the file is
    missing, unreadable, truncated or refused by the restricted unpickler, and a plain
    :class:`UserError` when the environment forbids every load (both of PyTorch's
    ``TORCH_FORCE_*WEIGHTS_ONLY_LOAD`` variables set).
    """
    if all(os.getenv(v, "0").lower() in _TRUE for v in ("TORCH_FORCE_WEIGHTS_ONLY_LOAD",
                                                         "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD")):
        raise UserError("TORCH_FORCE_WEIGHTS_ONLY_LOAD and TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD are "
                        "both set, so PyTorch loads no file; unset "
                        "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD (files are always loaded weights-only)")
    if not Path(path).is_file():
        reason = "not a regular file" if Path(path).exists() else "no such file"
        raise UnreadableFileError(path, reason, content=False)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            value = torch.load(path, map_location=map_location, mmap=mmap, weights_only=True)
    except pickle.UnpicklingError as e:
        raise UnreadableFileError(path, _refusal(e)) from None
    except OSError as e:
        raise UnreadableFileError(path, e.strerror or type(e).__name__, content=False) from None
    except Exception as e:  # noqa: BLE001 - truncated, not a torch file, bad zip, bad storage
        reason = str(e).splitlines()[0][:200] if str(e) else ""
        raise UnreadableFileError(path, f"not a readable torch file ({type(e).__name__}"
                                        + (f": {reason})" if reason else ")")) from None
    try:
        _check_spans(value)
    except RecursionError:
        raise UnreadableFileError(path, "refused: it is nested too deeply") from None
    except _Oversized as e:
        raise UnreadableFileError(path, str(e)) from None
    return value


#: A tensor may span more bytes than its file stores (a broadcast, stride-0 view) by at most
#: this much: a 2 kB file must not make a copy of it allocate gigabytes.
_MAX_VIRTUAL_BYTES = 64 << 20


def _check_spans(value: Any) -> None:
    """Raise :class:`UnreadableFileError` for a strided tensor in ``value`` whose shape spans
    far more memory than its storage holds (``torch.zeros(1).expand(10**9)`` saved to a
    file: any ``.contiguous()`` or arithmetic on it would allocate gigabytes)."""
    if isinstance(value, torch.Tensor):
        if value.layout == torch.strided and not value.is_quantized:
            spans = value.numel() * value.element_size()
            stored = value.untyped_storage().nbytes()
            if spans > _MAX_VIRTUAL_BYTES and spans > 8 * stored:
                raise _Oversized(f"refused: a tensor of shape {tuple(value.shape)} "
                                 f"({spans:,} bytes) is a view of {stored:,} stored bytes")
    elif isinstance(value, Mapping):
        for item in value.values():
            _check_spans(item)
    elif isinstance(value, (list, tuple)):
        for item in value:
            _check_spans(item)


class _Oversized(Exception):
    """Raised by :func:`_check_spans`; :func:`load` turns it into UnreadableFileError."""


def load_artifact(path: Path, *, map_location: Any = None, mmap: bool = False) -> Any:
    """A file of a published cache artifact (``<root>/artifacts/<stage>/<key>/<name>``),
    :func:`load`-ed. A refused or unreadable one makes the artifact corrupt
    (:func:`corrupt_artifact`). One that cannot be opened (e.g. no permission) is left as it
    is."""
    try:
        return load(path, map_location=map_location, mmap=mmap)
    except UnreadableFileError as e:
        if not e.content:
            raise
        raise corrupt_artifact(path, e.reason) from None


def load_weights(model: torch.nn.Module, path: Path) -> None:
    """Load the state dict of a published artifact's file ``path`` into ``model``; one that is
    not a state dict of such a model makes the artifact corrupt (:func:`corrupt_artifact`)."""
    state = load_artifact(path, map_location="cpu")
    try:
        check_like(state, model.state_dict(), "the state dict")
        model.load_state_dict(state)
    except (ValueError, RuntimeError, TypeError) as e:
        raise corrupt_artifact(path, f"not the weights of this model ({e})") from None


def corrupt_artifact(path: Path, reason: str) -> UserError:
    """The error for a file of a published artifact that cannot be used (refused, or not
    what its stage stores): the artifact is moved aside as the cache does
    (``<key>.corrupt-<time>``), so that the next run computes it again."""
    artifact = path.parent
    aside = artifact.with_name(f"{artifact.name}{CORRUPT_MARK}{int(time.time())}-"
                               f"{uuid.uuid4().hex[:8]}")
    try:
        os.rename(artifact, aside)
        todo = f"moved to {aside}; rerun to compute it again"
    except OSError:
        todo = f"remove {artifact} and rerun to compute it again"
    return UserError(f"cache artifact file {str(path)!r} cannot be used: {reason}; {todo}")


def discard(path: Path, reason: str) -> None:
    """Move a refused file aside (``<name>.refused``, replacing an earlier one) with one
    warning naming it and why; the caller then starts over as if it were absent."""
    aside = path.with_name(path.name + ".refused")
    try:
        os.replace(path, aside)
        where = f"moved to {aside}"
    except OSError:
        where = "left in place"
    warnings.warn(f"ignored snapshot {path}: {reason}; {where}, starting over", stacklevel=3)


def load_snapshot(path: Path, expected: Mapping[str, type | tuple[type, ...]],
                  map_location: Any = "cpu") -> dict[str, Any] | None:
    """A resume snapshot, or None when there is none to resume from.

    A snapshot that cannot be read, is refused, is not a dict, or lacks one of the
    ``expected`` keys with a value of its type is :func:`discard`-ed and None returned.
    """
    if not path.is_file():
        return None
    try:
        state = load(path, map_location=map_location)
    except UnreadableFileError as e:
        discard(path, e.reason)
        return None
    if not isinstance(state, dict):
        discard(path, f"holds a {type(state).__name__}, not a snapshot")
        return None
    for key, kind in expected.items():
        if not isinstance(state.get(key), kind):
            discard(path, f"its {key!r} is missing or not a {_names(kind)}")
            return None
    return state


def resume(path: Path, expected: Mapping[str, type | tuple[type, ...]],
           apply: Callable[[dict[str, Any]], _T], map_location: Any = "cpu") -> _T | None:
    """``apply(snapshot)`` for the snapshot at ``path`` (:func:`load_snapshot`), or None when
    there is none to resume from (``apply`` must not return None).

    ``apply`` raising ``KeyError``, ``TypeError``, ``ValueError``, ``IndexError`` or
    ``RuntimeError`` (parts of other shapes, generator states of another size) discards the
    snapshot and gives None: the caller then rebuilds whatever ``apply`` may have changed and
    starts over.
    """
    state = load_snapshot(path, expected, map_location)
    if state is None:
        return None
    try:
        return apply(state)
    except torch.cuda.OutOfMemoryError:
        raise  # the device's fault, not the snapshot's: it stays for a run with more memory
    except (KeyError, TypeError, ValueError, IndexError, RuntimeError) as e:
        detail = str(e).splitlines()[0][:200] if str(e) else type(e).__name__
        discard(path, f"it does not fit this run ({detail})")
        return None


def check_like(value: Any, template: Any, what: str) -> None:
    """Raise ``ValueError`` unless ``value`` has ``template``'s structure: the same dict keys
    and sequence lengths, tensors of the same shape and dtype, numbers, flags, strings and
    None where ``template`` has them (a snapshot's part against a freshly built one's)."""
    if isinstance(template, torch.Tensor):
        if not (isinstance(value, torch.Tensor) and value.shape == template.shape
                and value.dtype == template.dtype):
            raise ValueError(f"{what} is not a {template.dtype} tensor of shape "
                             f"{tuple(template.shape)}")
    elif isinstance(template, Mapping):
        if not isinstance(value, Mapping) or set(value) != set(template):
            raise ValueError(f"{what} does not have the keys {sorted(map(str, template))}")
        for key, item in template.items():
            check_like(value[key], item, f"{what}[{key!r}]")
    elif isinstance(template, (list, tuple)):
        if not isinstance(value, (list, tuple)) or len(value) != len(template):
            raise ValueError(f"{what} is not a sequence of {len(template)}")
        for i, (v, t) in enumerate(zip(value, template)):
            check_like(v, t, f"{what}[{i}]")
    elif not _same_kind(value, template):
        raise ValueError(f"{what} is not a {type(template).__name__}")


def _same_kind(value: Any, template: Any) -> bool:
    if isinstance(template, bool) or template is None or isinstance(template, str):
        return type(value) is type(template)
    if isinstance(template, (int, float)):
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    return isinstance(value, type(template))


def check_optimizer(value: Any, opt: torch.optim.Optimizer, what: str) -> None:
    """Raise ``ValueError`` unless ``value`` is a state dict of ``opt``: its parameter groups
    like ``opt``'s, and per parameter only tensors of that parameter's shape (or scalars)."""
    fresh = opt.state_dict()
    if not isinstance(value, Mapping) or set(value) != {"state", "param_groups"}:
        raise ValueError(f"{what} is not an optimizer state dict")
    check_like(value["param_groups"], fresh["param_groups"], f"{what} parameter groups")
    params = [p for group in opt.param_groups for p in group["params"]]
    if not isinstance(value["state"], Mapping):
        raise ValueError(f"{what} state is not a dict")
    for i, entry in value["state"].items():
        if not (type(i) is int and 0 <= i < len(params) and isinstance(entry, Mapping)):
            raise ValueError(f"{what} has a state for parameter {i!r} of {len(params)}")
        for name, t in entry.items():
            if t is None or (isinstance(t, torch.Tensor) and t.dim() == 0):
                continue
            if not (isinstance(t, torch.Tensor) and t.shape == params[i].shape):
                raise ValueError(f"{what} {name!r} of parameter {i} is not a tensor of shape "
                                 f"{tuple(params[i].shape)}")


def check_rows(value: Any, like: torch.Tensor, rows: int, what: str) -> None:
    """Raise ``ValueError`` unless ``value`` is a floating-point tensor of ``rows`` rows of
    ``like``'s shape (a learned set against the real images it started from)."""
    shape = (rows, *like.shape[1:])
    if not (isinstance(value, torch.Tensor) and value.is_floating_point()
            and value.shape == shape):
        raise ValueError(f"{what} is not a floating-point tensor of shape {shape}")


def check_ints(value: Any, what: str, length: int | None, low: int, high: int) -> None:
    """Raise ``ValueError`` unless ``value`` is a list of ``length`` (any, for None) ints
    in ``[low, high)``."""
    if not (isinstance(value, list) and (length is None or len(value) == length)
            and all(type(v) is int and low <= v < high for v in value)):
        raise ValueError(f"{what} is not a list of {length or 'some'} integers in "
                         f"[{low}, {high})")


def check_progress(step: Any, losses: Any, total: int) -> None:
    """Raise ``ValueError`` unless ``step`` is an int in ``0..total`` and ``losses`` a list of
    ``step`` numbers (one per step done)."""
    if not (type(step) is int and 0 <= step <= total):
        raise ValueError(f"step {step!r} is not in 0..{total}")
    if not (isinstance(losses, list) and len(losses) == step
            and all(_same_kind(v, 0.0) for v in losses)):
        raise ValueError(f"losses are not a list of {step} numbers")


def _names(kind: type | tuple[type, ...]) -> str:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    return " or ".join(k.__name__ for k in kinds)


__all__ = ["UnreadableFileError", "check_ints", "check_like", "check_optimizer", "check_progress",
           "check_rows", "corrupt_artifact", "discard", "load", "load_artifact", "load_snapshot",
           "load_weights", "resume"]
