import time

import pytest
from score.grader import extract_answer, reward


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
        ("The area is 12. So $x = \\frac{3}{4}$.", "\\frac{3}{4}"),
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


@pytest.mark.parametrize(
    "solution, answer",
    [
        ("So the answer is 42.", "42"),
        ("THE ANSWER IS 42", "42"),
        ("Hence the final answer is 18 dollars.", "18 dollars"),
        ("The answer is: **7**", "7"),
        ("The answer is $18.", "$18"),  # a dollar amount, not the start of maths
        ("The answer is $\\frac{1}{2}$ because it halves.", "\\frac{1}{2}"),
        ("The answer is:\n\\[\n\\frac{1}{2}\n\\]", "\\frac{1}{2}"),
        ("The answer is 2√3.", "2√3"),
        ("She sold 48/2 = 24 clips.\n#### 72", "72"),
        ("#### 1,234", "1,234"),
        ("We add them.\nAnswer: 3/4", "3/4"),
        ("**Answer:** 12", "12"),
        ("Answer: \\frac{1}{2}", "\\frac{1}{2}"),
        ("A: 5", "5"),
        ("<think>maybe 3</think><answer>7</answer>", "7"),
        ('{"reasoning": "2+2", "answer": "4"}', "4"),
        ('{"answer": 4.5}', "4.5"),
        ("The answer is True.", "True"),
        ("so the answer is (c).", "(C)"),
        # several markers: the last complete one
        ("\\boxed{5}, no, \\boxed{7}. So \\boxed{", "7"),
        ("\\boxed{1} then \\boxed{\\frac{3}{", "1"),
        ("The final answer is $68$. Checking the options, the answer is (B).", "(B)"),
        ("The answer is 3.\n#### 4", "4"),
        ("\\boxed{2}\n\nQuestion: Tom has 5 apples and eats 2. The answer is 3.", "2"),  # ran on: not ours
    ],
)
def test_explicit_answer_markers_in_both_modes(solution, answer):
    assert extract_answer(solution) == answer
    assert extract_answer(solution, "lenient") == answer


@pytest.mark.parametrize(
    "solution",
    [
        "The answer is correct.",
        "The answer is less than 10.",
        "The answer is 5 or less.",
        "The answer is 3, 4 or 5.",
        "The answer is 5. No: the answer is 3 + 4 = 7.",  # an unreadable later answer hides the older one
        "#### Step 2: compute the total",  # a markdown heading
        "#### 2. Compute the total",
        "A: Natalia sold 48 clips in April and half as many in May.",
        "To answer (a), note that 5 > 3.",
        "Answer:\n1. First we add the two numbers.",  # a numbered step, not a value
        "Which is it?\nA: 12\nB: 15\nC: 18",  # a list of options, none chosen
        "<answer>5",
        '{"answer": "5',
        "<answer>The total of 12 and 7 is 19.</answer>",  # a sentence stating several values is no strict answer
    ],
)
def test_near_miss_markers_give_no_strict_answer(solution):
    assert extract_answer(solution) is None


@pytest.mark.parametrize(
    "solution, lenient",
    [
        ("The answer is 5. No: the answer is 3 + 4 = 7.", "7"),
        ("<answer>\nThe total of 12 and 7 is 19.\n</answer>", "19"),
        ("The total is 19.\n</answer>", "19"),
        ("The result is 42.\n```", "42"),
        ("Thus:\n\\[\nx = 5\n\\]", "5"),
        ("So $48/2 = 24$.", "24"),
        ("Hence $x \\approx 0.785$.", "0.785"),
        ("So $2x + 3y = 6$.", "2x + 3y = 6"),  # an equation is the answer, not its right side
        ("The roots are [2, 2].", "2, 2"),
        ("Four containers.", "Four"),
        ("The discount is 25%.", "25%"),
        ("She has $350 - $100 = $250 left.", "250"),
        ("It is 2√3.", "2√3"),
        ("No one came.", None),
        ("Tom has 5 apples. How many are left if he eats 2?", None),  # a question states no value
        ("So $x = \\frac{4}{n} - \\frac{1}{", None),  # cut off mid-expression
        ("The total is 5 +", None),
        ("She sold 5 cups.\nQuestion: How many cups are left? He has 9 left.", None),  # ran on into a new problem
    ],
)
def test_lenient_reads_the_last_sentence_unless_cut_off(solution, lenient):
    assert extract_answer(solution) is None
    assert extract_answer(solution, "lenient") == lenient


@pytest.mark.parametrize(
    "solution, gold, extraction",
    [
        ("The answer is √3/2.", "\\frac{\\sqrt{3}}{2}", "strict"),
        ("The answer is 3π/4.", "\\frac{3\\pi}{4}", "strict"),
        ("#### $1,250", "1250", "strict"),
        ("The answer is 12 apples.", "12", "strict"),
        ("The discount is 25%.", "0.25", "lenient"),
        ("The discount is 25%.", "25", "lenient"),
        ("She has $350 - $100 = $250 left.", "250", "lenient"),
        ("Four containers.", "4", "lenient"),
        ("The roots are [2, 2].", "2, 2", "lenient"),
        ("Hence $\\frac{\\pi}{4} \\approx 0.785$.", "0.785", "lenient"),
    ],
)
def test_read_answers_are_graded(solution, gold, extraction):
    assert reward(solution, gold, extraction=extraction) == 1.0


@pytest.mark.parametrize(
    "solution, gold, extraction",
    [
        ("She has $350 - $100 = $250 left.", "350", "lenient"),
        ("The answer is 12 apples.", "13", "strict"),
        ("The answer is less than 10.", "10", "strict"),
        ("So $\\frac{4}{n} - \\frac{1}{", "1", "lenient"),  # cut off: no answer, whatever its last number
        ("No one came.", "1", "lenient"),
        ("The discount is 25%.", "0.5", "lenient"),
        ("\\boxed{3}\nProblem: What is 2 + 5? The answer is 7.", "7", "strict"),
    ],
)
def test_near_misses_are_not_credited(solution, gold, extraction):
    assert reward(solution, gold, extraction=extraction) == 0.0


# Model output is hostile: 50,000 characters of each kind must cost linear time, not quadratic (which takes
# minutes here); the bound is loose for busy machines.
HOSTILE = {
    "spaces after a marker": "the answer is" + " " * 50_000 + "x",
    "blank lines after a marker": "the answer is" + "\n" * 50_000 + "$x",
    "spaces and tabs before a colon": "answer" + " \t" * 25_000 + "?",
    "open groups after markers": "the answer is \\(" * 3_000,
    "unclosed boxes": "\\boxed{" * 7_000,
    "tags never closed": "<answer>" * 6_000,
    "headings": "####" * 12_000,
    "closing lines": "5\n" + "</a>\n" * 10_000,
    "spaces before the end": "5" + " " * 50_000 + "x",
    "number words": "one " * 12_000,
    "maths closed before it opens": "\\)" * 12_000 + "\\(" * 12_000,
    "spaced tags never closed": "< answer >" * 5_000,
    "open maths in a tag": "<answer>" + "\\(" * 12_000 + "</answer>",
    "backslashes in a JSON field": '{"answer": "' + "\\" * 50_000 + '"}',
    "verbs before numbers": "is 1 " * 10_000,
    "a long computation": "<answer>The sum is " + "1 + " * 12_000 + "1 = 12001</answer>",
    "code fences": "```\n" * 12_000 + "5",
}


@pytest.mark.parametrize("text", HOSTILE.values(), ids=HOSTILE)
def test_hostile_text_is_read_in_linear_time(text):
    for mode in ("strict", "lenient"):
        start = time.perf_counter()
        extract_answer(text, mode)
        assert time.perf_counter() - start < 1.0


@pytest.mark.parametrize(
    "solution, answer",
    [
        # a second attempt recaps the first with a weaker marker: the box or the final-answer form still wins
        ("So the answer is $\\boxed{6}$. In my previous answer I wrote that the answer is 4.", "6"),
        ("Final Answer: The final answer is $6$. I hope it is correct. Earlier I said the answer is 4.", "6"),
        ("\\boxed{6}\nMy first attempt ended with\nAnswer: 4", "6"),
        ("\\boxed{6} (the first try had\n#### 4\n)", "6"),
        ("\\boxed{6}. Before, the answer is 3 + 4 = 7, which was wrong.", "6"),  # an unreadable weak one hides no box
        ("\\boxed{5} at first, then \\boxed{6}. The answer is 4 in the first try.", "6"),  # the last of the rank
        ("The answer is 4. Then the answer is 5.", "5"),  # within a rank the last wins
        ("<answer>6</answer> In the first attempt the answer is 4.", "6"),
    ],
)
def test_a_weaker_later_marker_does_not_override_the_final_answer(solution, answer):
    assert extract_answer(solution) == answer
    assert extract_answer(solution, "lenient") == answer
    assert reward(solution, answer) == 1.0


@pytest.mark.parametrize(
    "solution, strict, lenient",
    [
        ("<answer>The garden has 14 rows.</answer>", "14", "14"),  # one stated value: both modes
        ("<answer>So there are 6 ways to seat 4 guests.</answer>", None, "6"),  # several: the verb's, lenient only
        ("<answer> $T = 2k$ and so $k = 8$ </answer>", None, "8"),
        ("<answer>Hence the width is $\\frac{3}{2}$ metres.</answer>", "\\frac{3}{2}", "\\frac{3}{2}"),
        ("< answer > 12 </answer>", "12", "12"),  # spaces inside the tags
        ("<answer><answer>12</answer>", "12", "12"),  # opened twice
        ("<Answer>12</ANSWER>", "12", "12"),
        ("<answer>Cannot be found: it is $(p^2 - 1) / 8$.</answer>", None, None),  # a refusal states no value
        ('{"reasoning": "r", "answer": "She keeps 23 stamps."}', "23", "23"),
        ('{"reasoning": "r", "answer": "\\frac{2}{7}"}', "\\frac{2}{7}", "\\frac{2}{7}"),  # LaTeX, not a form feed
        ('{"answer": "\\\\sqrt{5} \\\\times 2"}', "\\sqrt{5} \\times 2", "\\sqrt{5} \\times 2"),  # escaped properly
        ('{"answer": "\\u0034"}', "4", "4"),  # a JSON escape
        ('{"answer": "in all\\nShe keeps 23 stamps."}', "23", "23"),  # `\\nS`: a newline, not LaTeX
        ('{"answer": "x \\neq 3"}', "x \\neq 3", "x \\neq 3"),  # `\\ne...`: LaTeX
    ],
)
def test_answer_tags_and_fields_holding_sentences(solution, strict, lenient):
    assert extract_answer(solution) == strict
    assert extract_answer(solution, "lenient") == lenient


@pytest.mark.parametrize(
    "solution, answer",
    [
        ("<answer>m=-2.75</answer>", "-2.75"),  # a name: its value
        ('{"answer": "12 + 9 + 4 = 25"}', "25"),  # a computation: its result
        ('{"answer": "3 * 15 = 45 pages"}', "45 pages"),
        ("<answer>The length is 6 * 7 = 42 metres.</answer>", "42"),
        ("<answer>\\log_3 9 = 2</answer>", "2"),
        ("<answer>3a+ab=0</answer>", "3a+ab=0"),  # an equation in variables is the answer itself
        ("<answer>x = 1, y = 2</answer>", "x = 1, y = 2"),
        ("<answer>x = 3 or x = 5</answer>", "x = 3 or x = 5"),  # a variable between relations: both roots
        ("<answer>y = 2 \\text{ or } y = -1</answer>", "y = 2 \\text{ or } y = -1"),
        ("<answer>\\frac{3}{6} = \\frac{1}{2} = 0.5</answer>", "0.5"),
    ],
)
def test_an_equation_as_the_answer_gives_its_last_side_when_the_left_names_or_computes_it(solution, answer):
    assert extract_answer(solution) == answer
    assert extract_answer(solution, "lenient") == answer


@pytest.mark.parametrize(
    "solution, answer",
    [
        ("Hence the answer is [3, 5].", "3, 5"),
        ("So the answer is [-1, 2, 2]", "-1, 2, 2"),
    ],
)
def test_a_list_after_the_answer_is_read_in_both_modes(solution, answer):
    assert extract_answer(solution) == answer
    assert extract_answer(solution, "lenient") == answer


@pytest.mark.parametrize(
    "solution, gold",
    [
        ("The answer is C(p+q-1, q-1).", "-1"),  # a formula in free variables: no number
        ("Thus the count is n - 1.", "1"),
        ("The number of paths is 2n.", "2"),
        ("So it equals 3 + k.", "3"),
        ("```lean\ntheorem t (a : ℝ) : a ^ 2 ≥ 0 := by\n  nlinarith [sq_nonneg (a - 1)]\n```", "1"),  # code
        ("We conclude:\n```lean\nexample : (2 : ℕ) + 2 = 4 := by\n  norm_num\n", "4"),  # cut off inside code
        ("The limit is Tendsto f (nhds 0) (nhds 0) :=", "0"),
        ("<answer>7m</answer>", "7"),
        ('{"answer": "Not possible; it would need 5 more"}', "5"),
    ],
)
def test_numbers_in_formulas_or_code_are_no_answer_in_either_mode(solution, gold):
    assert reward(solution, gold) == 0.0
    assert reward(solution, gold, extraction="lenient") == 0.0


@pytest.mark.parametrize(
    "solution, gold",
    [
        ("So there are three ways.", "3"),
        ("The room covers 12 m².", "12"),
        ("The area is 20 cm².", "20 cm^2"),
        ("The ticket costs $\\$42$.", "42"),
        ("So the mean is 7.\n</think>", "7"),
        ('The value is <script type="math/tex">x = 9</script>', "9"),
        ("He paid $40 + $15 = $55 in total.", "55"),
    ],
)
def test_number_words_units_and_markup_in_a_last_sentence(solution, gold):
    assert reward(solution, gold, extraction="lenient") == 1.0


@pytest.mark.parametrize(
    "solution, gold",
    [
        ("<answer>c \\le 25/8</answer>", "25/8"),  # the bound asked for
        ("<answer>k = -6.25</answer>", "-6.25"),
        ('{"answer": "30 + 14 + 9 = 53"}', "53"),
        ("<answer>\\log_2 8 = 3</answer>", "3"),
    ],
)
def test_equations_as_answers_are_graded_in_both_modes(solution, gold):
    assert reward(solution, gold) == 1.0
    assert reward(solution, gold, extraction="lenient") == 1.0


def test_an_unclosed_tag_sentence_is_read_in_lenient_mode_only():
    solution = "<answer>The largest value of m is 4."
    assert extract_answer(solution) is None
    assert extract_answer(solution, "lenient") == "4"
