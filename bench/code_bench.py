"""Throughput of the code reward: HumanEval's 164 canonical solutions (all pass) and their stubs (all fail).

    .venv/bin/python bench/code_bench.py [--workers 2] [--rounds 3] [--before REV]

Each round judges the 164 canonical programs, then the 164 stubs, over a warm pool of `--workers` workers
(started before the timing); prints programs/s of each set (median over rounds) and checks every verdict. With
--before REV, the same measurement runs first on the code reward of git revision REV (its code/ tree, taken with
git archive into a temporary folder), in a child process, so both lines come from one run on one machine state.
"""

from __future__ import annotations

import argparse
import inspect
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def measure(workers: int, rounds: int, timeout: float) -> None:
    """Print the rates of the `score` package first on sys.path (this repository's, or --code's)."""
    from score.code import run_programs
    from score.data import HUMANEVAL, load_math

    problems = load_math(HUMANEVAL, split="test")
    takes_preambles = "preambles" in inspect.signature(run_programs).parameters  # revisions before the judge
    sets = {
        "canonical": ([p.solution for p in problems], True),
        "stubs": ([p.problem + "    pass\n" for p in problems], False),
    }
    tests = [p.tests for p in problems]
    extra = {"preambles": [p.preamble for p in problems]} if takes_preambles else {}
    run_programs(["pass"], ["pass"], timeout, workers)  # start the pool outside the timings
    rates: dict[str, list[float]] = {name: [] for name in sets}
    for _ in range(rounds):
        for name, (programs, expected) in sets.items():
            began = time.perf_counter()
            outcomes = run_programs(programs, tests, timeout, workers, **extra)
            rates[name].append(len(programs) / (time.perf_counter() - began))
            wrong = [p.id for p, o in zip(problems, outcomes, strict=True) if o.passed != expected]
            if wrong:
                sys.exit(f"{name}: {len(wrong)} verdicts wrong, first {wrong[0]}")
    for name, values in rates.items():
        print(f"{name}: {statistics.median(values):.1f} programs/s ({len(problems)} programs, {workers} workers, "
              f"median of {rounds} rounds)")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--timeout", type=float, default=5.0)
    parser.add_argument("--before", help="a git revision whose code reward is measured first, for comparison")
    parser.add_argument("--code", help=argparse.SUPPRESS)  # the code/ folder to measure (set for --before's child)
    args = parser.parse_args()
    if args.workers < 1 or args.rounds < 1:
        sys.exit("--workers and --rounds must be at least 1")
    if args.before:
        with tempfile.TemporaryDirectory() as folder:
            archive = subprocess.run(["git", "-C", str(REPO), "archive", args.before, "code"], capture_output=True)
            if archive.returncode != 0:
                sys.exit(f"--before {args.before}: {archive.stderr.decode().strip()}")
            subprocess.run(["tar", "-x", "-C", folder], input=archive.stdout, check=True)
            print(f"before ({args.before}):", flush=True)
            child = [sys.executable, __file__, "--workers", str(args.workers), "--rounds", str(args.rounds)]
            subprocess.run([*child, "--timeout", str(args.timeout), "--code", f"{folder}/code"], check=True)
        print("after (this tree):", flush=True)
    sys.path.insert(0, args.code or str(REPO / "code"))
    measure(args.workers, args.rounds, args.timeout)


if __name__ == "__main__":
    main()
