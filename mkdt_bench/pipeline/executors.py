"""Executors: where the grid's units run.

A unit is a picklable value and ``fn(unit, env)`` a module-level function, so a unit can
run in this process (:class:`InProcessExecutor`), in local worker processes
(:class:`ProcessExecutor`, the command line's default on a CPU with more than one core), or
as a Ray task on any node that sees the cache directory (:class:`RayExecutor`, needs
``pip install 'mkdt-bench[ray]'``).
Work is a list of :class:`Task` with dependencies; a task that fails yields its exception
instead of a result, and so do the tasks that depend on it: one failure never stops a grid.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import socket
import time
from collections.abc import Callable, Generator, Iterable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from mkdt_bench.allocator import retained_heap
from mkdt_bench.device import resolve_device
from mkdt_bench.errors import UserError

if TYPE_CHECKING:
    from mkdt_bench.stages.env import Env

U = TypeVar("U")
R = TypeVar("R")

RAY_HINT = "--executor ray needs Ray: pip install 'mkdt-bench[ray]'"
#: The executors a run can name (``--executor``); ``auto`` picks one (:func:`choose`).
KINDS = ("auto", "inprocess", "processes", "ray")
#: Most worker processes a run may ask for: each holds the data and a torch runtime.
MAX_WORKERS = 256


class WorkerLost(UserError):
    """A Ray task whose worker process or node died (killed, out of memory, node lost) on
    every attempt ``--retries`` allowed. It fails the task's cells like any failed unit, and
    where the task is the teacher the run stops with this one line: what finished is kept,
    and running the same command again computes the rest."""


@dataclass(frozen=True)
class Task:
    """One unit of work: ``fn(unit, env)``, started once the tasks named in ``after`` are done.

    ``key`` names the task within one :meth:`Executor.run` call; ``after`` holds keys of
    tasks listed before it (the grid's dependencies follow its cache keys: a distillation
    waits for its method's sub-units, an evaluation for its distillation). ``alone``: the
    task wants the whole machine (the teacher, which every other unit needs);
    :class:`ProcessExecutor` runs it in the main process with the run's threads, after the
    tasks listed before it and before those listed after it.
    """

    key: str
    fn: Callable[[Any, Env], Any]
    unit: Any
    after: tuple[str, ...] = ()
    alone: bool = False


class Executor(Protocol):
    """Runs tasks and yields ``(task, result)`` as each finishes; the result is the exception
    instance where the task failed, or the failed dependency's exception (not run then).

    ``device_env(env)`` is ``env`` with the device its tasks will compute on (``auto``
    resolved where they run); a device they cannot have is a UserError, raised before any
    task starts."""

    def device_env(self, env: Env) -> Env: ...

    def run(self, tasks: Sequence[Task], env: Env) -> Generator[tuple[Task, Any], None, None]: ...


def run_unit(fn: Callable[[U, Env], R], unit: U, env: Env) -> R:
    """``fn(unit, env)``, on the CPU inside :func:`~mkdt_bench.allocator.retained_heap`
    (freed tensor buffers are reused, not page-faulted in again; the same numbers)."""
    with retained_heap(env.device == "cpu"):
        return fn(unit, env)


def map_units(executor: Executor, fn: Callable[[U, Env], R], units: Iterable[U],
              env: Env) -> Iterator[tuple[U, R | Exception]]:
    """``fn`` over independent units: yields ``(unit, result or exception)``."""
    tasks = [Task(str(i), fn, unit) for i, unit in enumerate(units)]
    for task, result in executor.run(tasks, env):
        yield task.unit, result


def check_choice(kind: str, workers: int = 0, ray_address: str | None = None,
                 retries: int = 2) -> None:
    """Refuse executor settings that do not go together, before anything is planned."""
    if kind not in KINDS:
        raise UserError(f"--executor {kind!r} is not an executor; choose from {', '.join(KINDS)}")
    if retries < 0:
        raise UserError(f"--retries {retries} must be 0 or more")
    if workers < 0:
        raise UserError(f"--workers {workers} must be 0 (one per core) or more")
    if workers > MAX_WORKERS:
        raise UserError(f"--workers {workers} must be at most {MAX_WORKERS}")
    if kind != "ray" and ray_address:
        raise UserError(f"--ray-address needs --executor ray, not {kind}")
    if kind in ("inprocess", "ray") and workers:
        raise UserError(f"--workers {workers} needs --executor processes or auto, not {kind}")
    if kind == "ray":
        try:
            import ray  # noqa: F401 - refused here, before the database is created
        except ImportError:
            raise UserError(RAY_HINT) from None


def _pool(kind: str, workers: int, threads: int, device: str) -> tuple[int, int] | None:
    """``(workers, threads)`` of the worker processes ``kind`` runs units in, or None where
    it runs them in this process or on Ray."""
    from mkdt_bench.threads import default_threads

    if kind == "ray":
        return None
    cores = default_threads()
    workers = workers or max(1, cores // (threads or 1))
    threads = threads or max(1, cores // workers)
    if kind == "processes" or (kind == "auto" and device == "cpu" and workers > 1):
        return workers, threads
    return None


def choose(kind: str, workers: int = 0, threads: int = 0, device: str = "cpu",
           ray_address: str | None = None, retries: int = 2) -> Executor:
    """The executor ``kind`` names. ``auto`` is a :class:`ProcessExecutor` where the run
    computes on the CPU (``device``: the resolved device's type) and the usable cores hold
    two or more workers of ``threads`` threads (0: 1), else an :class:`InProcessExecutor`;
    ``workers`` 0 means the cores divided by the threads (Ray tasks get a GPU each when
    they use CUDA)."""
    check_choice(kind, workers, ray_address, retries)
    if kind == "ray":
        return RayExecutor(address=ray_address, retries=retries)
    pool = _pool(kind, workers, threads, device)
    return ProcessExecutor(*pool) if pool else InProcessExecutor()


def side_by_side(kind: str, workers: int = 0, threads: int = 0, device: str = "cpu") -> int:
    """How many units the executor :func:`choose` gives runs at once (what a plan's time is
    estimated over)."""
    pool = _pool(kind, workers, threads, device)
    return pool[0] if pool else 1


class InProcessExecutor:
    """One task after another in this process, in the given order (the command line's
    default on a GPU or a single core)."""

    def device_env(self, env: Env) -> Env:
        """``env`` with its device resolved here (``auto`` -> ``cuda:0`` or ``cpu``)."""
        return replace(env, device=str(resolve_device(env.device)))

    def run(self, tasks: Sequence[Task], env: Env) -> Generator[tuple[Task, Any], None, None]:
        failed: dict[str, Exception] = {}
        for task in tasks:
            yield from _run_here(task, env, failed)


class ProcessExecutor:
    """Tasks in ``workers`` local worker processes (the standard library's
    ``concurrent.futures`` pool, spawned), each unit on ``threads`` torch threads; a task
    marked ``alone`` runs in this process with the run's own threads.

    Small units (the digits preset's distillations, pre-trainings and probes) barely use a
    second thread, so on a 2-core CPU two of them side by side take about half the time of
    one after the other (``results/quick.md``). A unit computes the same numbers as in
    this process with ``--threads`` equal to ``threads``, whichever worker runs it.
    At most ``workers`` tasks are handed to the pool at a time, and a free worker takes the
    first task in the given order whose dependencies are done: the order is the priority
    (the grid lists sub-units, then distillations, pre-trainings and evaluations, so MKDT's
    long distillation starts as soon as its experts exist instead of queueing behind every
    pre-training that became ready first). A worker that dies fails the tasks it was
    running (a rerun computes them).
    """

    def __init__(self, workers: int, threads: int = 1) -> None:
        if workers < 1:
            raise UserError(f"ProcessExecutor(workers={workers}): workers must be 1 or more")
        if threads < 1:
            raise UserError(f"ProcessExecutor(threads={threads}): threads per worker must "
                            "be 1 or more")
        self.workers = workers
        self.threads = threads

    def device_env(self, env: Env) -> Env:
        """``env`` on the CPU: worker processes do not share a GPU here (use
        ``--executor inprocess`` or ``ray`` for CUDA)."""
        device = resolve_device(env.device)
        if device.type != "cpu":
            raise UserError(f"--executor processes runs units on the CPU, but the device "
                            f"{env.device!r} is {device}; use --executor inprocess or ray")
        return replace(env, device="cpu")

    def run(self, tasks: Sequence[Task], env: Env) -> Generator[tuple[Task, Any], None, None]:
        worker_env = replace(env, threads=self.threads, progress=False)
        failed: dict[str, Exception] = {}
        before = set(multiprocessing.active_children())
        pool = ProcessPoolExecutor(self.workers, mp_context=multiprocessing.get_context("spawn"),
                                   initializer=_start_worker, initargs=(self.threads,))
        complete = False
        try:
            segment: list[Task] = []
            for task in [*tasks, None]:
                if task is not None and not task.alone:
                    segment.append(task)
                    continue
                yield from self._run_segment(pool, self.workers, segment, worker_env, failed)
                segment = []
                if task is not None:
                    yield from _run_here(task, env, failed)
            complete = True
        finally:
            pool.shutdown(wait=complete, cancel_futures=True)
            if not complete:  # interrupted: stop the units still running, then the pool
                _interrupt(set(multiprocessing.active_children()) - before)
                pool.shutdown(wait=True)

    @staticmethod
    def _run_segment(pool: ProcessPoolExecutor, slots: int, tasks: list[Task], env: Env,
                     failed: dict[str, Exception]) -> Generator[tuple[Task, Any], None, None]:
        """``tasks`` on the pool, each once its dependencies among them are done, at most
        ``slots`` at a time, the first ready one in list order first."""
        keys = {task.key for task in tasks}
        finished: set[str] = set()
        waiting = list(tasks)
        running: dict[Future, Task] = {}
        while waiting or running:
            for task in list(waiting):
                broken = [failed[k] for k in task.after if k in failed]
                if broken:
                    waiting.remove(task)
                    failed[task.key] = broken[0]
                    finished.add(task.key)
                    yield task, broken[0]
                elif len(running) < slots and all(k in finished or k not in keys
                                                  for k in task.after):
                    waiting.remove(task)
                    running[pool.submit(run_unit, task.fn, task.unit, env)] = task
            if not running:
                if waiting:
                    raise ValueError(f"task {waiting[0].key!r} waits for a task not listed "
                                     "before it")
                continue
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in done:
                task = running.pop(future)
                try:
                    result: Any = future.result()
                except Exception as e:  # the unit's own error, or its worker died
                    result = e
                if isinstance(result, Exception):
                    failed[task.key] = result
                finished.add(task.key)
                yield task, result


def _interrupt(workers: set[multiprocessing.process.BaseProcess], grace: float = 10.0) -> None:
    """Stop ``workers`` as Ctrl-C would: a KeyboardInterrupt in the unit each runs (its
    artifact is not written; what finished stays cached), ending the worker once the pool
    has no work left; a worker still alive after ``grace`` seconds is terminated."""
    for worker in workers:
        if worker.pid is not None and worker.is_alive():
            os.kill(worker.pid, signal.SIGINT)
    deadline = time.monotonic() + grace
    for worker in workers:
        worker.join(max(0.0, deadline - time.monotonic()))
        if worker.is_alive():
            worker.terminate()


def _start_worker(threads: int) -> None:
    """A worker process's torch threads (its units set them again from their ``env``)."""
    import torch

    os.environ["OMP_NUM_THREADS"] = str(threads)
    torch.set_num_threads(threads)


def _run_here(task: Task, env: Env,
              failed: dict[str, Exception]) -> Generator[tuple[Task, Any], None, None]:
    """``task`` in this process (or its failed dependency's exception)."""
    broken = [failed[k] for k in task.after if k in failed]
    if broken:
        result: Any = broken[0]
    else:
        try:
            result = run_unit(task.fn, task.unit, env)
        except Exception as e:
            result = e
    if isinstance(result, Exception):
        failed[task.key] = result
    yield task, result


def _after(fn: Callable[[Any, Env], Any], unit: Any, env: Env, *dependencies: Any) -> Any:
    """Ray task body: the dependencies are passed only so that Ray waits for them. The GPU
    memory the task's process keeps cached is returned afterwards: the worker may idle
    while other tasks use the same card."""
    try:
        return run_unit(fn, unit, env)
    finally:
        import torch

        if torch.cuda.is_available() and torch.cuda.is_initialized():
            torch.cuda.empty_cache()


class RayExecutor:
    """Each task as a Ray task, scheduled as soon as its dependencies are done; results come
    back to this process as tasks finish.

    Args:
        address: a running cluster (``"auto"``, ``"HOST:6379"``); None starts a local
            instance.
        retries: how often a task whose worker process or node died is rerun; a task
            that dies on every attempt has a :class:`WorkerLost` as its result. Exceptions
            raised by the unit itself are not retried; they are returned as its result.
        num_cpus_per_task, gpus_per_task: the resources each task declares (GPUs, None:
            one for tasks on CUDA, none for tasks on the CPU).
        num_cpus: CPUs of a local instance (None: all of this machine's).

    Devices: Ray gives a task that declares a GPU one card of its own, which the task sees
    as ``cuda:0``; so tasks run on ``cuda`` (``--device cuda`` or ``cuda:0``; another index
    is a UserError), and ``auto`` means CUDA when the cluster has GPUs, wherever the driver
    runs. Workers get ``env`` with progress bars switched off: the driver shows the grid's
    bar.
    """

    def __init__(self, address: str | None = None, retries: int = 2,
                 num_cpus_per_task: float = 1, gpus_per_task: float | None = None,
                 num_cpus: int | None = None) -> None:
        try:
            import ray
        except ImportError:
            raise UserError(RAY_HINT) from None
        self._ray = ray
        self.retries = retries
        self.num_cpus_per_task = num_cpus_per_task
        self.gpus_per_task = gpus_per_task
        options: dict[str, Any] = {} if num_cpus is None else {"num_cpus": num_cpus}
        if address:
            _check_reachable(address)
        try:
            ray.init(address=address or None, ignore_reinit_error=True, **options)
        except (ConnectionError, RuntimeError, TimeoutError, ValueError) as e:
            lines = str(e).strip().splitlines()
            where = f"the Ray cluster at {address}" if address else "a local Ray instance"
            raise UserError(f"--executor ray: could not start or join {where}: "
                            f"{lines[0] if lines else type(e).__name__}") from None

    def device_env(self, env: Env) -> Env:
        """``env`` with the device of its tasks (see the class doc)."""
        gpus = self._ray.cluster_resources().get("GPU", 0)
        return replace(env, device=task_device(env.device, gpus))

    def run(self, tasks: Sequence[Task], env: Env) -> Generator[tuple[Task, Any], None, None]:
        ray = self._ray
        worker_env = replace(self.device_env(env), progress=False)
        gpus = self.gpus_per_task
        if gpus is None:
            gpus = 1 if worker_env.device == "cuda" else 0
        remote = ray.remote(_after).options(num_cpus=self.num_cpus_per_task, num_gpus=gpus,
                                            max_retries=self.retries)
        refs: dict[str, Any] = {}
        pending: dict[Any, Task] = {}
        for task in tasks:
            dependencies = [refs[k] for k in task.after if k in refs]
            ref = remote.remote(task.fn, task.unit, worker_env, *dependencies)
            refs[task.key] = ref
            pending[ref] = task
        try:
            while pending:
                done, _ = ray.wait(list(pending), num_returns=1)
                for ref in done:
                    task = pending.pop(ref)
                    try:
                        result: Any = ray.get(ref)
                    except ray.exceptions.RayTaskError as e:
                        if isinstance(e.cause, ray.exceptions.RayError):
                            result = self._lost(task, e.cause, "a task it needs")
                        else:
                            result = e.cause if isinstance(e.cause, Exception) else e
                    except ray.exceptions.RayError as e:
                        result = self._lost(task, e, "it")
                    yield task, result
        finally:
            if ray.is_initialized():  # else Ray has shut down, and its tasks with it
                for ref in pending:
                    ray.cancel(ref)

    def _lost(self, task: Task, error: Exception, whose: str) -> WorkerLost:
        """``error`` (Ray's, several lines) as one line naming the task and what to do;
        ``whose``: the task itself (``"it"``) or ``"a task it needs"``."""
        lines = str(error).strip().splitlines()
        reason = f"{type(error).__name__}: {lines[0] if lines else ''}".strip().rstrip(":.")
        tries = "once" if self.retries == 0 else f"{self.retries + 1} times"
        return WorkerLost(f"{task.key}: the Ray worker or node running {whose} died, "
                          f"{tries} ({reason}); run the same command again to compute what "
                          "is missing (what finished is kept), or give more --retries")


def _check_reachable(address: str, timeout: float = 10.0) -> None:
    """A UserError where nothing listens at ``HOST:PORT`` (``ray.init`` would retry for
    minutes); other forms (``auto``) are left to Ray."""
    host, sep, port = address.removeprefix("ray://").rpartition(":")
    if not sep or not host or not port.isdigit():
        return
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except (OSError, ValueError) as e:
        raise UserError(f"--ray-address {address}: no Ray cluster answers there ({e}); start "
                        "one with `ray start --head`, or leave the flag out for a local "
                        "instance") from None


def task_device(device: str, cluster_gpus: float) -> str:
    """The device a Ray task computes on for the run's ``device``, on a cluster with
    ``cluster_gpus`` GPUs in all (see :class:`RayExecutor`)."""
    if device == "auto":
        return "cuda" if cluster_gpus > 0 else "cpu"
    if device.startswith("cuda"):
        if device not in ("cuda", "cuda:0"):
            raise UserError(f"--device {device} with --executor ray: Ray gives each task a GPU "
                            "of its own, which it sees as cuda:0; use --device cuda (or auto)")
        if cluster_gpus <= 0:
            raise UserError(f"--device {device} with --executor ray: the Ray cluster has no "
                            "GPU; use --device cpu (or auto)")
        return "cuda"
    return device
