import sys

import pytest
from score.grader import reward, rewards


def test_reward():
    assert reward("So $y = \\boxed{-\\dfrac{3}{2}}$.", "-1.5") == 1.0
    assert reward("Final Answer: The final answer is $4$. I hope it is correct.", "5") == 0.0
    assert reward("I could not solve it.", "5") == 0.0


def test_rewards_matches_reward_in_process_and_in_a_pool():
    solutions = [f"The answer is $\\boxed{{\\frac{{{k}}}{{2}}}}$." for k in range(80)]
    golds = [str(k / 2) if k % 3 else "-1" for k in range(80)]
    expected = [reward(s, g) for s, g in zip(solutions, golds, strict=True)]
    assert 0 < sum(expected) < len(expected)
    assert rewards(solutions[:5], golds[:5]) == expected[:5]
    assert rewards(solutions, golds, workers=2) == expected
    with pytest.raises(ValueError, match="gold answers"):
        rewards(solutions, golds[:-1])


def test_extraction_mode_reaches_reward_and_rewards():
    assert reward("Among A through E, the answer is D.", "\\text{(D)}") == 1.0
    assert reward("19 people attended.", "19") == 0.0
    assert reward("19 people attended.", "19", extraction="lenient") == 1.0
    solutions = [f"So {k} people attended." for k in range(70)]
    golds = [str(k) for k in range(70)]
    assert rewards(solutions, golds, workers=1) == [0.0] * 70
    assert rewards(solutions, golds, workers=2, extraction="lenient") == [1.0] * 70
    with pytest.raises(ValueError, match="extraction"):
        rewards(solutions, golds, extraction="loose")


def test_a_pool_whose_workers_started_sympy_helpers_exits_and_leaves_no_process(run_counting_leftovers):
    # Gold \sqrt{2} against integers needs the sympy helper in each worker; the workers ignore SIGTERM and their
    # helpers inherited that, so the exit used to wait on them forever.
    script = (
        "from score.grader import rewards\n"
        "print(sum(rewards([f'The answer is $\\\\boxed{{{k}}}$.' for k in range(80)], ['\\\\sqrt{2}'] * 80, "
        "workers=2)))\n"
    )
    out, left = run_counting_leftovers([sys.executable, "-c", script], timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "0.0"
    assert left == []
