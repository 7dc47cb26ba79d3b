from score.code import extract_program

FUNC = "def add(a, b):\n    return a + b\n"


def test_fenced_block_that_defines_a_function_wins_over_a_later_usage_block():
    answer = f"Here is the code:\n```python\n{FUNC}```\nUse it like this:\n```python\nprint(add(1, 2))\n```\n"
    assert extract_program(answer) == FUNC


def test_the_last_defining_block_wins_a_corrected_answer():
    fixed = FUNC.replace("a + b", "b + a")
    answer = f"```python\n{FUNC}```\nWait, let me fix it:\n```py\n{fixed}```"
    assert extract_program(answer) == fixed


def test_untagged_fences_count_other_languages_do_not():
    assert extract_program(f"```\n{FUNC}```") == FUNC
    assert extract_program(f"```bash\nrm -rf /\n```\n```python3\n{FUNC}```") == FUNC
    assert extract_program("```bash\nls\n```") is None


def test_an_answer_cut_off_inside_its_fence_keeps_what_was_written():
    assert extract_program(f"Sure.\n```python\n{FUNC}") == FUNC


def test_mbpp_begin_done_and_bare_code():
    assert extract_program(f"[BEGIN]\n{FUNC}[DONE]") == FUNC.rstrip() + "\n"
    assert extract_program(FUNC) == FUNC
    assert extract_program("The function adds two numbers.") is None
    assert extract_program("") is None
    assert extract_program("x" * 200_000) is None


def test_a_program_ended_by_done_without_begin():
    """A model copying the paper's shots may end its program with [DONE] and go on (the correction turn)."""
    program = "def f(x):\n    return x + 1\n"
    assert extract_program(program + "[DONE]") == program
    assert extract_program(program + "[DONE]\n\nYou are an expert Python programmer, and here is") == program
    assert extract_program("Here it is: [DONE]") is None
