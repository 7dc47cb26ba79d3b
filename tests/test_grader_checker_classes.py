"""bench/checker_classes.py: per-class counts against hand judgements, and one clear line on a bad file."""

import json
import subprocess
import sys

from score.config import REPO_ROOT

SCRIPT = REPO_ROOT / "bench" / "checker_classes.py"
ROWS = [
    {"class": "tag", "output": "<answer>7</answer>", "gold": "7", "correct": True},  # credited, right
    {"class": "tag", "output": "<answer>The sum of 3 and 4 is 7.</answer>", "gold": "7", "correct": True},
    {"class": "bait", "output": "\\boxed{5}", "gold": "5", "correct": False},  # credited though judged wrong
    {"class": "bait", "output": "It is n - 1.", "gold": "1", "correct": False, "source": "anywhere"},
]


def run(path):
    return subprocess.run([sys.executable, str(SCRIPT), str(path)], capture_output=True, text=True, timeout=120)


def test_counts_right_wrong_and_false_positives_per_class_and_mode(tmp_path):
    path = tmp_path / "judged.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in ROWS))
    done = run(path)
    assert done.returncode == 0, done.stderr
    lines = {line.split()[0]: [int(x) for x in line.split()[1:]] for line in done.stdout.splitlines()[2:]}
    # n, then right, wrong, false pos. for strict and for lenient
    assert lines["tag"] == [2, 1, 1, 0, 2, 0, 0]  # strict cannot read the sentence of two numbers; lenient can
    assert lines["bait"] == [2, 1, 1, 1, 1, 1, 1]
    assert lines["all"] == [4, 2, 2, 1, 3, 1, 1]


def test_a_bad_line_is_one_error_naming_it(tmp_path):
    path = tmp_path / "judged.jsonl"
    path.write_text(json.dumps(ROWS[0]) + "\n" + json.dumps({"class": "x", "output": "5", "gold": 5}) + "\n")
    done = run(path)
    assert done.returncode != 0
    assert done.stderr.strip().splitlines() == [f"error: {path}:2: needs gold (str), correct (bool)"]
    path.write_text("{not json\n")
    assert f"error: {path}:1: not JSON" in run(path).stderr
    assert "no such file" in run(tmp_path / "missing.jsonl").stderr
