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
