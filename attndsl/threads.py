"""One thread setting for torch and Numba, so their pools do not fight over the cores.

attndsl's heavy stages alternate between torch (the model's forward, MKL and
OpenMP inside) and the Numba kernels (``parallel=True`` loops on Numba's own
OpenMP pool).  Left alone, each library sizes its pool to the whole machine
and each OpenMP runtime keeps its idle workers spinning for a while after a
parallel region; when other processes share the cores, the spinning workers
of one pool compete with the working threads of the other and with the
neighbours, and the stage's CPU time (not only its wall time) grows.

`configure(threads)` sizes both pools to the same number: an explicit
argument, else the ``ATTNDSL_THREADS`` environment variable, else
``OMP_NUM_THREADS`` if the user set it, else the cores this process may run
on (``os.sched_getaffinity``).  It calls
``torch.set_num_threads`` and ``numba.set_num_threads`` on the libraries
already imported, and for those not imported yet sets the environment they
read at import (``OMP_NUM_THREADS``, ``MKL_NUM_THREADS``,
``NUMBA_NUM_THREADS``) — which child processes inherit too.  The CLI calls it
once before any command (``attndsl --threads N …``); the library entry points
of heavy stages (`attndsl.extraction.extract.extract`, `attndsl.surrogates.surrogate.attach`) call
`apply_env`, which applies ``ATTNDSL_THREADS`` when it is set and otherwise
leaves a Python caller's own torch/Numba settings alone.

The wait policy.  Measured on a 2-core machine shared with other jobs
(``benchmarks/bench_threads.py``), the CPU time of a stage grows 4–8×
with the OpenMP runtimes' default wait policy, and most of it is torch's own
pool: its workers spin between the many small parallel regions of a forward
pass while the neighbours want the cores.  ``OMP_WAIT_POLICY=PASSIVE`` (idle
workers sleep at once) removes that growth.  OpenMP reads it once, when the
runtime loads (``import torch``, the first Numba parallel call), so
`prepare_environment` sets it — unless the user set it — when ``attndsl`` is
imported, which is before either library where attndsl imports them.  A
program that imports torch before attndsl keeps torch's default; set
``OMP_WAIT_POLICY=PASSIVE`` in its environment instead.
"""
from __future__ import annotations

import os
import sys

from attndsl.errors import UserError

ENV = "ATTNDSL_THREADS"
#: OpenMP wait policy attndsl asks for (see the module docstring)
WAIT_POLICY = "PASSIVE"


def prepare_environment() -> bool:
    """Ask for the passive OpenMP wait policy unless the user chose one or it is too late;
    with ``$ATTNDSL_THREADS`` set, also size the pools (`configure`) before they exist.

    Returns True when the setting will take effect (no OpenMP user loaded yet and
    ``OMP_WAIT_POLICY`` not set by the user).
    """
    if os.environ.get(ENV):  # pools start at the asked size (a bad value is reported by the stage)
        try:
            configure()
        except UserError:
            pass
    if "OMP_WAIT_POLICY" in os.environ or "torch" in sys.modules or "numba" in sys.modules:
        return False
    os.environ["OMP_WAIT_POLICY"] = WAIT_POLICY
    return True


def available_cores() -> int:
    """Cores this process may run on (its CPU affinity; ``os.cpu_count()`` where that is unknown)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def resolve(threads: int | str | None = None) -> int:
    """The thread count: ``threads``, else ``$ATTNDSL_THREADS``, else ``$OMP_NUM_THREADS``, else `available_cores`.

    ``0`` (or ``"auto"``) means the available cores.  Anything else that is not
    a positive integer is a `UserError` naming where it came from.
    """
    source = "--threads"
    if threads is None:
        threads = os.environ.get(ENV) or None
        source = ENV
    if threads is None:  # a count the user gave OpenMP directly is kept
        omp = os.environ.get("OMP_NUM_THREADS", "")
        return int(omp) if omp.isdigit() and int(omp) > 0 else available_cores()
    text = str(threads).strip().lower()
    if text in ("0", "auto"):
        return available_cores()
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 1:
        raise UserError(f"{source} must be a positive whole number of threads (or 0 / auto for every core), not {threads!r}")
    return value


#: the count `configure` last applied (None before it runs)
_configured: int | None = None


def configured() -> int:
    """The cores attndsl's stages may use: what `configure` last applied (``--threads``), else `resolve`'s
    count (also how many softmax fits the synthesis runs at once, `attndsl.synthesis.search.fit_workers`)."""
    return _configured if _configured is not None else resolve()


def configure(threads: int | str | None = None) -> int:
    """Size torch's and Numba's thread pools to one number (see the module docstring); returns it."""
    global _configured
    n = resolve(threads)
    _configured = n
    if "torch" in sys.modules:
        import torch

        if torch.get_num_threads() != n:
            torch.set_num_threads(n)
    else:
        os.environ["OMP_NUM_THREADS"] = str(n)
        os.environ["MKL_NUM_THREADS"] = str(n)
    if "numba" in sys.modules:
        import numba

        # Numba's pool is created once at NUMBA_NUM_THREADS workers; it can only use fewer
        numba.set_num_threads(min(n, int(numba.config.NUMBA_NUM_THREADS)))
    else:
        os.environ["NUMBA_NUM_THREADS"] = str(n)
    return n


def apply_env() -> int | None:
    """`configure` from ``$ATTNDSL_THREADS`` when it is set; None (nothing changed) otherwise."""
    if not os.environ.get(ENV):
        return None
    return configure()


def current() -> dict[str, int | None]:
    """The pools' present sizes (None for a library not imported), for reports and tests."""
    out: dict[str, int | None] = {"torch": None, "numba": None}
    if "torch" in sys.modules:
        out["torch"] = int(sys.modules["torch"].get_num_threads())
    if "numba" in sys.modules:
        out["numba"] = int(sys.modules["numba"].get_num_threads())
    return out
