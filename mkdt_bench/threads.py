"""CPU threads that behave on a shared machine (``benchmarks/contention.py`` measures it).

torch's CPU kernels run on an OpenMP pool whose idle threads, by default, spin at every
barrier waiting for work. On a machine whose cores are all in use by the pool, one more
busy process makes each barrier wait for a thread that is descheduled while the others
spin through their time slices: the run slows by one to two orders of magnitude.
``OMP_WAIT_POLICY=PASSIVE`` makes waiting threads sleep instead; it must be in the
environment before torch starts its pool, so :func:`configure_openmp` runs first in the
command line (and Ray workers, started from it, inherit it). A value the user set is kept;
an empty one (``OMP_WAIT_POLICY= mkdt-bench run``) restores OpenMP's own default.
"""

from __future__ import annotations

import os
from collections.abc import MutableMapping

#: OpenMP settings applied unless the environment already has them.
OPENMP_DEFAULTS = {"OMP_WAIT_POLICY": "PASSIVE"}


def configure_openmp(environ: MutableMapping[str, str] | None = None) -> dict[str, str]:
    """Put :data:`OPENMP_DEFAULTS` into ``environ`` (default ``os.environ``) where unset,
    and remove the ones set empty (OpenMP's default then); returns the values in force.
    Has no effect on a torch already imported."""
    environ = os.environ if environ is None else environ
    for key, value in OPENMP_DEFAULTS.items():
        if environ.get(key) == "":
            del environ[key]
        else:
            environ.setdefault(key, value)
    return {key: environ[key] for key in OPENMP_DEFAULTS if key in environ}


def usable_cores() -> int:
    """The CPU cores this process may run on (its affinity mask, e.g. a container's or
    ``taskset``'s share), else the machine's count."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def default_threads() -> int:
    """The torch thread count of ``--threads 0``: one per usable core (``OMP_NUM_THREADS``
    when set, as torch reads it)."""
    value = os.environ.get("OMP_NUM_THREADS", "")
    return int(value) if value.isdigit() and int(value) > 0 else usable_cores()
