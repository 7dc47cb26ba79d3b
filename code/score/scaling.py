"""Sampled evaluation and inference-time scaling (Kumar et al., 2024, section on inference compute).

From n sampled two-attempt conversations per problem:
  - pass@k of each attempt, by the unbiased estimator 1 - C(n-c, k) / C(n, k) (c of the n samples right;
    Chen et al., 2021), averaged over problems;
  - majority@k of each attempt: the most frequent final answer among the first k samples' answers at that
    attempt, right if that answer is. Answers vote by the answer checker's equivalence (the one rewards use), so
    `1/2`, `\\frac{1}{2}` and `0.5` are one answer; ties go to the answer that appeared first; no answer casts no vote;
  - the paper's comparison at an equal budget of k model answers: k independent first attempts with a majority
    vote (parallel, self-consistency) against k/2 conversations each followed by a second attempt, voting on the
    second attempts (sequential self-correction).
The samples are drawn with a seed and in a random order, so the first k of them are a random sample of k.
"""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path

from score.grader import is_equivalent


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased estimate of P(at least one of k samples right) from n samples of which c are right."""
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"need 0 <= c <= n and 1 <= k <= n: n={n}, c={c}, k={k}")
    if n - c < k:
        return 1.0
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)


def answer_classes(answers: list[str | None], timeout: float = 2.0, is_math: bool = True) -> list[int | None]:
    """The equivalence class of each answer (None: no answer), numbered in order of first appearance.

    An answer joins the first class whose first answer it is equivalent to (grader.is_equivalent, at most
    `timeout` seconds per comparison), else starts a new class: one comparison per class, not per pair. Answers
    that are not math (programs) are equal only as text: the answer checker has nothing to say about them."""
    firsts: list[str] = []
    classes: list[int | None] = []
    for answer in answers:
        text = answer.strip() if answer else ""
        if not text:
            classes.append(None)
            continue
        match = (
            i for i, first in enumerate(firsts) if text == first or (is_math and is_equivalent(text, first, timeout))
        )
        found = next(match, len(firsts))
        if found == len(firsts):
            firsts.append(text)
        classes.append(found)
    return classes


def majority_correct(classes: list[int | None], correct: list[bool]) -> bool:
    """Whether the most frequent answer class is right (judged by its first answer); ties go to the class that
    appeared first, and no answer (None) casts no vote."""
    counts = Counter(c for c in classes if c is not None)
    if not counts:
        return False
    top = max(counts.values())
    winner = min(c for c, count in counts.items() if count == top)  # classes are numbered by first appearance
    return bool(correct[classes.index(winner)])


def sampled_metrics(records: list[list[list[dict]]], timeout: float = 2.0, domains: list[str] | None = None) -> dict:
    """records[problem][sample][attempt] = {"answer", "correct"}. pass@k and majority@k per attempt for
    k = 1..n, and the equal-budget comparison for even k (needs 2 attempts). Fractions of the problems.
    timeout: seconds per answer comparison when grouping answers into classes for the vote; domains: each
    problem's domain (default math), code answers voting as text."""
    n = min(len(samples) for samples in records)
    attempts = min(len(sample) for samples in records for sample in samples)
    problems = len(records)
    out: dict = {"n": n, "problems": problems, "attempts": attempts}
    for t in range(attempts):
        hits = [sum(bool(s[t]["correct"]) for s in samples[:n]) for samples in records]
        out[f"pass_at_k_t{t + 1}"] = {k: sum(pass_at_k(n, c, k) for c in hits) / problems for k in range(1, n + 1)}
        # Classes of all n answers at once: the first k samples' classes are those of a vote among them alone.
        votes = [
            (
                answer_classes([s[t]["answer"] for s in samples[:n]], timeout, domain == "math"),
                [s[t]["correct"] for s in samples[:n]],
            )
            for samples, domain in zip(records, domains or ["math"] * problems, strict=True)
        ]
        out[f"majority_at_k_t{t + 1}"] = {
            k: sum(majority_correct(classes[:k], correct[:k]) for classes, correct in votes) / problems
            for k in range(1, n + 1)
        }
    if attempts >= 2:
        out["equal_budget"] = {
            k: {
                "parallel_t1": out["majority_at_k_t1"][k],
                "sequential_t2": out["majority_at_k_t2"][k // 2],
            }
            for k in range(2, n + 1, 2)
        }
    return out


def scaling_markdown(metrics: dict) -> str:
    """The sampled section of results.md (percent)."""
    n, attempts = metrics["n"], metrics["attempts"]
    temperature = f", temperature {metrics['temperature']:g}" if "temperature" in metrics else ""
    lines = [
        f"## Sampled: {n} conversations per problem{temperature}",
        "",
        "| k | " + " | ".join(f"pass@k t{t} | majority@k t{t}" for t in range(1, attempts + 1)) + " |",
        "|---|" + "---|---|" * attempts,
    ]
    for k in range(1, n + 1):
        cells = [
            f"{100 * metrics[f'pass_at_k_t{t}'][k]:.1f} | {100 * metrics[f'majority_at_k_t{t}'][k]:.1f}"
            for t in range(1, attempts + 1)
        ]
        lines.append(f"| {k} | " + " | ".join(cells) + " |")
    if "equal_budget" in metrics:
        lines += [
            "",
            "### Equal budget of k answers: k first attempts, majority vote, against k/2 first attempts each "
            "followed by a second attempt, majority vote over the second attempts",
            "",
            "| k | parallel: majority of k first attempts | sequential: majority of k/2 second attempts |",
            "|---|---|---|",
        ]
        for k, row in metrics["equal_budget"].items():
            lines.append(f"| {k} | {100 * row['parallel_t1']:.1f} | {100 * row['sequential_t2']:.1f} |")
    return "\n".join(lines) + "\n"


def plot_scaling(metrics: dict, path: Path) -> None:
    """Accuracy against the budget k: parallel majority of first attempts, sequential majority of second
    attempts (left); pass@k of each attempt (right)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = metrics["n"]
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.5))
    ks = list(range(1, n + 1))
    left.plot(ks, [100 * metrics["majority_at_k_t1"][k] for k in ks], marker="o", label="parallel: k first attempts")
    if "equal_budget" in metrics:
        even = list(metrics["equal_budget"])
        seq = [100 * metrics["equal_budget"][k]["sequential_t2"] for k in even]
        left.plot(even, seq, marker="s", label="sequential: k/2 × (attempt 1 → 2)")
    left.set(xlabel="answers sampled per problem (k)", ylabel="majority-vote accuracy (%)", title="Equal budget")
    left.legend(fontsize=8)
    for t in range(1, metrics["attempts"] + 1):
        right.plot(ks, [100 * metrics[f"pass_at_k_t{t}"][k] for k in ks], marker="o", label=f"attempt {t}")
    right.set(xlabel="k", ylabel="pass@k (%)", title="pass@k")
    right.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
