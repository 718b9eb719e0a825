"""Softmax fits beside the search: worker processes where the platform forks, threads elsewhere.

A head's softmax fit (`attndsl.synthesis.search.greedy.softmax_for_head`) is NumPy, SciPy's
L-BFGS and the Lark parse of the printed program: small array operations and Python, which
hold the GIL most of the time (py-spy on the sentence run: the fit thread held it in about
three of every four samples).  On a thread it therefore runs beside the search's Numba kernels
but never beside another fit, and a second fit thread gained nothing (28.7 s against 28.8 s for
every 10th head of the sentence run on two cores).  Worker *processes* have a GIL each.

Processes are forked (Linux; ``fork`` is the only start method that shares the search sets
without copying them): each worker inherits the screening and synthesis sets, their word data
and the attention blocks as they are when the pool starts — copy-on-write pages, read only —
and receives per task only the head's result and its attention column's index.  A worker
never calls a Numba kernel (Numba's OpenMP pool does not survive a fork) and runs BLAS on one
thread.  Workers ignore Ctrl-C: the parent stops submitting, and the fits already running
finish and are saved (`search_heads`).  Elsewhere (macOS, Windows, where forking a process
that holds threads is unsafe) the fits run on threads, as before; the results are the same
either way.
"""
from __future__ import annotations

import multiprocessing
import signal
import sys
from concurrent.futures import Executor, Future, ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

#: the job a forked worker inherited (set by `_install` in the worker; never in the parent)
_JOB: "FitJob | None" = None


@dataclass(frozen=True, eq=False)
class FitJob:
    """What every head's softmax fit reads: the search sets and their attention blocks [E, heads]."""

    screen: object  # SearchData
    screen_block: np.ndarray
    full: object  # SearchData | None
    full_block: np.ndarray | None
    settings: object  # SearchSettings

    def fit(self, result, col: int):
        """``(result with its softmax program, that program's IR)`` for the head in column ``col``."""
        from attndsl.synthesis.search.greedy import softmax_for_head

        full_col = self.full_block[:, col] if self.full_block is not None else None
        return softmax_for_head(result, self.screen, self.screen_block[:, col], self.settings, self.full, full_col)


def _install(job: FitJob) -> None:
    global _JOB
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=1, user_api="blas")
    _JOB = job


def _fit_inherited(result, col: int):
    if _JOB is None:
        raise RuntimeError("a fit worker started without its job")
    return _JOB.fit(result, col)


def can_fork() -> bool:
    """Whether fits run in forked processes here (Linux)."""
    return sys.platform.startswith("linux") and "fork" in multiprocessing.get_all_start_methods()


class FitWorkers:
    """Softmax fits for ``job``, ``workers`` at a time (None: one per core attndsl may use in
    processes, `attndsl.threads.configured`; one on threads), in forked processes when
    ``processes`` and `can_fork`, else on threads.  `submit` returns a future of `FitJob.fit`'s
    value, which `result` reads."""

    def __init__(self, job: FitJob, workers: int | None = None, processes: bool = True):
        from attndsl.threads import configured

        self.job = job
        self.processes = processes and can_fork()
        if workers is None:
            workers = configured() if self.processes else 1
        self.workers = max(1, int(workers))
        if self.processes:
            # the job reaches the workers through the fork (a forked process's `initargs` are not pickled)
            self.pool: Executor = ProcessPoolExecutor(max_workers=self.workers,
                                                      mp_context=multiprocessing.get_context("fork"),
                                                      initializer=_install, initargs=(job,))
        else:
            self.pool = ThreadPoolExecutor(max_workers=self.workers)

    def submit(self, result, col: int) -> Future:
        from concurrent.futures.process import BrokenProcessPool

        try:
            if self.processes:
                return self.pool.submit(_fit_inherited, result, col)
            return self.pool.submit(self.job.fit, result, col)
        except BrokenProcessPool as error:
            raise _died(error) from None

    @staticmethod
    def result(future: Future):
        """The future's value; a worker process that died (killed, out of memory) is a `UserError`."""
        from concurrent.futures.process import BrokenProcessPool

        try:
            return future.result()
        except BrokenProcessPool as error:
            raise _died(error) from None

    def __enter__(self) -> "FitWorkers":
        return self

    def __exit__(self, *exc) -> None:
        self.pool.shutdown(wait=True, cancel_futures=exc[0] is not None)


def _died(error: BaseException):
    from attndsl.errors import UserError

    return UserError("a softmax fit worker process ended abruptly (killed, or out of memory?); the heads finished "
                     "before it are saved: rerun the same command to resume, with `attndsl --threads 1` for fewer "
                     f"fits at once ({error})")
