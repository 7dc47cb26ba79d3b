"""The answer checker on hand-judged model outputs, counted per class of output, in strict and lenient modes.

    .venv/bin/python bench/checker_classes.py OUTPUTS.jsonl

OUTPUTS.jsonl holds one object a line: "class" (a name such as `equation` or `false_positive`), "output" (the model's
text, or its tail), "gold" (the gold answer) and "correct" (true when a person judged the output's final answer
right); other fields (the source, say) are ignored. Such a file is kept outside the project, so that the figures
measure the checker on outputs it was not tuned on. For each class and mode it prints how often the checker agrees
with the judgement (right), disagrees (wrong) and, of the wrong ones, credits an output judged wrong (false pos.).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "code"))

from score.grader import reward  # noqa: E402
from score.grader.extract import EXTRACTION_MODES  # noqa: E402

FIELDS = {"class": str, "output": str, "gold": str, "correct": bool}


def load(path: Path) -> list[dict]:
    """The judged outputs of `path`; exits with one line naming the first bad line."""
    rows = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError as error:
            sys.exit(f"error: {path}:{number}: not JSON ({error})")
        bad = [k for k, kind in FIELDS.items() if not isinstance(row, dict) or not isinstance(row.get(k), kind)]
        if bad:
            sys.exit(f"error: {path}:{number}: needs {', '.join(f'{k} ({FIELDS[k].__name__})' for k in bad)}")
        rows.append(row)
    if not rows:
        sys.exit(f"error: {path}: no judged outputs")
    return rows


def counts(rows: list[dict], extraction: str) -> dict[str, Counter]:
    """class -> Counter of right, wrong and false positives (credited though judged wrong), plus 'all'."""
    tally: dict[str, Counter] = {}
    for row in rows:
        credited = reward(row["output"], row["gold"], extraction=extraction) == 1.0
        for name in (row["class"], "all"):
            count = tally.setdefault(name, Counter())
            count["n"] += 1
            count["right" if credited == row["correct"] else "wrong"] += 1
            count["false pos."] += credited and not row["correct"]
    return tally


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("outputs", type=Path, help="JSONL of hand-judged outputs (see above)")
    args = parser.parse_args()
    if not args.outputs.is_file():
        sys.exit(f"error: {args.outputs}: no such file")
    rows = load(args.outputs)
    tallies = {mode: counts(rows, mode) for mode in EXTRACTION_MODES}
    names = sorted({row["class"] for row in rows}) + ["all"]
    header = "".join(f"  {mode:>27s}" for mode in EXTRACTION_MODES)  # over the three columns of each mode
    print(f"{'class':18s} {'n':>4s}{header}")
    print(f"{'':18s} {'':4s}" + "  {:>7s} {:>7s} {:>11s}".format("right", "wrong", "false pos.") * len(tallies))
    for name in names:
        cells = "".join(
            f"  {t[name]['right']:7d} {t[name]['wrong']:7d} {t[name]['false pos.']:11d}" for t in tallies.values()
        )
        print(f"{name:18s} {tallies['strict'][name]['n']:4d}{cells}")


if __name__ == "__main__":
    main()
