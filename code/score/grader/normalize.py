"""Normalisation: an answer string to a canonical string, with linear-time regexes only.

Wrappers, spacing, \\text{} groups, units, degree marks, thousands separators and the like go; mixed
numbers, repeating decimals and base-n numerals are rewritten so that the parser sees plain maths.
"""

from __future__ import annotations

import re
from fractions import Fraction
from functools import lru_cache

from score.grader.extract import braced, unwrap
from score.grader.limits import Reject

_UNICODE = {"−": "-", "–": "-", "×": "\\times ", "·": "\\cdot ", "÷": "\\div ", "π": "\\pi ", "∞": "\\infty ",
            "√": "\\sqrt ", "≤": "\\le ", "≥": "\\ge ", "≠": "\\ne ", "∪": "\\cup ", "°": "", "±": "\\pm "}  # fmt: skip
_TEXT_CMD = re.compile(r"\\(text(?:bf|it|rm|normal|sf|tt)?|mbox|math(?:rm|bf|it|sf)|operatorname)\s*(?=\{)")
_WORDY = re.compile(r"[A-Za-z][A-Za-z\s.'\-]*")
MATH_WORDS = {"sqrt", "pi", "sin", "cos", "tan", "cot", "sec", "csc", "log", "ln", "exp", "inf", "infty", "or", "and"}
_REPLACEMENTS = [
    (re.compile(r"\\(?:left|right|bigl|bigr|Bigl|Bigr|biggl|biggr|Biggl|Biggr|big|Big|bigg|Bigg)(?![a-zA-Z])\.?"), ""),
    (re.compile(r"\\[dtc]frac(?![a-zA-Z])"), r"\\frac"),
    (re.compile(r"\\[dt]binom(?![a-zA-Z])"), r"\\binom"),
    (re.compile(r"\\(?:displaystyle|textstyle|limits|nolimits)(?![a-zA-Z])"), ""),
    (re.compile(r"(?<=\d)(?:\{,\}|,\\!|\\[,!;: ])\s*(?=\d{3}(?!\d))"), ""),  # thousands: 1{,}000 1,\!000 1\,000
    (re.compile(r"(?<!\\)\\(?:[,;:! ]|quad|qquad)|~"), " "),
    (re.compile(r"\^\s*\{\s*\\circ\s*\}|\^\s*\\circ|\\circ|\\degree"), ""),
    (re.compile(r"\\?[%$]"), ""),
    (re.compile(r"\\mathbb\s*\{?\s*R\s*\}?"), r"(-\\infty,\\infty)"),
    (re.compile(r"\\infinity|\\inf(?![a-zA-Z])|(?<![a-zA-Z\\])(?:infinity|infty|inf)(?![a-zA-Z])"), r"\\infty "),
    (re.compile(r"\\(?:varnothing|emptyset)|\\\{\s*\\\}"), r"\\emptyset "),
    (re.compile(r"\\[lr]vert|\\vert|\\mid"), "|"),
    (re.compile(r"^\s*[a-zA-Z]\s*\\in(?![a-zA-Z])"), ""),  # x \in [-2, 7]
    (re.compile(r"\s+(?:or|and)\s+"), ","),
]
_MIXED = re.compile(r"(?<![\w.^_}\)\]\\])(\d+)\s*\\frac\s*(?:\{\s*(\d+)\s*\}|(\d))\s*(?:\{\s*(\d+)\s*\}|(\d))")
_BASE = re.compile(r"(?<![\w.^_}\\])([0-9A-F]+)_\{?(\d{1,2})\}?(?![\d}])")
_REPEATING = re.compile(r"(?<!\d)(\d*)\.(\d*)\\overline\s*\{(\d+)\}")
_THOUSANDS = re.compile(r"[-+]?\d{1,3}(?:,\d{3})+(?:\.\d+)?")
_UNITS = re.compile(r"(?<=[\d}\)])\s*([A-Za-z]{2,}(?: [A-Za-z]{2,})*)\s*(?:\^\s*\{?\d\}?)?$")
_SPACES = re.compile(r"\s+(?![a-zA-Z])|(?<![a-zA-Z])\s+")


def _strip_text(s: str) -> str:
    """\\text{}-like groups: `or`/`and` become commas, units and words next to math go, the rest is unwrapped."""
    for _ in range(64):
        m = _TEXT_CMD.search(s)
        if not m:
            return s
        group = braced(s, m.end())
        if group is None:
            raise Reject
        content, end = group
        word = content.strip()
        rest = (s[: m.start()] + s[end:]).strip()
        if word in ("or", "and"):
            s = s[: m.start()] + "," + s[end:]
        elif not rest or re.fullmatch(r"\(?[A-E]\)?", word) or (m.group(1) != "text" and len(word) == 1):
            s = s[: m.start()] + " " + content + " " + s[end:]
        elif _WORDY.fullmatch(word):
            tail = re.match(r"\s*\^\s*\{?\d\}?", s[end:])
            s = s[: m.start()] + " " + s[end + (tail.end() if tail else 0) :]
        else:
            s = s[: m.start()] + " " + content + " " + s[end:]
    raise Reject


def _drop_redundant_groups(s: str) -> str:
    """((x)) -> (x) and {{x}} -> {x}: keeps deep but harmless nesting within the parser's depth limit."""
    opener = {")": "(", "}": "{"}
    stack: list[int] = []
    match: dict[int, int] = {}
    i = 0
    while i < len(s):
        c = s[i]
        if c == "\\":
            i += 2
            continue
        if c in "({":
            stack.append(i)
        elif c in ")}" and stack and s[stack[-1]] == opener[c]:
            match[stack.pop()] = i
        i += 1
    drop = {j for i, j in match.items() if match.get(i + 1) == j - 1 and s[i] == s[i + 1]}
    drop |= {i for i, j in match.items() if j in drop}
    return "".join(c for k, c in enumerate(s) if k not in drop) if drop else s


def _repeating(m: re.Match) -> str:
    whole, fixed, period = m.group(1) or "0", m.group(2), m.group(3)
    if len(whole) + len(fixed) + len(period) > 100:
        raise Reject
    value = Fraction(int(whole + fixed + period) - int(whole + fixed), (10 ** len(period) - 1) * 10 ** len(fixed))
    return f"\\frac{{{value.numerator}}}{{{value.denominator}}}"


def _base_numeral(m: re.Match) -> str:
    digits, base = m.group(1), int(m.group(2))
    if 2 <= base <= 16 and all(int(d, 16) < base for d in digits):
        return digits
    return m.group(0)


def _trailing_units(m: re.Match) -> str:
    return "" if not set(m.group(1).lower().split()) & MATH_WORDS else m.group(0)


@lru_cache(maxsize=8192)
def normalize(answer: str) -> str:
    """A canonical string for an answer: wrappers, spacing, units and decorations removed."""
    s = " ".join(unwrap(answer).split())
    for k, v in _UNICODE.items():
        if k in s:
            s = s.replace(k, v)
    s = _strip_text(s)
    for pattern, repl in _REPLACEMENTS:
        s = pattern.sub(repl, s)
    s = _MIXED.sub(lambda m: f"({m[1]}+\\frac{{{m[2] or m[3]}}}{{{m[4] or m[5]}}})", s)
    s = _BASE.sub(_base_numeral, s)
    s = _REPEATING.sub(_repeating, s)
    s = _UNITS.sub(_trailing_units, s)
    s = _SPACES.sub("", s.strip()).rstrip(".")
    if _THOUSANDS.fullmatch(s):
        s = s.replace(",", "")
    return _drop_redundant_groups(s)
