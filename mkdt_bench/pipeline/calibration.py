"""A small calibration of the machine for the rough cost model: the seconds per image of one
forward and backward pass of an architecture at a data set's image shape, timed once per
machine, device and thread count (:class:`Calibration`) and kept in the cache directory as
``calibration.json``.

The file is written atomically, by runs only (``--dry-run`` writes nothing), and read as
untrusted: anything but a JSON object of bounded size mapping names to finite positive
seconds is refused and the calibration made again."""

from __future__ import annotations

import json
import math
import platform
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mkdt_bench.cache import atomic_write_bytes, canonical_json

if TYPE_CHECKING:
    import torch

#: The calibration's file in a cache directory.
CALIBRATION_FILE = "calibration.json"
#: A larger file is refused unread.
MAX_BYTES = 2**20
#: The largest batch a pass is timed with (larger ones cost about as much per image).
MAX_BATCH = 128
#: At most this many timed passes (after a warm-up), and at least two...
REPEATS = 10
#: ...more only while the timing has taken less than this many seconds.
BUDGET_SECONDS = 1.0


def machine_name(device: torch.device, threads: int) -> str:
    """What a calibration holds for: the device's model (a CPU's from ``/proc/cpuinfo``) and
    the torch threads, as a cache directory may be shared by unlike machines."""
    import torch

    if device.type == "cuda":
        return f"cuda {torch.cuda.get_device_name(device)}"
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"cpu {model}, {threads} thread{'' if threads == 1 else 's'}"


def read_calibration(path: Path) -> dict[str, float] | None:
    """The calibration stored at ``path``, or None where it is absent or refused (not a
    plain file, too large, not JSON, or any value not a finite positive number)."""
    try:
        if path.is_symlink() or not path.is_file() or path.stat().st_size > MAX_BYTES:
            return None
        data = json.loads(path.read_bytes())
    except (OSError, ValueError, RecursionError):
        return None
    if not isinstance(data, dict) or not all(
            isinstance(k, str) and type(v) in (int, float) and math.isfinite(v) and v > 0
            for k, v in data.items()):
        return None
    return {k: float(v) for k, v in data.items()}


class Calibration:
    """Seconds per image of a forward+backward pass, timed on ``device`` with ``threads``
    torch threads (0: this process's; give the threads each unit of the run will have)
    where the file in ``cache_dir`` holds none for this machine; :meth:`save` stores what
    was timed."""

    def __init__(self, cache_dir: str | Path, device: torch.device, threads: int = 0) -> None:
        import torch

        self.path = Path(cache_dir).expanduser() / CALIBRATION_FILE
        self.device = device
        self.threads = threads or torch.get_num_threads()
        self.machine = machine_name(device, self.threads)
        self.seconds = read_calibration(self.path) or {}
        self.timed = False

    def per_image(self, arch: str, options: Mapping[str, Any], channels: int,
                  image_size: int, batch: int) -> float:
        """Seconds per image of one forward and backward pass of the model ``arch`` (built
        with ``options``, e.g. ``{"width": 16}``) on ``channels`` x ``image_size`` images,
        ``batch`` at a time (at most :data:`MAX_BATCH`), in training mode."""
        batch = max(1, min(batch, MAX_BATCH))
        name = self.name(arch, options, channels, image_size, batch)
        if name not in self.seconds:
            self.seconds[name] = _time_pass(arch, options, channels, image_size, batch,
                                            self.device, self.threads)
            self.timed = True
        return self.seconds[name]

    def name(self, arch: str, options: Mapping[str, Any], channels: int, image_size: int,
             batch: int) -> str:
        """What the file calls the pass :meth:`per_image` times on this machine."""
        return (f"{self.machine} | {arch} {canonical_json(dict(options))} | "
                f"{batch}x{channels}x{image_size}x{image_size}")

    def save(self) -> None:
        """Store the calibration (atomically) where something was timed."""
        if self.timed:
            data = json.dumps(self.seconds, indent=1, sort_keys=True).encode()
            atomic_write_bytes(self.path, data)
            self.timed = False


def _time_pass(arch: str, options: Mapping[str, Any], channels: int, image_size: int,
               batch: int, device: torch.device, threads: int) -> float:
    """One warm-up pass, then the fastest of up to :data:`REPEATS` timed ones within about
    :data:`BUDGET_SECONDS` (a busy machine slows a pass, it never speeds one up), on
    ``threads`` torch threads; the global random state and thread count are left as they
    were."""
    import torch

    from mkdt_bench.models import create_model

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with torch.random.fork_rng(devices=[]):
            model = create_model(arch, in_channels=channels, image_size=image_size, out_dim=1,
                                 **options)
            model = model.to(device).train()
            x = torch.randn(batch, channels, image_size, image_size, device=device)
            times: list[float] = []
            started = time.perf_counter()
            while len(times) < REPEATS + 1 and (
                    len(times) < 3 or time.perf_counter() - started < BUDGET_SECONDS):
                start = time.perf_counter()
                model.zero_grad()
                model.features(x).square().mean().backward()
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                times.append(time.perf_counter() - start)
    finally:
        torch.set_num_threads(before)
    return min(times[1:]) / batch
