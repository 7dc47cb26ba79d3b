"""Extraction: the final answer of a written solution, as a string.

Strict (the default, for training rewards): the last \\boxed{...} / \\fbox{...}, or the paper's `The final
answer is $...$. I hope it is correct.`, or a multiple-choice letter named in prose ("the answer is (D)").
Lenient (for evaluating models not trained on the format) also takes the last number, or the last $...$,
of the last sentence ("19 people attended.").
"""

from __future__ import annotations

import re

_BOX = re.compile(r"\\(?:boxed|fbox)(?![a-zA-Z])")
_FINAL = re.compile(r"final answer(?:\s*is|\s*:)", re.IGNORECASE)
_HOPE = re.compile(r"I hope it is correct", re.IGNORECASE)
# "the answer is (D)", "Answer: \\textbf{(C)}", "among A through E, the answer is D."
_PROSE_CHOICE = re.compile(
    r"(?i:answer|option|choice)(?:\s+(?i:is|would be|should be))?\s*:?\s*(?:(?i:option|choice)\s+)?"
    r"(?:\$|\*\*|\\text(?:bf)?\{)*\s*(?:\(([A-E])\)|([A-E])(?![\w(]|\s*[=+\-*/^]))"
)
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|\n+")
_MATH_SPAN = re.compile(r"(?<!\\)\$([^$]+)(?<!\\)\$|\\\((.+?)\\\)")
_NUMBER = re.compile(r"-?\d{1,3}(?:,\d{3})+(?:\.\d+)?|-?\d+(?:\.\d+)?(?:/\d+)?")
EXTRACTION_MODES = ("strict", "lenient")


def braced(text: str, start: int) -> tuple[str, int] | None:
    """Content of the brace group opening at text[start] == '{' and the index after it; None if unbalanced."""
    depth = 0
    i = start
    while i < len(text):
        c = text[i]
        if c == "\\":
            i += 2
            continue
        if c == "{":
            depth += 1
        elif c == "}":
            depth -= 1
            if depth == 0:
                return text[start + 1 : i], i + 1
        i += 1
    return None


def _boxed_content(text: str, start: int) -> tuple[str, int] | None:
    """Argument of the \\boxed or \\fbox whose name ends at `start` (`{...}` or bare `\\boxed 5`), and its end."""
    i = start
    while i < len(text) and text[i] in " \t":
        i += 1
    if i < len(text) and text[i] == "{":
        return braced(text, i)
    bare = re.match(r"[^\s$]+", text[i:])
    return (bare.group(0).rstrip(".,;"), i + bare.end()) if bare else None


def _dollar_content(text: str) -> str | None:
    """The first $...$ (or $$...$$) math span of `text`; escaped \\$ do not delimit. None if unclosed."""
    positions = [m.start() for m in re.finditer(r"(?<!\\)\$", text)]
    if not positions:
        return None
    first = positions[0]
    if text.startswith("$$", first):
        closing = [p for p in positions if p > first + 1 and text.startswith("$$", p)]
        return text[first + 2 : closing[0]] if closing else None
    closing = [p for p in positions if p > first]
    return text[first + 1 : closing[0]] if closing else None


def _final_answer_content(text: str, start: int) -> tuple[str | None, bool]:
    """The answer after a `The final answer is` phrase ending at `start`, and whether it has the paper's
    form ($...$ or closed by `I hope it is correct`) rather than being the rest of a line of prose."""
    rest = text[start:]
    hope = _HOPE.search(rest)
    span = rest[: hope.start()].rstrip().removesuffix(".") if hope else rest
    if "$" in span:
        return _dollar_content(span), True
    if hope:
        return span.strip(), True
    return span.split("\n", 1)[0].strip(), False


def unwrap(answer: str) -> str:
    """Strip math delimiters, a surrounding \\boxed{} and a final full stop that the answer itself carries."""
    answer = answer.strip()
    for _ in range(8):  # bounded: a hostile $$$$...$$$$ must not cost quadratic time
        changed = False
        for left, right in (("$$", "$$"), ("$", "$"), ("\\(", "\\)"), ("\\[", "\\]")):
            if len(answer) >= len(left) + len(right) and answer.startswith(left) and answer.endswith(right):
                answer = answer[len(left) : len(answer) - len(right)].strip()
                changed = True
        box = _BOX.match(answer)
        inner = _boxed_content(answer, box.end()) if box else None
        if inner is not None and inner[1] == len(answer):
            answer = inner[0].strip()
            changed = True
        if not changed:
            break
    return answer.rstrip(" .")


def _marked_answer(solution: str, boxes: list[re.Match], finals: list[re.Match]) -> str | None:
    """The last \\boxed{...} / \\fbox{...} / `\\boxed 5`, or the paper's
    `Final Answer: The final answer is $...$. I hope it is correct.`, whichever comes last."""
    box_at = boxes[-1].start() if boxes else -1
    final_at = finals[-1].start() if finals else -1
    answer, paper_form = _final_answer_content(solution, finals[-1].end()) if finals else (None, False)
    # A later "final answer is ..." in plain prose ("I think the final answer is right") does not
    # override a \boxed answer; the paper's form does.
    if box_at > final_at or (boxes and not paper_form):
        boxed = _boxed_content(solution, boxes[-1].end())
        answer = None if boxed is None else boxed[0]
    return answer


def _prose_choice(solution: str) -> str | None:
    """The letter of the last "the answer is (D)" phrase, as (D)."""
    matches = list(_PROSE_CHOICE.finditer(solution))
    return f"({matches[-1][1] or matches[-1][2]})" if matches else None


def _last_sentence_answer(solution: str) -> str | None:
    """The last $...$ of the last sentence, or else its last number."""
    sentences = [s for s in _SENTENCE_END.split(solution.strip()) if s.strip()]
    if not sentences:
        return None
    last = sentences[-1]
    spans = _MATH_SPAN.findall(last)
    if spans:
        return spans[-1][0] or spans[-1][1]
    numbers = _NUMBER.findall(last)
    return numbers[-1] if numbers else None


def extract_answer(solution: str, extraction: str = "strict") -> str | None:
    """The final answer of a written solution, or None when there is none (or it is unbalanced or empty).

    strict: a \\boxed{} answer, the paper's "The final answer is" form, or a multiple-choice letter in prose;
    lenient: those, or else the last $...$ or number of the last sentence.
    """
    if extraction not in EXTRACTION_MODES:
        raise ValueError(f"extraction must be one of {EXTRACTION_MODES}, got {extraction!r}")
    if not isinstance(solution, str):
        return None
    boxes, finals = list(_BOX.finditer(solution)), list(_FINAL.finditer(solution))
    if boxes or finals:
        answer = _marked_answer(solution, boxes, finals)  # a broken \\boxed{ or "final answer is $..." is no answer
    else:
        answer = _prose_choice(solution)
        if answer is None and extraction == "lenient":
            answer = _last_sentence_answer(solution)
    if answer is None:
        return None
    return unwrap(answer) or None
