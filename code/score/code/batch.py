"""Rewards of code answers: the program of each answer judged against its problem's tests over the pool."""

from __future__ import annotations

import atexit
import sys
import threading

from score.code.extract import extract_program
from score.code.jail import find_bwrap
from score.code.judge import Outcome
from score.code.pool import Pool, usable_cores

_POOL: Pool | None = None
_POOL_LOCK = threading.Lock()


def _pool(workers: int, without_jail: bool) -> Pool:
    """A pool kept for the life of the process (started anew for another number of workers or jail setting).
    JailUnavailable (one line: what is missing) where programs cannot be isolated and `without_jail` is off."""
    global _POOL
    with _POOL_LOCK:
        if _POOL is None or len(_POOL.slots) != workers or (_POOL.bwrap is None) != without_jail:
            if _POOL is not None:
                _POOL.close()
            bwrap = None
            if without_jail:
                print("code sandbox: running programs WITHOUT isolation (grader.code_without_jail=true): they see "
                      "every file you can; limits and the seccomp filter still apply", file=sys.stderr)  # fmt: skip
            else:
                bwrap = find_bwrap()
            _POOL = Pool(workers, bwrap)
            atexit.register(_POOL.close)
        return _POOL


def run_programs(
    programs: list[str],
    tests: list[str],
    timeout: float = 5.0,
    workers: int = 0,
    preambles: list[str] | None = None,
    without_jail: bool = False,
) -> list[Outcome]:
    """Each program judged against its tests (after its preamble), over `workers` warm workers (0: one per core).
    A job (program, tests, preamble) repeated in the batch runs once and each copy gets its Outcome: sampled
    answers repeat often (attempt 2 copying attempt 1, samples of a confident policy), a deterministic program's
    verdict is the same in every fresh interpreter, and one whose verdict depends on chance gets one draw."""
    if len(programs) != len(tests):
        raise ValueError(f"{len(programs)} programs but {len(tests)} test sets")
    preambles = preambles if preambles is not None else [""] * len(tests)
    if len(preambles) != len(tests):
        raise ValueError(f"{len(preambles)} preambles but {len(tests)} test sets")
    if not programs:
        return []
    jobs = list(zip(programs, tests, preambles, strict=True))
    unique = list(dict.fromkeys(jobs))
    judged = dict(zip(unique, _pool(workers or usable_cores(), without_jail).run(unique, timeout), strict=True))
    return [judged[job] for job in jobs]


def run_tests(program: str, tests: str, timeout: float = 5.0) -> bool:
    """True only when `program`, judged against `tests` (assert lines, or a HumanEval check function and its
    call) within `timeout` seconds, passed every test."""
    return run_programs([program], [tests], timeout, workers=1)[0].passed


def rewards(
    solutions: list[str],
    tests: list[str],
    workers: int = 0,
    timeout: float = 5.0,
    preambles: list[str] | None = None,
    without_jail: bool = False,
) -> list[float]:
    """1.0 for each answer whose program (extract_program) passes its tests, after its preamble when given
    (HumanEval's stub, its imports and helpers), else 0.0; answers without a program are not run."""
    judged = outcomes(solutions, tests, workers, timeout, preambles, without_jail)
    return [1.0 if outcome is not None and outcome.passed else 0.0 for outcome in judged]


def outcomes(
    solutions: list[str],
    tests: list[str],
    workers: int = 0,
    timeout: float = 5.0,
    preambles: list[str] | None = None,
    without_jail: bool = False,
) -> list[Outcome | None]:
    """The Outcome of each answer's program (None for an answer without one)."""
    if len(solutions) != len(tests):
        raise ValueError(f"{len(solutions)} solutions but {len(tests)} test sets")
    if preambles is not None and len(preambles) != len(tests):
        raise ValueError(f"{len(preambles)} preambles but {len(tests)} test sets")
    programs = [extract_program(s) for s in solutions]
    found = [i for i, p in enumerate(programs) if p is not None]
    pre = preambles or [""] * len(tests)
    judged = run_programs([programs[i] for i in found], [tests[i] for i in found], timeout, workers,
                          [pre[i] for i in found], without_jail)  # fmt: skip
    result: list[Outcome | None] = [None] * len(solutions)
    for i, outcome in zip(found, judged, strict=True):
        result[i] = outcome
    return result


def reward(solution: str, tests: str, timeout: float = 5.0) -> float:
    """`rewards` of one answer."""
    return rewards([solution], [tests], workers=1, timeout=timeout)[0]
