"""Rewards of code answers over the pool: HumanEval's canonical solutions pass, stubs fail, both domains mix."""

import pytest
from score.code import reward, rewards, run_tests
from score.config import GraderConfig
from score.data import HUMANEVAL, Problem, load_math
from score.domains import final_answer, problem_rewards


@pytest.fixture(scope="module")
def humaneval() -> list[Problem]:
    return load_math(HUMANEVAL, split="test")


def test_humaneval_canonical_solutions_pass_and_stubs_fail(humaneval):
    grading = GraderConfig(workers=2)
    canonical = [f"Here it is:\n```python\n{p.solution}```" for p in humaneval]
    assert problem_rewards(canonical, humaneval, grading) == [1.0] * len(humaneval)
    stubs = [f"```python\n{p.problem}    pass\n```" for p in humaneval]
    assert problem_rewards(stubs, humaneval, grading) == [0.0] * len(humaneval)


def test_answers_may_leave_out_the_stubs_imports(humaneval):
    first = humaneval[0]  # its stub imports List from typing; an answer that only writes the function still runs
    body = first.solution[first.solution.index("def ") :]
    assert problem_rewards([f"```python\n{body}```"], [first], GraderConfig(workers=1)) == [1.0]


def test_run_tests_reward_and_rewards():
    tests = "assert double(2) == 4\n"
    assert run_tests("def double(x):\n    return 2 * x\n", tests, timeout=3.0)
    assert not run_tests("def double(x):\n    return x\n", tests, timeout=3.0)
    assert reward("```python\ndef double(x):\n    return x * 2\n```", tests) == 1.0
    assert rewards(["no code here", "def double(x): return 4"], [tests, tests], workers=1) == [0.0, 1.0]
    with pytest.raises(ValueError, match="test sets"):
        rewards(["x"], [])
    helper = "def twice(x):\n    return 2 * x\n"  # a preamble's helper, as HumanEval's prompts hold them
    assert rewards(["def double(x): return twice(x)"], [tests], workers=1, preambles=[helper]) == [1.0]
    assert rewards(["def double(x): return twice(x)"], [tests], workers=1) == [0.0]
    with pytest.raises(ValueError, match="^1 preambles but 2 test sets"):
        rewards(["x", "y"], [tests, tests], preambles=["import math"])


def test_a_batch_mixes_math_and_code():
    math = Problem("m", "What is 1 + 1?", "", "2", "Algebra", 1)
    code = Problem("c", "Write double.", "", "", "mbpp", 1, "code", "assert double(3) == 6\n")
    texts = ["The answer is $\\boxed{2}$.", "```python\ndef double(x):\n    return 2 * x\n```", "So $\\boxed{3}$."]
    assert problem_rewards(texts, [math, code, math], GraderConfig(workers=1)) == [1.0, 1.0, 0.0]
    assert final_answer(texts[0], math) == "2"
    assert final_answer(texts[1], code).startswith("def double")
    with pytest.raises(ValueError, match="domain"):
        problem_rewards(["x"], [Problem("z", "?", "", "", "S", 1, "poetry")], GraderConfig())


def test_each_code_answer_says_what_the_judge_said_of_it():
    right = Problem("c1", "Write double.", "", "", "mbpp", 1, "code", "assert double(3) == 6\n")
    broken = Problem("c2", "Write double.", "", "", "mbpp", 1, "code", "assert double(3 == 6\n")
    texts = ["```python\ndef double(x):\n    return 2 * x\n```", "```python\ndef double(x):\n    return x\n```"]
    texts += ["```python\ndef double(x):\n    return 2 * x\n```", "I cannot write it."]
    statuses: dict = {}
    scores = problem_rewards(texts, [right, right, broken, right], GraderConfig(workers=1), statuses)
    assert scores == [1.0, 0.0, 0.0, 0.0]
    assert statuses == {
        ("c1", texts[0]): "passed",
        ("c1", texts[1]): "failed (AssertionError at tests line 1)",
        ("c2", texts[2]): "error (tests: SyntaxError: '(' was never closed (<unknown>, line 1))",
        ("c1", texts[3]): "no program",
    }


def test_a_job_repeated_in_a_batch_runs_once_and_every_copy_gets_its_outcome(monkeypatch):
    from score.code import batch
    from score.code.pool import Pool

    sent: list[int] = []
    pool_run = Pool.run

    def counting_run(self, jobs, timeout):
        sent.append(len(jobs))
        return pool_run(self, jobs, timeout)

    monkeypatch.setattr(Pool, "run", counting_run)
    right, wrong = "def double(x):\n    return 2 * x\n", "def double(x):\n    return x\n"
    tests, other = "assert double(2) == 4\n", "assert double(0) == 0\n"
    programs = [right, wrong, right, right, wrong, wrong]
    suites = [tests, tests, tests, other, tests, other]  # the same program against other tests is another job
    judged = batch.run_programs(programs, suites, timeout=3.0, workers=1)
    assert sent == [4]
    assert [o.passed for o in judged] == [True, False, True, True, False, True]
    assert judged[0] == judged[2] and judged[1] == judged[4]
    helper = "def twice(x):\n    return 2 * x\n"  # and with another preamble
    uses_helper = "def double(x): return twice(x)"
    assert [o.passed for o in batch.run_programs([uses_helper] * 2, [tests] * 2, 3.0, 1, [helper, ""])] == [
        True,
        False,
    ]
    assert sent == [4, 2]
