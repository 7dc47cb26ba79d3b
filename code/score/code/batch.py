"""Rewards of code answers: the program of each answer run against its problem's tests in the sandbox pool."""

from __future__ import annotations

import atexit
import threading

from score.code.extract import extract_program
from score.code.pool import Pool
from score.code.sandbox import Outcome
from score.grader.batch import usable_cores

_POOL: Pool | None = None
_POOL_LOCK = threading.Lock()


def _pool(workers: int) -> Pool:
    """A pool kept for the life of the process (resized when asked for another number of workers)."""
    global _POOL
    with _POOL_LOCK:
        if _POOL is None or len(_POOL.workers) != workers:
            if _POOL is not None:
                _POOL.close()
            _POOL = Pool(workers)
            atexit.register(_POOL.close)
        return _POOL


def run_programs(programs: list[str], tests: list[str], timeout: float = 5.0, workers: int = 0) -> list[Outcome]:
    """Each program run against its tests in the sandbox, over `workers` warm workers (0: one per CPU core)."""
    if len(programs) != len(tests):
        raise ValueError(f"{len(programs)} programs but {len(tests)} test sets")
    if not programs:
        return []
    return _pool(workers or usable_cores()).run(list(zip(programs, tests, strict=True)), timeout)


def run_tests(program: str, tests: str, timeout: float = 5.0) -> bool:
    """True only when `program`, then `tests` (assert lines, or a HumanEval check function and its call), ran in
    the sandbox within `timeout` seconds and every test passed."""
    return run_programs([program], [tests], timeout, workers=1)[0].passed


def rewards(
    solutions: list[str], tests: list[str], workers: int = 0, timeout: float = 5.0, preambles: list[str] | None = None
) -> list[float]:
    """1.0 for each answer whose program (extract_program), after its preamble when given (HumanEval's stub, its
    imports and helpers), passes its tests, else 0.0; answers without a program are not run."""
    if len(solutions) != len(tests):
        raise ValueError(f"{len(solutions)} solutions but {len(tests)} test sets")
    if preambles is not None and len(preambles) != len(tests):
        raise ValueError(f"{len(preambles)} preambles but {len(tests)} test sets")
    programs = [extract_program(s) for s in solutions]
    found = [i for i, p in enumerate(programs) if p is not None]
    if preambles is not None:
        programs = [p if p is None else f"{pre}\n{p}" for pre, p in zip(preambles, programs, strict=True)]
    outcomes = run_programs([programs[i] for i in found], [tests[i] for i in found], timeout, workers)
    scores = [0.0] * len(solutions)
    for i, outcome in zip(found, outcomes, strict=True):
        scores[i] = 1.0 if outcome.passed else 0.0
    return scores


def reward(solution: str, tests: str, timeout: float = 5.0) -> float:
    """`rewards` of one answer."""
    return rewards([solution], [tests], workers=1, timeout=timeout)[0]
