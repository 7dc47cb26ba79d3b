"""Batch grading: the reward of one solution, and of a batch spread over a pool of processes."""

from __future__ import annotations

import multiprocessing as mp
import os
import shutil
import signal
import threading
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from multiprocessing import util
from multiprocessing.connection import wait

from score.code.pool import usable_cores
from score.grader.compare import is_equivalent
from score.grader.extract import extract_answer
from score.grader.symbolic import close_helpers

MIN_POOL_BATCH = 64  # smaller batches are graded in-process: a pool costs more than it saves


def reward(solution: str, gold: str, timeout: float = 2.0, extraction: str = "strict") -> float:
    """1.0 when the solution's final answer (extract_answer's `extraction` mode) is equivalent to `gold`, else 0.0."""
    answer = extract_answer(solution, extraction)
    return 1.0 if answer is not None and is_equivalent(answer, gold, timeout) else 0.0


_POOL: ProcessPoolExecutor | None = None
_POOL_LOCK = threading.Lock()
_POOL_WORKERS = 0


def _pool_init(parent_temp_dir: str) -> None:
    # Ctrl-C and Slurm's stop signals (sent to every process of a job step) are the training process's to
    # handle: it finishes the step, which still needs these workers, then checkpoints.
    for number in (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1):
        signal.signal(number, signal.SIG_IGN)
    # The sympy helpers a worker starts inherit the ignored SIGTERM, and multiprocessing ends a process by
    # sending its children SIGTERM and joining them: it would wait forever. Kill them (SIGKILL) before that.
    util.Finalize(None, close_helpers, exitpriority=100)
    threading.Thread(target=_end_with_parent, args=(parent_temp_dir,), daemon=True).start()


def _end_with_parent(parent_temp_dir: str) -> None:
    """End this worker once the process that started the pool is gone (even by SIGKILL, which runs none of its
    clean-up): the worker waits on it for work and ignores stop signals, so it would outlive it for good, and with
    it the forkserver and resource tracker, which wait for every worker. The parent's multiprocessing folder
    (/tmp/pymp-*) is removed here, since the parent can no longer remove it."""
    wait([mp.parent_process().sentinel])  # the end of a pipe the parent holds: ready once the parent is gone
    for child in mp.active_children():  # its sympy helpers, idle or busy
        child.kill()
    shutil.rmtree(parent_temp_dir, ignore_errors=True)
    os._exit(1)


def _pool(workers: int) -> ProcessPoolExecutor:
    """A pool kept for the life of the process. Workers come from a forkserver that has imported this
    module, so they start fast and never inherit the threads (torch, tokenizers) of a training process."""
    global _POOL, _POOL_WORKERS
    with _POOL_LOCK:
        if _POOL is None or _POOL_WORKERS != workers:
            if _POOL is not None:
                _POOL.shutdown(wait=False, cancel_futures=True)
            if "forkserver" in mp.get_all_start_methods():
                ctx = mp.get_context("forkserver")
                ctx.set_forkserver_preload([__name__])
            else:
                ctx = mp.get_context("spawn")
            _POOL = ProcessPoolExecutor(
                workers, mp_context=ctx, initializer=_pool_init, initargs=(util.get_temp_dir(),)
            )
            _POOL_WORKERS = workers
        return _POOL


def rewards(
    solutions: list[str], golds: list[str], workers: int = 0, timeout: float = 2.0, extraction: str = "strict"
) -> list[float]:
    """`reward` over a batch, spread over `workers` processes (0: one per CPU core this process may use)."""
    global _POOL
    extract_answer("", extraction)  # an unknown mode fails here, not in every worker
    if len(solutions) != len(golds):
        raise ValueError(f"{len(solutions)} solutions but {len(golds)} gold answers")
    workers = workers or usable_cores()
    if workers <= 1 or len(solutions) < MIN_POOL_BATCH:
        return [reward(s, g, timeout, extraction) for s, g in zip(solutions, golds, strict=True)]
    chunk = -(-len(solutions) // (4 * workers))
    pool, n = _pool(workers), len(solutions)
    try:
        return list(pool.map(reward, solutions, golds, [timeout] * n, [extraction] * n, chunksize=chunk))
    except BrokenProcessPool:
        _POOL = None  # a worker died (killed, out of memory): grade here and start a fresh pool next time
        return [reward(s, g, timeout, extraction) for s, g in zip(solutions, golds, strict=True)]
    except BaseException:
        # Interrupted (Ctrl-C, SIGTERM): drop the chunks not yet started, or the exit would wait for all of them,
        # and wait for the workers to end (those still starting need this process's semaphores to read their task).
        pool.shutdown(wait=True, cancel_futures=True)
        _POOL = None
        raise
