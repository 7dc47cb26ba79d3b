"""The program in a model's answer: fenced code blocks, MBPP's [BEGIN] ... [DONE], or bare code.

Which block wins: the last complete fenced block that defines a function (``def``), else the last fenced block.
Answers that explain, then show the code, then show how to call it end with a usage block that defines nothing;
answers that correct themselves (the second attempt) end with the corrected version. Language tags other than
python (```py, ```python3 and none at all count as python) skip the block. An answer cut off inside its only fence
keeps the code written so far. Without fences, what comes before a [DONE] with no [BEGIN], else the whole answer,
counts when it parses as Python.
"""

from __future__ import annotations

import ast
import re

MAX_CHARS = 100_000  # longer answers are not programs anyone asked for
FENCE = re.compile(r"^[ \t]*```[ \t]*([\w+-]*)[^\n]*\n(.*?)^[ \t]*```", re.MULTILINE | re.DOTALL)
OPEN_FENCE = re.compile(r"^[ \t]*```[ \t]*([\w+-]*)[^\n]*\n(.*)\Z", re.MULTILINE | re.DOTALL)
BEGIN_DONE = re.compile(r"\[BEGIN\]\s*(.*?)\s*(?:\[DONE\]|\Z)", re.DOTALL)
PYTHON_TAGS = {"", "python", "py", "python3", "py3"}
DEFINES = re.compile(r"^[ \t]*(?:async[ \t]+)?def[ \t]+\w+", re.MULTILINE)


def _parses(code: str) -> bool:
    try:
        ast.parse(code)
    except (SyntaxError, ValueError, MemoryError, RecursionError):
        return False
    return True


def extract_program(solution: str) -> str | None:
    """The program of `solution` (see the module notes for which block wins), or None when there is none."""
    if not solution.strip() or len(solution) > MAX_CHARS:
        return None
    blocks = [code for tag, code in FENCE.findall(solution) if tag.lower() in PYTHON_TAGS and code.strip()]
    if blocks:
        defining = [code for code in blocks if DEFINES.search(code)]
        return (defining or blocks)[-1]
    cut = OPEN_FENCE.search(solution)
    if cut and cut[1].lower() in PYTHON_TAGS and cut[2].strip():
        return cut[2]
    begun = BEGIN_DONE.search(solution)
    if begun and begun[1].strip():
        return begun[1] + "\n"
    ended = solution.split("[DONE]")[0]  # a program ended by [DONE] without its [BEGIN], as the shots end them
    if ended != solution and ended.strip() and _parses(ended):
        return ended
    return solution if _parses(solution) else None
