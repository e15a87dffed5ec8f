"""CPU threads that behave on a shared machine (``benchmarks/contention.py`` measures it).

torch's CPU kernels run on an OpenMP pool whose idle threads spin at every barrier before
they sleep (GNU OpenMP: 300,000 spins, milliseconds on current CPUs). On a machine whose
cores the pool fills, one more busy process makes each barrier wait for a descheduled
thread while the others spin through their time slices: the run slows by up to two orders
of magnitude. :func:`configure_openmp` shortens the spin to ``GOMP_SPINCOUNT=2000`` before
torch starts its pool (the command line calls it first; Ray workers inherit it). Measured
on 2 cores (``benchmarks/README.md``): as fast as the default alone, 1.8x slower beside a
busy process instead of > 1.9x (7.6x on the whole quick run); ``OMP_WAIT_POLICY=PASSIVE``
(sleep at once) was 1.2x beside it but 21 % slower alone. Values the user set are kept: an
``OMP_WAIT_POLICY`` or ``GOMP_SPINCOUNT`` of one's own disables the default, and an empty
``GOMP_SPINCOUNT=`` restores OpenMP's own behaviour.
"""

from __future__ import annotations

import os
from collections.abc import MutableMapping

#: GNU OpenMP spins of a waiting thread before it sleeps (OpenMP's default: 300,000).
SPIN_COUNT = "2000"


def configure_openmp(environ: MutableMapping[str, str] | None = None) -> dict[str, str]:
    """Set ``GOMP_SPINCOUNT`` to :data:`SPIN_COUNT` in ``environ`` (default
    ``os.environ``) unless the user chose a wait behaviour: an ``OMP_WAIT_POLICY`` or
    ``GOMP_SPINCOUNT`` of their own is kept, an empty one is removed (OpenMP's default).
    Returns the wait settings in force. Has no effect on a torch already imported."""
    environ = os.environ if environ is None else environ
    keys = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")
    emptied = [key for key in keys if environ.get(key) == ""]
    for key in emptied:
        del environ[key]
    if not emptied and not any(key in environ for key in keys):
        environ["GOMP_SPINCOUNT"] = SPIN_COUNT
    return {key: environ[key] for key in keys if key in environ}


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

