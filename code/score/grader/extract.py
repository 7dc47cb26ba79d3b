"""Extraction: the final answer of a written solution, as a string.

Strict (the default, for training rewards) reads explicit answer markers only, none of them a guess:
\\boxed{...} / \\fbox{...}, the paper's `The final answer is $...$. I hope it is correct.`, "the answer is N"
(any case; N a number, $...$, a list in brackets, True/False or an option letter), GSM8K's `#### N`, a line
starting `Answer:` or `A:`, <answer>...</answer> tags, a JSON "answer" field. Markers come in two ranks: a box,
a "final answer", a tag, a JSON field and an option letter outrank a bare "the answer is", `Answer:`, `A:` and
`####` (a second attempt recaps the first one's answer with those); the last complete one of the higher rank
present wins, and an incomplete one (a cut-off `\\boxed{`) is passed over. A tag or field holding a sentence
gives the value the sentence states when it states one value only ("<answer>The total is 19.</answer>"); an
equation whose left side is a name or a computation gives its last side ("64 + 37 + 11 = 112"); one that opens
by saying there is no value ("Cannot be determined ...") gives none, in either mode. Text after the output runs
on into a new problem ("\\nQuestion: ...") is another problem's and is not read.
Lenient (for evaluating models not trained on the format) also reads, when there is no marker, the value
stated by the last sentence ("19 people attended.", "$48/2 = 24$", "Four containers.", "there are 9 divisors
of 196"), and a tag's sentence that states several; none when the text was cut off mid-expression, ends inside
a code block, or the number is part of a formula in variables ("C(n+m-2, n-1)").
"""

from __future__ import annotations

import re

from score.grader.units import words_to_number

_BOX = re.compile(r"\\(?:boxed|fbox)(?![a-zA-Z])")
# Explicit markers are found from keywords in the ASCII-lowercased text (str.find is far faster than a regex
# of alternatives), then read at that position: "answer" in `final answer is`/`:`, `answer is`, `Answer:` at a
# line start, <answer>, "answer": ; "option"/"choice" in a letter named in prose; `####` and `A:` at a line start.
_KEYWORDS = ("answer", "option", "choice", "####", "a:")
_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")
_AFTER_ANSWER = re.compile(r"answer\s*+\**+\s*+(?:(is)\b|:)")  # group 1: `is`, else a colon
# The markers that outrank the rest: a recap such as "In my first answer I wrote that the answer is 4" after
# "the answer is \\boxed{6}" does not replace the boxed answer.
_FIRST_RANK = frozenset({"box", "final", "choice", "tag", "json"})
_TAG_OPEN = re.compile(r"[ \t]*+>")  # the rest of `< answer >` after the keyword
_TAG_CLOSE = re.compile(r"<[ \t]*+/[ \t]*+answer[ \t]*+>", re.IGNORECASE)
# Possessive quantifiers (*+) keep every pattern linear on hostile runs of spaces; at most MAX_MARKERS markers
# are read, each within MAX_VALUE_CHARS of it, so no text costs more than linear time.
MAX_MARKERS = 64
MAX_VALUE_CHARS = 2000

_JSON_KEY = re.compile(r'"answer"\s*:')
_HOPE = re.compile(r"I hope it is correct", re.IGNORECASE)
# "the answer is (D)", "Answer: \\textbf{(C)}", "among A through E, the answer is D."
_PROSE_CHOICE = re.compile(
    r"(?i:answer|option|choice)(?:\s++(?i:is|would be|should be))?+\s*+:?+\s*+(?:(?i:option|choice)\s++)?+"
    r"(?:\$|\*\*|\\text(?:bf)?\{)*+\s*+(?:\(([A-E])\)|([A-E])(?=\s*(?:[.,;:!}$]|\*\*|\n|\Z)))"
)
# A value written after a marker: a number (with currency, thousands, %, √, π and up to two unit words) or an
# option letter or True/False, each ending its statement; or a complete $...$ / \(...\) / \[...\], which may
# start on the next line (a number there may be a numbered step instead).
_NUM = r"(?:\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?|\.\d+)"
_TERM = r"(?:" + _NUM + r"(?:√\(?\d+\)?|π)*|(?:√\(?\d+\)?|π)+)"
_QUANTITY = r"[-+]?(?:\\?\$ ?)?" + _TERM + r"(?:/" + _TERM + r")?(?: ?\\?%)?"
_END = r"(?=[ \t]*+(?:\*\*|__)?+[ \t]*+(?:[.!?;)]?+[ \t]*+(?:\n|\Z)|[.!?;][ \t]))"
_NOT_UNIT = r"(?!(?:or|and|if|than|times|plus|minus|but|not|less|more)\b)"
_VALUE = re.compile(
    r"[ \t]*+:?+[ \t]*+(?:\*\*|__)?+[ \t]*+(?:"
    rf"(?P<quantity>{_QUANTITY}(?:[ \t]+{_NOT_UNIT}[A-Za-z]+){{0,2}}){_END}"
    rf"|\((?P<letter>[a-eA-E])\){_END}|(?P<truth>True|False|true|false|TRUE|FALSE){_END}"
    rf"|\[[ \t]*+(?P<list>{_QUANTITY}(?:[ \t]*+,[ \t]*+{_QUANTITY})++)[ \t]*+\]{_END}"
    r"|\s*+(?:\$\$(?P<display>.+?)\$\$|\$(?P<inline>(?:[^$\\]|\\.)+)\$|\\\((?P<paren>.+?)\\\)|\\\[(?P<bracket>.+?)\\\])"
    r")",
    re.DOTALL,
)
# A tag or field that opens by saying there is no value states none, whatever formula it then shows.
_REFUSAL = re.compile(r"\s*(?:cannot|can't|can not|not possible|impossible|undefined|no such|there is no)\b", re.I)
_TWO_WORDS = re.compile(r"(?<![\\\w])[A-Za-z]{2,}\s+[A-Za-z]{2,}")  # "Anne is 8 years old" is a sentence
_OPTION_B_NEXT = re.compile(r"[^\n]*\n[ \t>*#]*\(?B\)?[ \t]*[:.)]")  # `A: 12` opening a list of options
_NUMBER_NEXT = re.compile(r"[ \t:*]*[-+]?\\?\$?\d")  # "the answer is 3 + 4 = 7": a number we cannot read
_HASHES_VALUE = re.compile(rf"[ \t]*({_QUANTITY})[ \t]*(?:\n|\Z)")
_JSON_VALUE = re.compile(r'\s*(?:"((?:[^"\\\n]|\\.)*)"|(-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?))')
# JSON escapes in a string; `\frac`, `\times`, `\neq` written with one backslash (a lowercase letter follows) are
# LaTeX, not a form feed, a tab or a newline, and stay as written; `\nThe` is a newline.
_JSON_ESCAPE = re.compile(r'\\(?:([\\"/])|u([0-9a-fA-F]{4})|([bfnrt])(?![a-z]))')
_JSON_ESCAPES = {"b": "", "f": "", "n": "\n", "r": "", "t": " "}
# The output runs on into a new problem (a model continuing its few-shot prompt): what follows is not ours.
_RUN_ON = re.compile(r"\n[ \t]*(?:#+[ \t]*|\*\*)?(?:Problem|Question|Q)(?:[ \t]+\d+)?[ \t]*(?:\*\*)?[ \t]*:")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|\n+")
_MATH_SPAN = re.compile(r"(?<!\\)\$([^$]+)(?<!\\)\$|\\\((.+?)\\\)")
_QUANTITY_RE = re.compile(_QUANTITY)
_PROSE_LIST = re.compile(rf"\[\s*({_QUANTITY}(?:\s*,\s*{_QUANTITY})+)\s*\]")  # "the roots are [2, 2]"
# A line that closes markup after the last sentence: </answer>, a code fence, a display's \] or $$.
_CLOSING_LINE = re.compile(r"</[A-Za-z]+>|```[A-Za-z]*|<\|[a-z_]+\|>|\\\]|\$\$")
_DOLLAR_NOT_CURRENCY = re.compile(r"(?<!\\)\$(?!\d)")  # $350 - $100 = $250 are amounts, not maths
_RELATION = re.compile(r"=|\\approx|≈")
_CODE_FENCE = re.compile(r"^[ \t]*```", re.MULTILINE)
# A number that is part of a formula in variables: a letter or `)` joined to it by an operator, or a letter
# right after it ("n-1", "2x", "a - 1", "3 + n").
_IN_FORMULA_BEFORE = re.compile(r"[A-Za-z)](?:[ \t]*[-+*/^][ \t]*)?\Z")
_IN_FORMULA_AFTER = re.compile(r"[A-Za-z](?![A-Za-z])|\(|[ \t]*[-+*/^][ \t]*[A-Za-z(\\]")
# The value a sentence states with a verb: "there are 9 divisors of 196", "the total is $322".
# ("the answer is 3 + 4 = 7" states 7: a number that a computation follows is not the stated one.)
_STATED_BY_VERB = re.compile(
    rf"\b(?:is|are|was|were|equals?|be|makes?|gives?)\s+(?:about\s+|exactly\s+)?((?>{_QUANTITY}))(?![ \t]*[-+*/=×^])"
)
_LAST_SIDE = re.compile(rf"[ \t]*+((?>{_QUANTITY}))(?:[ \t]+[A-Za-z]+){{0,2}}[ \t]*+[.!]?[ \t]*+")  # = 52 units.
_LAST_WORD = re.compile(r".*(?<![\\\w])[A-Za-z]{2,}", re.DOTALL)
_VARIABLE = re.compile(r"(?<![A-Za-z])[A-Za-z](?![A-Za-z])")
_NAME_SIDE = re.compile(r"\s*(?:[A-Za-z](?:_\{?\w+\}?)?|[^A-Za-z]*)\s*")  # `x`, `A_1`, or no variable
_WORD = re.compile(r"[A-Za-z]+(?:-[A-Za-z]+)*")
_NOT_NUMBER_BEFORE_ONE = {"no", "the", "any", "every", "some", "each", "this", "that", "which"}  # "no one"
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


def _value(match: re.Match) -> str:
    """The answer that a _VALUE match read: an option letter as (C), a quantity with its unit words."""
    if match["letter"]:
        return f"({match['letter'].upper()})"
    return next(match[k] for k in ("quantity", "truth", "list", "display", "inline", "paren", "bracket") if match[k])


def _keyword_markers(text: str, since: int) -> list[tuple[int, str, int]]:
    """The explicit markers other than boxes from text[since:] on, as (start, kind, where its value starts)."""
    marks = []
    lower = text.lower() if text.isascii() else text.translate(_ASCII_LOWER)  # same length, same offsets
    for keyword in _KEYWORDS:
        at = lower.find(keyword, since)
        while at >= 0:
            before = lower[max(0, at - 40) : at]  # a bounded look back: a line start is near, or not there
            line = before[before.rfind("\n") + 1 :]
            at_line_start = not line.strip(" \t>*#") and ("\n" in before or at <= 40)
            if keyword in ("option", "choice", "answer") and (choice := _PROSE_CHOICE.match(text, at)):
                marks.append((at, "choice", choice.end()))
            if keyword == "answer":
                after, json_key = _AFTER_ANSWER.match(lower, at), _JSON_KEY.match(lower, at - 1)
                tag = _TAG_OPEN.match(lower, at + 6) if before.rstrip(" \t").endswith("<") else None
                if tag:
                    marks.append((at - 1, "tag", tag.end()))
                elif json_key:
                    marks.append((at - 1, "json", json_key.end()))
                elif after and line.rstrip().endswith("final") and line[-1:].isspace():
                    marks.append((at, "final", after.end()))
                elif after and after[1]:
                    marks.append((at, "answer", after.end()))
                elif after and at_line_start:
                    marks.append((at, "answer line", after.end()))
            elif keyword == "####" and at_line_start and not lower.startswith("#####", at):
                marks.append((at, "hashes", at + 4))
            elif keyword == "a:" and at_line_start:
                marks.append((at, "a line", at + 2))
            at = lower.find(keyword, at + len(keyword))
    return marks


def _json_string(raw: str) -> str:
    """The text of a JSON string's body, its LaTeX kept: `\\frac` and `\\\\frac` are both \\frac."""
    return _JSON_ESCAPE.sub(lambda m: m[1] or (chr(int(m[2], 16)) if m[2] else _JSON_ESCAPES[m[3]]), raw)


def _contained_answer(content: str, strict: bool) -> tuple[str | None, str]:
    """What an answer tag or JSON field holds: a value (an equation's last side when its left side names the value
    or computes it), else the value its last sentence states; (None, "block") when it states none that `strict`
    accepts, (None, "refusal") when it says there is none."""
    if _REFUSAL.match(content):
        return None, "refusal"
    if len(content) <= MAX_VALUE_CHARS and not _TWO_WORDS.search(content) and len(_MATH_SPAN.findall(content)) <= 1:
        return _stated_value(unwrap(content)), "strong"
    sentence = _last_sentence(content)
    value = _sentence_value(sentence, strict) if sentence else None
    return (value, "strong") if value is not None else (None, "block")


def _read_marker(text: str, kind: str, start: int, end: int, strict: bool) -> tuple[str | None, str]:
    """What a marker says and how firmly: ("5", "strong"); ("x+1", "weak") for the rest of a `Final answer:`
    or `Answer:` line that is not a plain value (it counts only when no marker is strong); (None, "skip") for an
    incomplete or empty marker; (None, "block") for "the answer is 3 + 4 = 7", which hides older answers;
    (None, "refusal") for a tag or field saying there is no value, which also leaves lenient nothing to read."""
    if kind == "box":
        boxed = _boxed_content(text, end)
        return (boxed[0], "strong") if boxed else (None, "skip")
    if kind == "choice":
        choice = _PROSE_CHOICE.match(text, start)
        return f"({choice[1] or choice[2]})", "strong"
    if kind == "tag":
        close = _TAG_CLOSE.search(text, end)
        return _contained_answer(text[end : close.start()], strict) if close else (None, "skip")
    if kind == "json":
        value = _JSON_VALUE.match(text, end)
        if not value:
            return None, "skip"
        return (value[2], "strong") if value[2] else _contained_answer(_json_string(value[1]), strict)
    if kind == "hashes":
        value = _HASHES_VALUE.match(text, end)
        return (value[1], "strong") if value else (None, "skip")
    if kind == "a line" and _OPTION_B_NEXT.match(text, end):
        return None, "skip"
    value = _VALUE.match(text, end, end + MAX_VALUE_CHARS)
    if value:
        return _value(value), "strong"
    if kind == "final":
        answer, paper_form = _final_answer_content(text, end)
        if answer is None or paper_form:
            return answer, "strong" if answer is not None else "skip"
        return answer, "weak"
    if kind == "answer" and _NUMBER_NEXT.match(text, end):
        return None, "block"
    if kind == "answer line":
        return text[end:].split("\n", 1)[0].strip(" \t*"), "weak"
    return None, "skip"


def _explicit_answer(text: str, strict: bool) -> tuple[str | None, bool]:
    """The answer of the last complete explicit marker of the higher rank present (_FIRST_RANK, else the rest);
    a weak one only when no marker is strong. A marker that cannot be read hides the older ones of its rank (a
    first-rank one: all older ones). The flag: a tag or field says there is no answer."""
    boxes = [(m.start(), "box", m.end()) for m in _BOX.finditer(text)]
    # Nothing before a complete last box can win, so only the text after it is searched for other markers.
    since = boxes[-1][0] if boxes and _boxed_content(text, boxes[-1][2]) else 0
    found: dict[bool, str | None] = {}  # first rank or not -> the answer of its last strong marker
    hidden: set[bool] = set()  # ranks decided or hidden by a later marker
    weak = None
    for start, kind, end in sorted(boxes + _keyword_markers(text, since), reverse=True)[:MAX_MARKERS]:
        first_rank = kind in _FIRST_RANK
        if first_rank in hidden:
            continue
        answer, firmness = _read_marker(text, kind, start, end, strict)
        if firmness == "strong":
            found[first_rank] = answer
            if first_rank:
                break
            hidden.add(first_rank)
        elif firmness in ("block", "refusal"):
            hidden.update((first_rank, False))
            if first_rank:
                return found.get(False, weak), firmness == "refusal"
        elif firmness == "weak" and weak is None:
            weak = answer
    return found.get(True, found.get(False, weak)), False


def _cut_off(sentence: str) -> bool:
    """Whether the text stops mid-expression: an open brace, $ or \\(, or a trailing operator."""
    return (
        sentence.count("{") != sentence.count("}")
        or sentence.count("\\(") != sentence.count("\\)")
        or len(re.findall(r"(?<!\\)\$", sentence)) % 2 == 1
        or sentence.rstrip()[-1:] in ("-", "+", "*", "/", "=", "^", "_", "{", "(", "[", ",", "\\", "&")
    )


def _stated_value(span: str) -> str:
    """`48/2 = 24` -> `24`, `x \\approx 0.785` -> `0.785`: the value after the last relation, when the first side
    names the value or is a computation and no side between holds a variable (a lone letter); an equation such as
    `2x + 3y = 6` stays whole, and so do a list and `x = 3 or x = 5`."""
    sides = [re.sub(r"\\[a-zA-Z]+", "", side) for side in _RELATION.split(span)]
    if len(sides) > 1 and "," not in span and _NAME_SIDE.fullmatch(sides[0]):
        if not any(_VARIABLE.search(side) for side in sides[1:-1]):
            return _RELATION.split(span)[-1].strip()
    return span


def _number_in_words(sentence: str) -> str | None:
    """The last number written in words ("Four containers." -> "Four"); a lone "one" after "no", "the" ...
    is a pronoun."""
    words = _WORD.findall(sentence)
    found = None
    i = 0
    while i < len(words):
        size = next((k for k in range(min(12, len(words) - i), 0, -1)
                     if words_to_number(" ".join(words[i : i + k])) is not None), 0)  # fmt: skip
        pronoun = size == 1 and words[i].lower() == "one" and i and words[i - 1].lower() in _NOT_NUMBER_BEFORE_ONE
        if size and not pronoun:
            found = " ".join(words[i : i + size])
        i += size or 1
    return found


def _last_sentence(text: str) -> str | None:
    """The last sentence of `text` after closing markup lines, its currency dollars dropped; None when the text
    is cut off mid-expression, ends inside a code block or ends with a question."""
    end = len(text.rstrip())
    while _CLOSING_LINE.fullmatch(text[(start := text.rfind("\n", 0, end) + 1) : end].strip()):
        end = max(start - 1, 0)
    if len(_CODE_FENCE.findall(text, 0, end)) % 2:  # ends inside a code block: Lean or Python states no answer
        return None
    sentences = [s for s in _SENTENCE_END.split(text[:end]) if s.strip()]
    if not sentences:
        return None
    last = sentences[-1].strip()[-MAX_VALUE_CHARS:]  # what a sentence states is at its end
    if "$" in last and not _DOLLAR_NOT_CURRENCY.search(last):
        last = re.sub(r"\\?\$", "", last)
    return None if _cut_off(last) or last.endswith("?") else last  # a question states no value


def _sentence_value(sentence: str, strict: bool) -> str | None:
    """The value a sentence states: its last $...$ (the value after its last relation), else the number a verb
    states ("there are 9 divisors of 196"), its last number, list in brackets or number in words; a number in a
    formula in variables states nothing. `strict`: only a sentence that holds one value, a math span, a number
    or a list in brackets."""
    spans = _MATH_SPAN.findall(sentence)
    prose = _MATH_SPAN.sub(" ", sentence) if spans else sentence
    numbers, lists = list(_QUANTITY_RE.finditer(prose)), list(_PROSE_LIST.finditer(prose))
    if strict:
        if len(spans) + len(numbers) == 1:
            return _stated_value(spans[0][0] or spans[0][1]) if spans else _plain_number(prose, *numbers[0].span())
        if computed := _computed_value(prose):
            return computed
        one_list = (
            len(lists) == 1 and not spans and all(lists[0].start() <= n.start() < lists[0].end() for n in numbers)
        )
        return lists[0][1] if one_list else None
    if spans:
        return _stated_value(spans[-1][0] or spans[-1][1])
    if lists and (not numbers or lists[-1].end() >= numbers[-1].end()):
        return lists[-1][1]
    stated = list(_STATED_BY_VERB.finditer(prose))
    if stated:
        return _plain_number(prose, stated[-1].start(1), stated[-1].end(1))
    return _plain_number(prose, numbers[-1].start(), numbers[-1].end()) if numbers else _number_in_words(prose)


def _computed_value(sentence: str) -> str | None:
    """`the perimeter is 4 * 13 = 52 units.` -> 52, `So x = 5.` -> 5: the last side of a chain of equalities whose
    first side ends in a name or a computation, whose middle sides hold no words and whose last is one number."""
    sides = _RELATION.split(sentence)
    if len(sides) < 2 or any(re.search("[A-Za-z]", side) for side in sides[1:-1]):
        return None
    last, words = _LAST_SIDE.fullmatch(sides[-1]), _LAST_WORD.match(sides[0])
    first = sides[0][words.end() :] if words else sides[0]
    return last[1] if last and first.strip() and _NAME_SIDE.fullmatch(first) else None


def _plain_number(sentence: str, start: int, end: int) -> str | None:
    """The number sentence[start:end], or None when it is part of a formula in variables ("n-1", "2x", "a - 1",
    "3 + n")."""
    in_formula = _IN_FORMULA_BEFORE.search(sentence, 0, start) or _IN_FORMULA_AFTER.match(sentence, end)
    return None if in_formula else sentence[start:end]


def extract_answer(solution: str, extraction: str = "strict") -> str | None:
    """The final answer of a written solution, or None when there is none (or it is unbalanced or empty).

    strict: the last complete explicit answer marker of the higher rank (see the module's docstring);
    lenient: that, or when there is no marker, the value stated by the last sentence.
    """
    if extraction not in EXTRACTION_MODES:
        raise ValueError(f"extraction must be one of {EXTRACTION_MODES}, got {extraction!r}")
    if not isinstance(solution, str):
        return None
    run_on = _RUN_ON.search(solution) if "Q" in solution or "Problem" in solution else None
    if run_on:
        solution = solution[: run_on.start()]
    answer, refused = _explicit_answer(solution, extraction == "strict")
    if answer is None and not refused and not run_on and extraction == "lenient":
        sentence = _last_sentence(solution)
        answer = _sentence_value(sentence, strict=False) if sentence else None
    if answer is None:
        return None
    return unwrap(answer) or None
