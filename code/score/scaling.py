"""Sampled evaluation and inference-time scaling (Kumar et al., 2024, section on inference compute).

From n sampled two-attempt conversations per problem:
  - pass@k of each attempt, by the unbiased estimator 1 - C(n-c, k) / C(n, k) (c of the n samples right;
    Chen et al., 2021), averaged over problems;
  - majority@k of each attempt: among the first k samples' final answers at that attempt, the answer with the most
    answers equivalent to it (the answer checker's equivalence, the one rewards use: `1/2`, `\\frac{1}{2}` and
    `0.5` are one answer), right if that answer is; exact ties go to the answer that appeared first; no answer
    casts no vote;
  - the paper's comparison at an equal budget of k model answers: k independent first attempts with a majority
    vote (parallel, self-consistency) against k/2 conversations each followed by a second attempt, voting on the
    second attempts (sequential self-correction).
The samples are drawn with a seed and in a random order, so the first k of them are a random sample of k.
"""

from __future__ import annotations

import math
from itertools import combinations
from pathlib import Path

from score.grader import is_equivalent


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased estimate of P(at least one of k samples right) from n samples of which c are right."""
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"need 0 <= c <= n and 1 <= k <= n: n={n}, c={c}, k={k}")
    if n - c < k:
        return 1.0
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)


def equivalences(answers: list[str | None], timeout: float = 2.0, is_math: bool = True) -> list[list[bool]]:
    """equivalent[i][j]: whether answers i and j are the same answer (grader.is_equivalent, at most `timeout`
    seconds per comparison, once per pair of distinct texts); no answer (None, blank) matches nothing. Answers that
    are not math (programs) are equal only as text: the answer checker has nothing to say about them."""
    texts = [answer.strip() if answer else "" for answer in answers]
    same: dict[tuple[str, str], bool] = {}
    for a, b in combinations(sorted(set(texts) - {""}), 2):
        same[a, b] = same[b, a] = is_math and is_equivalent(a, b, timeout)
    return [[bool(a) and bool(b) and (a == b or same[a, b]) for b in texts] for a in texts]


def majority_correct(equivalent: list[list[bool]], correct: list[bool], k: int) -> bool:
    """Whether the vote among the first k answers is right: each answer's support is how many of the k answers
    are equivalent to it (itself included), and the best supported answer wins, judged by its own correctness.
    Equivalence need not be transitive (50% = 50 and 50% = 0.5, but 50 != 0.5), so a vote by classes would depend
    on the order of the answers; this one changes with the order only on an exact tie, which goes to the answer
    seen first. No answer casts no vote."""
    support = [sum(equivalent[i][:k]) for i in range(k)]
    if not any(support):
        return False
    return bool(correct[support.index(max(support))])


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
        # Equivalences of all n answers at once: the first k rows and columns are those of a vote among k alone.
        votes = [
            (
                equivalences([s[t]["answer"] for s in samples[:n]], timeout, domain == "math"),
                [s[t]["correct"] for s in samples[:n]],
            )
            for samples, domain in zip(records, domains or ["math"] * problems, strict=True)
        ]
        out[f"majority_at_k_t{t + 1}"] = {
            k: sum(majority_correct(equivalent, correct, k) for equivalent, correct in votes) / problems
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
