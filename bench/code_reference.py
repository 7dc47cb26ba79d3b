"""MBPP's reference solutions through the code reward and through plain Python: both pass rates, and every
problem where they differ.

    .venv/bin/python bench/code_reference.py ../shared/data/mbpp.jsonl [--workers 2] [--timeout 10]

Each row's `code` is run against its own test_setup_code, test_list and challenge_test_list: once in plain Python
(a subprocess of this interpreter per problem, in a temporary folder, killed at --timeout: the reference code is
the dataset's, not a model's), once through score.code.run_programs. Prints both rates and, for each problem
where they differ, the judge's status (why the reward differs).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "code"))

from score.code import run_programs  # noqa: E402


def plain_python(program: str, tests: str, timeout: float) -> bool:
    with tempfile.TemporaryDirectory() as folder:
        try:
            done = subprocess.run([sys.executable, "-I", "-c", f"{program}\n{tests}"], cwd=folder, timeout=timeout,
                                  capture_output=True)  # fmt: skip
        except subprocess.TimeoutExpired:
            return False
    return done.returncode == 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mbpp", type=Path, help="an MBPP jsonl file (text, code, test_list, test_setup_code, ...)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--timeout", type=float, default=10.0)
    args = parser.parse_args()
    try:
        rows = [json.loads(line) for line in args.mbpp.read_text().splitlines() if line.strip()]
    except (OSError, ValueError) as e:
        sys.exit(f"{args.mbpp}: {e}")
    tests = [
        "\n".join([r.get("test_setup_code") or "", *r["test_list"], *(r.get("challenge_test_list") or [])]) + "\n"
        for r in rows
    ]
    programs = [r["code"] for r in rows]
    judged = run_programs(programs, tests, args.timeout, args.workers)
    plain = [plain_python(p, t, args.timeout) for p, t in zip(programs, tests, strict=True)]
    n = len(rows)
    print(f"plain Python: {sum(plain)} of {n} pass; code reward: {sum(o.passed for o in judged)} of {n} pass")
    for row, ok, outcome in zip(rows, plain, judged, strict=True):
        if ok != outcome.passed:
            print(f"  task {row.get('task_id')}: plain {'pass' if ok else 'fail'}, reward: {outcome.status}")


if __name__ == "__main__":
    main()
