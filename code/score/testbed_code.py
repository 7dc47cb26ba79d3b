"""The CPU testbed as code: the testbed's sums (score/testbed.py) asked as functions to write, scored by running them.

Problem (a HumanEval-style row: the tests stay hidden, as HumanEval's do):
    def solve():
        \"\"\"Return 473 + 259.\"\"\"
Answer: the function, with the column-by-column working as a comment and the result returned,
    ```python
    def solve():
        # 3+9+0=12 → 2, 7+5+1=13 → 32, 4+2+1=7 → 732
        return 732
    ```
and the tests `assert solve() == 732`, run in the sandbox (score/code/). The simulated base model and its habits
are the math testbed's, so its attempt 1 is about half right and its attempt 2 mostly repeats attempt 1.
"""

from __future__ import annotations

import re

from score.testbed import CHECK_OPENER, Task, operands

ANSWER = re.compile(r"^(.*)\. The answer is \$\\boxed\{(\d+)\}\$\.$")


def stub(a: int, b: int) -> str:
    return f'def solve():\n    """Return {a} + {b}."""\n'


def code_attempt(text: str) -> str:
    """A MATH-style testbed attempt ("<working>. The answer is $\\boxed{732}$.") as the function it stands for."""
    match = ANSWER.match(text)
    if match is None:
        raise ValueError(f"not a testbed attempt: {text!r}")
    working, answer = match[1], match[2]
    check = "    # checking every column again\n" if working.startswith(CHECK_OPENER) else ""
    working = working.removeprefix(CHECK_OPENER)
    return f"```python\ndef solve():\n{check}    # {working}\n    return {answer}\n```"


def code_row(row: dict) -> dict:
    """A MATH-style testbed row as a HumanEval row (task_id, prompt, canonical_solution, test, entry_point)."""
    a, b = operands(row)
    return {
        "task_id": row["unique_id"],
        "prompt": stub(a, b),
        "canonical_solution": f"    return {a + b}\n",
        "test": f"def check(candidate):\n    assert candidate() == {a + b}\n",
        "entry_point": "solve",
    }


CODE_TASK = Task(name="testbed-code", row=code_row, problem=lambda row: stub(*operands(row)), attempt=code_attempt)
