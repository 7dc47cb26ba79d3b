"""Throughput of the code sandbox: HumanEval's 164 canonical solutions (all pass) and their stubs (all fail).

    .venv/bin/python bench/code_bench.py [--workers 2] [--rounds 3]

Each round judges the 164 canonical programs, then the 164 stubs, over a warm pool of `--workers` sandbox workers
(started before the timing); prints programs/s of each set (median over rounds) and checks every verdict.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "code"))

from score.code import run_programs  # noqa: E402
from score.data import HUMANEVAL, load_math  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--timeout", type=float, default=5.0)
    args = parser.parse_args()
    problems = load_math(HUMANEVAL, split="test")
    sets = {
        "canonical": ([p.solution for p in problems], True),
        "stubs": ([p.problem + "    pass\n" for p in problems], False),
    }
    tests = [p.tests for p in problems]
    run_programs(["pass"], ["pass"], args.timeout, args.workers)  # start the pool outside the timings
    rates: dict[str, list[float]] = {name: [] for name in sets}
    for _ in range(args.rounds):
        for name, (programs, expected) in sets.items():
            began = time.perf_counter()
            outcomes = run_programs(programs, tests, args.timeout, args.workers)
            rates[name].append(len(programs) / (time.perf_counter() - began))
            wrong = [p.id for p, o in zip(problems, outcomes, strict=True) if o.passed != expected]
            if wrong:
                sys.exit(f"{name}: {len(wrong)} verdicts wrong, first {wrong[0]}")
    for name, values in rates.items():
        print(f"{name}: {statistics.median(values):.1f} programs/s ({len(problems)} programs, {args.workers} "
              f"workers, median of {args.rounds} rounds)")  # fmt: skip


if __name__ == "__main__":
    main()
