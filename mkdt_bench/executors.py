"""Executors: where the grid's units run.

A unit is a picklable value and ``fn(unit, env)`` a module-level function, so a unit can
run in this process (:class:`InProcessExecutor`, the default) or as a Ray task on any node
that sees the cache directory (:class:`RayExecutor`, needs ``pip install 'mkdt-bench[ray]'``).
Work is a list of :class:`Task` with dependencies; a task that fails yields its exception
instead of a result, and so do the tasks that depend on it: one failure never stops a grid.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from mkdt_bench.errors import UserError

if TYPE_CHECKING:
    from mkdt_bench.stages.env import Env

U = TypeVar("U")
R = TypeVar("R")

RAY_HINT = "--executor ray needs Ray: pip install 'mkdt-bench[ray]'"


@dataclass(frozen=True)
class Task:
    """One unit of work: ``fn(unit, env)``, started once the tasks named in ``after`` are done.

    ``key`` names the task within one :meth:`Executor.run` call; ``after`` holds keys of
    tasks listed before it (the grid's dependencies follow its cache keys: a distillation
    waits for its method's sub-units, an evaluation for its distillation).
    """

    key: str
    fn: Callable[[Any, Env], Any]
    unit: Any
    after: tuple[str, ...] = ()


class Executor(Protocol):
    """Runs tasks and yields ``(task, result)`` as each finishes; the result is the exception
    instance where the task failed, or the failed dependency's exception (not run then)."""

    def run(self, tasks: Sequence[Task], env: Env) -> Iterator[tuple[Task, Any]]: ...


def map_units(executor: Executor, fn: Callable[[U, Env], R], units: Iterable[U],
              env: Env) -> Iterator[tuple[U, R | Exception]]:
    """``fn`` over independent units: yields ``(unit, result or exception)``."""
    tasks = [Task(str(i), fn, unit) for i, unit in enumerate(units)]
    for task, result in executor.run(tasks, env):
        yield task.unit, result


class InProcessExecutor:
    """The default executor: one task after another in this process, in the given order."""

    def run(self, tasks: Sequence[Task], env: Env) -> Iterator[tuple[Task, Any]]:
        failed: dict[str, Exception] = {}
        for task in tasks:
            broken = [failed[k] for k in task.after if k in failed]
            if broken:
                result: Any = broken[0]
            else:
                try:
                    result = task.fn(task.unit, env)
                except Exception as e:
                    result = e
            if isinstance(result, Exception):
                failed[task.key] = result
            yield task, result


def _after(fn: Callable[[Any, Env], Any], unit: Any, env: Env, *dependencies: Any) -> Any:
    """Ray task body: the dependencies are passed only so that Ray waits for them."""
    return fn(unit, env)


class RayExecutor:
    """Each task as a Ray task, scheduled as soon as its dependencies are done; results come
    back to this process as tasks finish.

    Args:
        address: a running cluster (``"auto"``, ``"HOST:6379"``); None starts a local
            instance.
        retries: how often a task whose worker process or node died is rerun. Exceptions
            raised by the unit itself are not retried; they are returned as its result.
        num_cpus_per_task, gpus_per_task: the resources each task declares.
        num_cpus: CPUs of a local instance (None: all of this machine's).

    Workers get ``env`` with progress bars switched off: the driver shows the grid's bar.
    """

    def __init__(self, address: str | None = None, retries: int = 2,
                 num_cpus_per_task: float = 1, gpus_per_task: float = 0,
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
        ray.init(address=address or None, ignore_reinit_error=True, **options)

    def run(self, tasks: Sequence[Task], env: Env) -> Iterator[tuple[Task, Any]]:
        ray = self._ray
        remote = ray.remote(_after).options(num_cpus=self.num_cpus_per_task,
                                            num_gpus=self.gpus_per_task,
                                            max_retries=self.retries)
        worker_env = replace(env, progress=False)
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
                        result = e.cause if isinstance(e.cause, Exception) else e
                    except ray.exceptions.RayError as e:
                        result = e
                    yield task, result
        finally:
            for ref in pending:
                ray.cancel(ref)
