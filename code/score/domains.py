"""The reward of each problem's domain: math answers go to the answer checker (score.grader), code answers to the
sandboxed tests (score.code). Everything that scores attempts (rollouts, training, evaluation, STaR, Pair-SFT)
asks here, so a batch may mix both domains."""

from __future__ import annotations

from collections.abc import Callable

from score import code, grader
from score.config import GraderConfig
from score.data import Problem

DOMAINS = ("math", "code")


def problem_rewards(
    texts: list[str], problems: list[Problem], grading: GraderConfig, statuses: dict | None = None
) -> list[float]:
    """Reward of texts[i] as an answer to problems[i], under `grading` (workers, timeouts, extraction). For code
    answers, `statuses` (when given) gets what the judge said of each, by (problem id, text): passed, failed and
    why, timeout, error (program: ...) or error (tests: ...), or "no program"."""
    if len(texts) != len(problems):
        raise ValueError(f"{len(texts)} texts but {len(problems)} problems")
    unknown = {p.domain for p in problems} - set(DOMAINS)
    if unknown:
        raise ValueError(f"unknown problem domain {sorted(unknown)[0]!r} (known: {', '.join(DOMAINS)})")
    scores = [0.0] * len(texts)
    rows = [i for i, p in enumerate(problems) if p.domain == "math"]
    if rows:
        golds = [problems[i].answer for i in rows]
        math = grader.rewards([texts[i] for i in rows], golds, grading.workers, grading.timeout, grading.extraction)
        for i, score in zip(rows, math, strict=True):
            scores[i] = score
    rows = [i for i, p in enumerate(problems) if p.domain == "code"]
    if rows:
        solutions, tests = [texts[i] for i in rows], [problems[i].tests for i in rows]
        preambles = [problems[i].preamble for i in rows]
        outcomes = code.outcomes(
            solutions, tests, grading.workers, grading.code_timeout, preambles, grading.code_without_jail
        )
        for i, outcome in zip(rows, outcomes, strict=True):
            scores[i] = 1.0 if outcome is not None and outcome.passed else 0.0
            if statuses is not None:
                statuses[problems[i].id, texts[i]] = "no program" if outcome is None else outcome.status
    return scores


def grading_reward(
    grading: GraderConfig, statuses: dict | None = None
) -> Callable[[list[str], list[Problem]], list[float]]:
    """problem_rewards under `grading` (code answers' statuses into `statuses`), as the reward_fn rollouts take."""
    return lambda texts, problems: problem_rewards(texts, problems, grading, statuses)


def final_answer(text: str, problem: Problem, extraction: str = "strict") -> str | None:
    """What an attempt answered: the final answer of a math solution, the program of a code answer (None: none)."""
    if problem.domain == "code":
        return code.extract_program(text)
    return grader.extract_answer(text, extraction)
