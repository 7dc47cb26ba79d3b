"""Self-correction diagnostics of two attempts (Kumar et al., 2024, sections 3-4), for training logs and reports.

For pairs (attempt 1, attempt 2) of the same problem:
  p_t2_right_given_t1_wrong  P(right at t2 | wrong at t1): how often a wrong answer gets fixed
  p_t2_wrong_given_t1_right  P(wrong at t2 | right at t1): how often a right answer gets broken
  answer_changed             fraction of second attempts whose final answer differs from the first
  edit_distance              mean normalized word-level Levenshtein distance between the two attempts
The paper uses the last two to show that STaR-style training learns to repeat the first attempt with minor edits.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

MAX_EDIT_WORDS = 2000  # each attempt is compared on its first 2000 words: at most 2000 vector steps of 2000


def levenshtein(a: Sequence, b: Sequence) -> int:
    """Fewest insertions, deletions and substitutions turning sequence a into b.

    One row of the dynamic programme per item of a, each a few numpy operations over b; insertions inside a row
    are a running minimum: row[j] = min_k (cand[k] + j - k).
    """
    start = 0
    while start < min(len(a), len(b)) and a[start] == b[start]:
        start += 1
    a, b = a[start:], b[start:]
    end = 0
    while end < min(len(a), len(b)) and a[len(a) - 1 - end] == b[len(b) - 1 - end]:
        end += 1
    a, b = a[: len(a) - end], b[: len(b) - end]
    if not a or not b:
        return max(len(a), len(b))
    index = {item: i for i, item in enumerate(set(a) | set(b))}
    b_ids = np.array([index[item] for item in b])
    columns = np.arange(len(b) + 1)
    row = columns.copy()
    for i, item in enumerate(a, 1):
        cand = np.empty_like(row)
        cand[0] = i
        cand[1:] = np.minimum(row[1:] + 1, row[:-1] + (b_ids != index[item]))
        row = np.minimum.accumulate(cand - columns) + columns
    return int(row[-1])


def edit_distance(first: str, second: str) -> float:
    """Levenshtein distance over whitespace-separated words / the longer attempt's word count, in [0, 1].

    0: the same words; 1: nothing in common. Each attempt counts at most MAX_EDIT_WORDS words (bounded cost).
    """
    a, b = first.split()[:MAX_EDIT_WORDS], second.split()[:MAX_EDIT_WORDS]
    longest = max(len(a), len(b))
    return levenshtein(a, b) / longest if longest else 0.0


def same_answer(first: str | None, second: str | None) -> bool:
    """Extracted final answers compared as written, ignoring whitespace; no answer equals only no answer."""
    if first is None or second is None:
        return first is second
    return "".join(first.split()) == "".join(second.split())


def two_attempt_diagnostics(
    correct: Sequence[tuple[bool, bool]],
    answers: Sequence[tuple[str | None, str | None]],
    texts: Sequence[tuple[str, str]],
) -> dict[str, float | None]:
    """The four diagnostics over problems (see the module docstring); a conditional with no cases is None."""
    wrong_first = [second for first, second in correct if not first]
    right_first = [second for first, second in correct if first]
    n = len(texts)
    return {
        "p_t2_right_given_t1_wrong": sum(wrong_first) / len(wrong_first) if wrong_first else None,
        "p_t2_wrong_given_t1_right": sum(not c for c in right_first) / len(right_first) if right_first else None,
        "answer_changed": sum(not same_answer(a, b) for a, b in answers) / len(answers) if answers else 0.0,
        "edit_distance": sum(edit_distance(a, b) for a, b in texts) / n if n else 0.0,
    }
