"""Executors: where the grid's units run.

A unit is a picklable value and ``fn(unit, env)`` a module-level function, so a unit can
run in this process (:class:`InProcessExecutor`, the default) or as a Ray task on any node
that sees the cache directory (:class:`RayExecutor`, needs ``pip install 'mkdt-bench[ray]'``).
A unit that fails yields its exception instead of a result: one failure never stops a grid.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import replace
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from mkdt_bench.errors import UserError

if TYPE_CHECKING:
    from mkdt_bench.runner import Env

U = TypeVar("U")
R = TypeVar("R")

RAY_HINT = "--executor ray needs Ray: pip install 'mkdt-bench[ray]'"


class Executor(Protocol):
    """Runs ``fn(unit, env)`` for every unit and yields ``(unit, result)`` as each finishes;
    the result is the exception instance where the unit failed."""

    def map(self, fn: Callable[[U, Env], R], units: Iterable[U],
            env: Env) -> Iterator[tuple[U, R | Exception]]: ...


class InProcessExecutor:
    """The default executor: one unit after another in this process."""

    def map(self, fn: Callable[[U, Env], R], units: Iterable[U],
            env: Env) -> Iterator[tuple[U, R | Exception]]:
        for unit in units:
            try:
                result: R | Exception = fn(unit, env)
            except Exception as e:
                result = e
            yield unit, result


class RayExecutor:
    """Each unit as a Ray task; results come back to this process as tasks finish.

    Args:
        address: a running cluster (``"auto"``, ``"HOST:6379"``); None starts a local
            instance.
        retries: how often a task whose worker process or node died is rerun. Exceptions
            raised by the unit itself are not retried; they are returned as its result.
        num_cpus_per_task, gpus_per_task: the resources each task declares.
        num_cpus: CPUs of a local instance (None: all of this machine's).

    Workers get ``env`` with progress bars switched off: the driver shows the grid's bars.
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

    def map(self, fn: Callable[[U, Env], R], units: Iterable[U],
            env: Env) -> Iterator[tuple[U, R | Exception]]:
        ray = self._ray
        task = ray.remote(fn).options(num_cpus=self.num_cpus_per_task,
                                      num_gpus=self.gpus_per_task, max_retries=self.retries)
        worker_env = replace(env, progress=False)
        pending = {task.remote(unit, worker_env): unit for unit in units}
        try:
            while pending:
                done, _ = ray.wait(list(pending), num_returns=1)
                for ref in done:
                    unit = pending.pop(ref)
                    try:
                        result: R | Exception = ray.get(ref)
                    except ray.exceptions.RayTaskError as e:
                        result = e.cause if isinstance(e.cause, Exception) else e
                    except ray.exceptions.RayError as e:
                        result = e
                    yield unit, result
        finally:
            for ref in pending:
                ray.cancel(ref)
