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


@pytest.mark.parametrize(
    "solution, answer",
    [
        ("Therefore, among A through E, the answer is D.", "(D)"),
        ("So the answer is (B).", "(B)"),
        ("Answer: \\textbf{(C)}", "(C)"),
        ("The correct option is (E) since the others fail.", "(E)"),
        ("At first the answer is (A); checking again, the answer is (C).", "(C)"),
        ("The answer is (A) by inspection, so \\boxed{5}", "5"),  # a \\boxed answer comes first
        ("The answer is a number we cannot find.", None),  # a lowercase word is no choice
    ],
)
def test_multiple_choice_in_prose_in_both_modes(solution, answer):
    assert extract_answer(solution) == answer
    assert extract_answer(solution, "lenient") == answer


@pytest.mark.parametrize(
    "solution, lenient",
    [
        ("19 people attended.", "19"),
        ("There were 1,000 of them. That makes 250 per box.", "250"),
        ("So the side is 3.5 cm. ", "3.5"),
        ("So the answer is B = 5.", "5"),  # B = 5 names no choice
        ("The area is 12. So $x = \\frac{3}{4}$.", "x = \\frac{3}{4}"),
        ("We get 12 apples. I hope this helps!", None),  # the last sentence has no number
        ("\\boxed{\\frac{1}{2}", None),  # a broken box is no answer, even for lenient
        ("The final answer is $\\frac{1}{2}", None),
        ("no answer here", None),
    ],
)
def test_unboxed_answers_only_in_lenient_mode(solution, lenient):
    assert extract_answer(solution) is None
    assert extract_answer(solution, "lenient") == lenient


def test_lenient_keeps_boxed_and_paper_forms():
    assert extract_answer("19 people, so \\boxed{20}.", "lenient") == "20"
    assert extract_answer("Final Answer: The final answer is $7$. I hope it is correct.", "lenient") == "7"


def test_unknown_extraction_mode_is_an_error():
    with pytest.raises(ValueError, match="lenient"):
        extract_answer("\\boxed{1}", "loose")
