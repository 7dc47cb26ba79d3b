"""Speed and agreement of the answer checker, next to math-verify when that is installed.

    .venv/bin/python bench/grader_bench.py [--data ../shared/data] [--against OLD_GRADER_DIR [--rounds 30]]

Sets: the labeled dev file (pairs, hostile cases, full solutions), MATH-500 answers against
themselves, MATH-500 solutions through `reward`, and MATH-500 answers against the next row's
answer (mostly unequal pairs that go through the whole parser). Caches are cleared before each
set, and the sympy helper is restarted (a warm-up call forks it outside the timings), so every
pair is graded cold.
Single process: one core (the helper process only runs while the caller waits on it).

--against times a copy of an older score/grader/ package (e.g. `mkdir /tmp/old && git archive HEAD
code/score/grader | tar -x -C /tmp/old`, then `--against /tmp/old/code/score/grader`) against this one on the
same sets, interleaved round by round (who goes first alternates), cold caches each time, and prints the
median throughput of each and their ratio: a speed comparison from one run.
"""

from __future__ import annotations

import argparse
import importlib
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "code"))

from score.config import REPO_ROOT  # noqa: E402


def load_sets(data: Path) -> dict[str, list[tuple[str, str, str, bool | None]]]:
    """name -> [(kind, pred, gold, expected)], kind 'pair' compares answers, 'solution' runs reward."""
    sets = {}
    dev = data / "grader_dev.jsonl"
    if dev.exists():
        rows = [json.loads(line) for line in dev.open()]
        sets["dev (all 73)"] = [(r["kind"], r["pred"], r["gold"], r["equal"]) for r in rows]
        sets["dev non-hostile"] = [x for x in sets["dev (all 73)"] if x[0] != "hostile"]
    math500 = data / "math500.jsonl"
    if math500.exists():
        rows = [json.loads(line) for line in math500.open()]
        answers = [r["answer"] for r in rows]
        sets["math500 answer=answer"] = [("pair", a, a, True) for a in answers]
        sets["math500 reward(solution)"] = [("solution", r["solution"], r["answer"], True) for r in rows]
        shifted = answers[1:] + answers[:1]
        sets["math500 answer vs next answer"] = [("pair", a, b, None) for a, b in zip(answers, shifted, strict=True)]
    return sets


def checker(name: str):
    """(check, clear) of the grader package `name`: `clear` starts each set cold (empty caches, fresh sympy
    helpers whose sympy caches are empty, forked outside the timings)."""
    package = importlib.import_module(name)
    normalize, parse, symbolic = (
        importlib.import_module(f"{name}.{stage}") for stage in ("normalize", "parse", "symbolic")
    )

    def check(kind: str, pred: str, gold: str) -> bool:
        return package.reward(pred, gold) == 1.0 if kind == "solution" else package.is_equivalent(pred, gold)

    def clear() -> None:
        normalize.normalize.cache_clear()
        parse.structure.cache_clear()
        symbolic.close_helpers()
        package.is_equivalent("\\sqrt{8}", "2\\sqrt{2}")
        symbolic._VERDICTS.clear()

    return check, clear


ours, clear_caches = checker("score.grader")


def old_checker(path: Path):
    """(check, clear) of a copy of an older score/grader/ package, imported as `grader_old` (its imports of
    score.grader rewritten) so that both run in one process."""
    copy = Path(tempfile.mkdtemp()) / "grader_old"
    shutil.copytree(path, copy, ignore=shutil.ignore_patterns("__pycache__"))
    for module in copy.glob("*.py"):
        module.write_text(module.read_text().replace("score.grader", "grader_old"))
    sys.path.insert(0, str(copy.parent))  # multiprocessing pickles its functions by module name
    return checker("grader_old")


def timed(rows, check, before) -> tuple[float, int]:
    """Pairs per second over `rows` (cold: `before` clears caches first) and how many labels it got right."""
    before()
    right = 0
    start = time.perf_counter()
    for kind, pred, gold, expected in rows:
        right += check(kind, pred, gold) == expected
    return len(rows) / (time.perf_counter() - start), right


def compare_speed(sets: dict, path: Path, rounds: int) -> None:
    old_check, old_clear = old_checker(path)
    checkers = {"old": (old_check, old_clear), "new": (ours, clear_caches)}
    print(f"\n{path} (old) against score.grader (new): median of {rounds} interleaved cold rounds")
    for name, rows in sets.items():
        labeled = all(expected is not None for *_, expected in rows)
        speeds: dict[str, list[float]] = {"old": [], "new": []}
        right = {}
        for r in range(rounds):
            for who in ("old", "new") if r % 2 == 0 else ("new", "old"):
                speed, right[who] = timed(rows, checkers[who][0], checkers[who][1])
                speeds[who].append(speed)
        old, new = statistics.median(speeds["old"]), statistics.median(speeds["new"])
        score = {who: f"({right[who]}/{len(rows)} right)" if labeled else "(unlabeled)" for who in right}
        print(
            f"  {name:32s} {len(rows):4d} pairs  old {old:7.0f} pairs/s {score['old']}  "
            f"new {new:7.0f} pairs/s {score['new']}  new/old {new / old:.3f}"
        )


def math_verify_checker():
    try:
        from math_verify import parse, verify
    except ImportError:
        return None

    def check(kind: str, pred: str, gold: str) -> bool:
        try:
            target = parse(f"${gold}$")
            guess = parse(pred) if kind == "solution" else parse(f"${pred}$")
            return bool(verify(target, guess))
        except Exception:
            return False

    return check


def run(name: str, rows, check, before=None) -> None:
    if before:
        before()
    latencies = []
    right = labeled = 0
    start = time.perf_counter()
    for kind, pred, gold, expected in rows:
        t = time.perf_counter()
        got = check(kind, pred, gold)
        latencies.append(time.perf_counter() - t)
        if expected is not None:
            labeled += 1
            right += got == expected
    total = time.perf_counter() - start
    latencies.sort()
    p99 = latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))]
    score = f"{right}/{labeled} right" if labeled else "unlabeled"
    print(
        f"  {name:32s} {len(rows):4d} pairs  {len(rows) / total:9.0f} pairs/s  "
        f"p50 {statistics.median(latencies) * 1e3:8.3f} ms  p99 {p99 * 1e3:8.3f} ms  "
        f"max {latencies[-1] * 1e3:8.1f} ms  {score}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=REPO_ROOT.parent / "shared" / "data")
    parser.add_argument("--against", type=Path, help="a copy of an older score/grader/ to compare speed with")
    parser.add_argument("--rounds", type=int, default=30, help="interleaved rounds of --against")
    args = parser.parse_args()
    sets = load_sets(args.data)
    if not sets:
        sys.exit(f"error: no grader_dev.jsonl or math500.jsonl in {args.data}")
    print("score.grader (caches cleared before each set)")
    for name, rows in sets.items():
        run(name, rows, ours, clear_caches)
    if args.against:
        compare_speed(sets, args.against, args.rounds)
    mv = math_verify_checker()
    if mv is None:
        print("math-verify: not installed (pip install math-verify to compare)")
        return
    print("math-verify")
    mv("pair", "1", "1")
    for name, rows in sets.items():
        run(name, rows, mv)


if __name__ == "__main__":
    main()
