import pytest
from score.grader import extract_answer


@pytest.mark.parametrize(
    "solution, answer",
    [
        ("so the total is $\\boxed{\\frac{7}{3}}$.", "\\frac{7}{3}"),
        ("\\boxed{\\left\\{ 1, \\frac{2}{\\sqrt{5}} \\right\\}}", "\\left\\{ 1, \\frac{2}{\\sqrt{5}} \\right\\}"),
        ("first \\boxed{4}, on second thought \\boxed{9}", "9"),
        ("hence \\boxed 12.", "12"),
        ("\\fbox{x+1}", "x+1"),
        ("Final Answer: The final answer is $\\sqrt{3}$. I hope it is correct.", "\\sqrt{3}"),
        ("Final Answer: The final answer is $\\$4.50$. I hope it is correct.", "\\$4.50"),
        ("Final Answer: The final answer is 17. I hope it is correct.", "17"),
        ("Final Answer: The final answer is $\\boxed{8}$. I hope it is correct.", "8"),
        ("\\boxed{3} was wrong. Final Answer: The final answer is $5$. I hope it is correct.", "5"),
        ("Final Answer: The final answer is $5$. I hope it is correct. Actually \\boxed{6}", "6"),
        ("\\boxed{7}. I am sure the final answer is right.", "7"),
        ("Final answer: 12", "12"),
        ("The final answer is $3.$ I hope it is correct.", "3"),
        ("**Final Answer**\n\\[\n\\boxed{\\dfrac{3}{4}}\n\\]", "\\dfrac{3}{4}"),
        ("\\boxed{\\(2x\\)}", "2x"),
        ("\\boxed{$-1$}", "-1"),
        ("\\boxed{\\text{(D)}}", "\\text{(D)}"),
    ],
)
def test_extract_answer(solution, answer):
    assert extract_answer(solution) == answer


@pytest.mark.parametrize(
    "solution",
    [
        "no answer here",
        "",
        "\\boxed{}",
        "\\boxed{   }",
        "\\boxed{\\frac{1}{2}",  # truncated: unbalanced
        "The final answer is $\\frac{1}{2}",  # unclosed math
        "\\boxed{1} then \\boxed{\\frac{3}{",  # the last answer is the broken one
    ],
)
def test_extract_answer_none(solution):
    assert extract_answer(solution) is None
