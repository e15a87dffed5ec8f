"""Progress reporting on stderr: tqdm bars on a terminal, plain lines otherwise.

On a terminal a run shows bars (the grid's, and the long stages' own: teacher epochs,
MKDT iterations, ...). When stderr is not a terminal (a log file, a pipe, a batch job)
there are no bars: each finished step of the grid is one line with its name, wall time
and peak memory. ``--no-progress`` silences both; messages (failed cells and units,
warnings) always reach stderr.

The grid's ETA is weighed by cost: each step counts with its estimated seconds
(:mod:`mkdt_bench.pipeline.costs`), scaled by how the steps finished so far compare with their
estimates; a step without an estimate counts as the mean of the finished steps of its
kind, and as unknown ("+N unmeasured") before one of them finished.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import IO

from tqdm.auto import tqdm

from mkdt_bench.memory import PeakMemory


def is_terminal(stream: IO[str]) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def duration(seconds: float) -> str:
    """``12.3 s`` under a minute, ``h:mm:ss`` under two days, else ``N.N days``."""
    if seconds < 60:
        return f"{seconds:.1f} s"
    if seconds >= 2 * 86400:
        return f"{seconds / 86400:.1f} days"
    s = int(round(seconds))
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"


class Progress:
    """Hands out tqdm bars (drawn only when stderr is a terminal), the grid's progress
    (:meth:`grid`) and messages. ``enabled=False`` silences bars and step lines."""

    def __init__(self, enabled: bool = True, stream: IO[str] | None = None) -> None:
        self.enabled = enabled
        self._stream = stream

    @property
    def stream(self) -> IO[str]:
        return self._stream or sys.stderr

    @property
    def bars(self) -> bool:
        """Whether bars are drawn: progress is on and stderr is a terminal."""
        return self.enabled and is_terminal(self.stream)

    @property
    def lines(self) -> bool:
        """Whether finished steps are plain lines: progress is on, no terminal."""
        return self.enabled and not self.bars

    def bar(self, total: int | None, desc: str, initial: int = 0) -> tqdm:
        return tqdm(total=total, desc=desc, initial=initial, disable=not self.bars,
                    leave=False, file=self.stream, dynamic_ncols=True)

    def write(self, message: str) -> None:
        """A message that always reaches stderr (above the bars, if any)."""
        if self.bars:
            tqdm.write(message, file=self.stream)
        else:
            print(message, file=self.stream, flush=True)

    def grid(self, tasks: list[GridTask]) -> GridProgress:
        return GridProgress(self, tasks)


@dataclass(frozen=True)
class GridTask:
    """A task of the grid as progress weighs it: ``label`` (empty: a step with nothing to
    compute, counted but not reported), ``group`` (steps whose finished times stand in
    for each other's missing estimates) and estimated ``seconds`` (None: unknown)."""

    key: str
    label: str
    group: str
    seconds: float | None


class GridProgress:
    """The grid's progress, weighed by each task's estimated cost (see the module doc)."""

    def __init__(self, progress: Progress, tasks: list[GridTask],
                 clock: Callable[[], float] | None = None) -> None:
        self.progress = progress
        self.tasks = {t.key: t for t in tasks}
        self.reported = sum(1 for t in tasks if t.label)
        self.finished: dict[str, float] = {}
        self._clock = clock or time.perf_counter
        self._start = self._clock()
        self._bar = None
        if progress.bars:
            self._bar = tqdm(total=100.0, leave=False, file=progress.stream,
                             dynamic_ncols=True,
                             bar_format="grid: {percentage:3.0f}%|{bar}| {desc}")
            self._refresh()

    def _scale(self) -> float:
        """Finished time over estimated time of the finished tasks that had an estimate."""
        spent = estimated = 0.0
        for key, seconds in self.finished.items():
            task = self.tasks[key]
            if task.seconds:
                spent, estimated = spent + seconds, estimated + task.seconds
        return spent / estimated if estimated > 0 else 1.0

    def remaining(self) -> tuple[float, int]:
        """Estimated seconds of work left and the number of tasks without any estimate."""
        scale = self._scale()
        by_group: dict[str, list[float]] = {}
        for key, seconds in self.finished.items():
            by_group.setdefault(self.tasks[key].group, []).append(seconds)
        left, unknown = 0.0, 0
        for key, task in self.tasks.items():
            if key in self.finished:
                continue
            if task.seconds is not None:
                left += task.seconds * scale
            elif task.group in by_group:
                left += sum(by_group[task.group]) / len(by_group[task.group])
            else:
                unknown += 1
        return left, unknown

    def eta(self, elapsed: float | None = None) -> tuple[float, int]:
        """Seconds until the grid is done (work left over the rate at which finished work
        came in: above 1 when an executor runs tasks in parallel) and unknown tasks."""
        elapsed = self._clock() - self._start if elapsed is None else elapsed
        left, unknown = self.remaining()
        done = sum(self.finished.values())
        rate = done / elapsed if done > 0 and elapsed > 0 else 1.0
        return left / max(rate, 1e-6), unknown

    def _status(self) -> str:
        eta, unknown = self.eta()
        more = f" + {unknown} unmeasured" if unknown else ""
        done = sum(1 for k in self.finished if self.tasks[k].label)
        return (f"{done}/{self.reported} steps, {duration(self._clock() - self._start)} "
                f"elapsed, eta {duration(eta)}{more}")

    def _refresh(self) -> None:
        if self._bar is None:
            return
        left, _ = self.remaining()
        done = sum(self.finished.values())
        self._bar.n = 100.0 * done / (done + left) if done + left > 0 else 0.0
        self._bar.set_description_str(self._status())

    def done(self, key: str, seconds: float, peak_mib: float | None = None,
             failed: bool = False) -> None:
        """Task ``key`` finished after ``seconds`` (its peak memory, if measured)."""
        task = self.tasks.get(key)
        if task is None:
            return
        self.finished[key] = seconds
        if task.label and self.progress.lines:
            peak = f", peak {peak_mib:,.0f} MiB" if peak_mib is not None else ""
            self.progress.write(f"{'failed' if failed else 'done'}: {task.label} in "
                                f"{duration(seconds)}{peak} ({self._status()})")
        self._refresh()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


class Measured:
    """``with Measured() as m: ...`` then ``m.seconds`` and ``m.peak_mib`` (the process's
    peak memory during the block; None when ``memory`` is False)."""

    def __init__(self, memory: bool = True) -> None:
        self._memory = PeakMemory() if memory else None
        self.seconds = 0.0
        self.peak_mib: float | None = None

    def __enter__(self) -> Measured:
        if self._memory is not None:
            self._memory.__enter__()
        self._start = time.perf_counter()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.seconds = time.perf_counter() - self._start
        if self._memory is not None:
            self._memory.__exit__(exc_type, exc, tb)
            self.peak_mib = self._memory.peak_mib


def interrupted_message() -> str:
    """The line a run prints when stopped by Ctrl-C, starting on a line of its own (a bar
    or the terminal's ``^C`` may have left the cursor mid-line)."""
    lead = "\n" if is_terminal(sys.stderr) else ""
    return f"{lead}interrupted; finished work is cached, rerun to resume"
