"""Normalisation: an answer string to a canonical string and the key of its unit, with linear-time regexes.

Wrappers, spacing, \\text{} groups, units, labels (`\\angle A =`), degree marks, thousands separators and the
like go; mixed numbers, repeating decimals, numbers in words, degrees inside trig functions, times of day,
set-builder notation and base-n numerals are rewritten into the forms the parser reads.
"""

from __future__ import annotations

import re
from fractions import Fraction
from functools import lru_cache

from score.grader.extract import braced, unwrap
from score.grader.limits import Reject
from score.grader.units import unit_key, words_to_number

_UNICODE = {"−": "-", "–": "-", "×": "\\times ", "·": "\\cdot ", "÷": "\\div ", "π": "\\pi ", "∞": "\\infty ",
            "√": "\\sqrt ", "≤": "\\le ", "≥": "\\ge ", "≠": "\\ne ", "∪": "\\cup ", "°": "^\\circ ",
            "±": "\\pm ", "²": "^2", "³": "^3"}  # fmt: skip
_TEXT_CMD = re.compile(r"\\(text(?:bf|it|rm|normal|sf|tt)?|mbox|math(?:rm|bf|it|sf)|operatorname)\s*(?=\{)")
_WORDY = re.compile(r"[A-Za-z][A-Za-z\s.'\-]*(?:(?:/|\^\s*\{?-?\d\}?)[A-Za-z\s.'\-]*)*")
_UNIT_TAIL = re.compile(r"\s*\^\s*\{?-?\d\}?|\s*/\s*\\(?:text|mbox|mathrm)\s*\{[A-Za-z\s.]*\}(?:\s*\^\s*\{?\d\}?)?")
MATH_WORDS = {"sqrt", "pi", "sin", "cos", "tan", "cot", "sec", "csc", "log", "ln", "exp", "inf", "infty", "or", "and"}
# 9:15 a.m., 9:15 \text{ p.m.}, 9 \text{ AM}, 21:15: times of day are written H:MM on the 24-hour clock.
_TIME = re.compile(
    r"(?<![\d.:])(?P<h>\d{1,2})(?::(?P<m>\d{2}))?\s*(?P<text>\\(?:text|mbox|mathrm|textrm)\s*\{\s*)?"
    r"(?P<ampm>[aApP])\.?\s*[mM]\.?(?(text)\s*\})(?![a-zA-Z])|(?<![\d.:])(?P<h24>\d{1,2}):(?P<m24>\d{2})(?![\d.:])"
)
# \sin 30^\circ, \cos(45^\circ): an angle in degrees inside a trig function becomes radians.
_DEGREE = r"\s*(?:\^\s*\{\s*\\circ\s*\}|\^\s*\\circ|\\circ|\\degree)"
_TRIG_DEGREES = re.compile(
    r"(\\(?:sin|cos|tan|cot|sec|csc)(?:\s*\^\s*\{?-?\d\}?)?)\s*(?:\(\s*(-?\d+(?:\.\d+)?)" + _DEGREE + r"\s*\)"
    r"|\{\s*(-?\d+(?:\.\d+)?)" + _DEGREE + r"\s*\}|(-?\d+(?:\.\d+)?)" + _DEGREE + ")"
)
# (substrings that must occur for the pattern to match, pattern, literal replacement): the check skips most
# patterns for most answers, and a literal replacement never goes through re's template expansion.
_REPLACEMENTS = [(triggers, re.compile(pattern), text) for triggers, pattern, text in [
    (("\\left", "\\right", "\\big", "\\Big"),
     r"\\(?:left|right|bigl|bigr|Bigl|Bigr|biggl|biggr|Biggl|Biggr|big|Big|bigg|Bigg)(?![a-zA-Z])\.?", ""),
    (("frac",), r"\\[dtc]frac(?![a-zA-Z])", "\\frac"),
    (("binom",), r"\\[dt]binom(?![a-zA-Z])", "\\binom"),
    (("style", "limits"), r"\\(?:displaystyle|textstyle|limits|nolimits)(?![a-zA-Z])", ""),
    (("\\", "{,}"), r"(?<=\d)(?:\{,\}|,\\!|\\[,!;: ])\s*(?=\d{3}(?!\d))", ""),  # thousands: 1{,}000 1,\!000 1\,000
    (("\\", "~"), r"(?<!\\)\\(?:[,;!: ]|quad|qquad)|~", " "),
    (("circ", "degree"), _DEGREE, ""),
    (("%", "$"), r"\\?[%$]", ""),
    (("mathbb", "eal", "EAL"),
     r"\\mathbb\s*\{?\s*R\s*\}?|^(?i:(?:the set of )?all real numbers)$", "(-\\infty,\\infty)"),
    (("inf",), r"\\infinity|\\inf(?![a-zA-Z])|(?<![a-zA-Z\\])(?:infinity|infty|inf)(?![a-zA-Z])", "\\infty "),
    (("varnothing", "emptyset", "\\{"), r"\\(?:varnothing|emptyset)|\\\{\s*\\\}", "\\emptyset "),
    (("vert", "mid"), r"\\[lr]vert|\\vert|\\mid", "|"),
    (("\\in",), r"^\s*[a-zA-Z]\s*\\in(?![a-zA-Z])", ""),  # x \in [-2, 7]
    (("or", "and", "vee"), r"\s*,\s*(?:or|and)\s+|\s+or\s+|\\(?:lor|vee)(?![a-zA-Z])", ","),
    # "and" joins inequalities into an intersection (x > 1 and x < 4) and anything else into a list.
    (("and", "wedge"), r"\s+and\s+|\\(?:land|wedge)(?![a-zA-Z])", " \\land "),
]]  # fmt: skip
_SET_BUILDER = re.compile(r"\\\{\s*([a-zA-Z])\s*(?:\\in\s*\(-\\infty,\\infty\)\s*)?(?::|\|)(.*)\\\}")
_MIXED = re.compile(r"(?<![\w.^_}\)\]\\])(\d+)\s*\\frac\s*(?:\{\s*(\d+)\s*\}|(\d))\s*(?:\{\s*(\d+)\s*\}|(\d))")
# 212_3, 212_{3}; 100100_b names no base (the problem does): its digits stand as written.
_BASE = re.compile(r"(?<![\w.^_}\\])([0-9A-F]+)_(?:\{?(\d{1,2})\}?(?![\d}])|\{?b\}?(?![\w}]))")
_SUBSCRIPT_DIGITS = re.compile("[₀-₉]+")  # 221₃ is 221_3
_REPEATING = re.compile(r"(?<!\d)(\d*)\.(\d*)\\overline\s*\{(\d+)\}")
_THOUSANDS = re.compile(r"[-+]?\d{1,3}(?:,\d{3})+(?:\.\d+)?")
# Words after a number at the end: units (3 mi/hr, 7 cm^2), kept aside for their key.
_POWER = r"(?:\s*\^\s*\{?\d\}?)?"
_UNITS = re.compile(rf"(?<=[\d}}\)])\s*([A-Za-z]{{2,}}(?: [A-Za-z]{{2,}})*{_POWER}(?:\s*/\s*[A-Za-z]+{_POWER})*)\s*$")
_SPACES = re.compile(r"\s+(?![a-zA-Z])|(?<![a-zA-Z])\s+")
# Names before the answer: \angle PQR =, m\angle A =, \overline{PQ} =, (a, b) =, g(2) =, f^{-1}(x) =.
_NAME = r"[a-zA-Z](?:_\{?\w+\}?)?"
_ARGUMENT = r"(?:[a-zA-Z]|-?\d+(?:\.\d+)?)"
_LABEL = re.compile(
    r"(?:m?\\(?:angle|measuredangle)\s*[A-Z]{1,4}|\\overline\{[A-Z]{2,3}\}"
    rf"|\((?:{_NAME},)+{_NAME}\)|{_NAME}(?:\^\{{?-1\}}?)?\({_ARGUMENT}(?:,{_ARGUMENT})*\))="
)
_LETTERS = re.compile(r"[A-Za-z][A-Za-z\s-]*")


def _strip_text(s: str, units: list[str]) -> str:
    """\\text{}-like groups: `or`/`and` become separators, units and words next to math go (units are kept
    in `units`), the rest is unwrapped."""
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
            s = s[: m.start()] + (" \\land " if word == "and" else ",") + s[end:]
        elif not rest or re.fullmatch(r"\(?[A-E]\)?", word) or (m.group(1) != "text" and len(word) == 1):
            s = s[: m.start()] + " " + content + " " + s[end:]
        elif _WORDY.fullmatch(word):
            tail = _UNIT_TAIL.match(s, end)
            units.append(word + (tail.group(0) if tail else ""))
            s = s[: m.start()] + " " + s[tail.end() if tail else end :]
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


def _time_of_day(m: re.Match) -> str:
    """`9:15 p.m.` -> `21:15`; a time without a.m./p.m. is read on the 24-hour clock."""
    hour, minute, meridiem = (m["h"], m["m"], m["ampm"]) if m["h"] else (m["h24"], m["m24"], None)
    h, mins = int(hour), int(minute or 0)
    if mins > 59 or (h > 12 or h == 0 if meridiem else h > 23):
        return m.group(0)
    if meridiem:
        h = h % 12 + (12 if meridiem.lower() == "p" else 0)
    return f"{h}:{mins:02d}"


def _trig_degrees(m: re.Match) -> str:
    """`\\sin 30^\\circ` is the sine of 30 degrees: the angle becomes radians."""
    degrees = m[2] or m[3] or m[4]
    return f"{m[1]}(\\frac{{{degrees}\\pi}}{{180}})"


def _number_words(s: str, units: list[str]) -> str:
    """`seven`, `three halves`, `twenty people`: a number in words (and words after it, a unit) as digits."""
    if not _LETTERS.fullmatch(s):
        return s
    words = s.split()
    for k in range(min(len(words), 12), 0, -1):
        value = words_to_number(" ".join(words[:k]))
        if value is not None:
            units.extend(words[k:])
            return f"\\frac{{{value.numerator}}}{{{value.denominator}}}" if value.denominator > 1 else str(value)
    return s


def _repeating(m: re.Match) -> str:
    whole, fixed, period = m.group(1) or "0", m.group(2), m.group(3)
    if len(whole) + len(fixed) + len(period) > 100:
        raise Reject
    value = Fraction(int(whole + fixed + period) - int(whole + fixed), (10 ** len(period) - 1) * 10 ** len(fixed))
    return f"\\frac{{{value.numerator}}}{{{value.denominator}}}"


def _base_numeral(m: re.Match) -> str:
    """`212_3` keeps its base (`212_{3}`), so that 212 in base 3 and in base 4 differ; base 10 is dropped."""
    digits = m.group(1)
    if m.group(2) is None:
        return digits if digits.isdigit() else m.group(0)
    base = int(m.group(2))
    if 2 <= base <= 16 and all(int(d, 16) < base for d in digits):
        return digits if base == 10 else f"{digits}_{{{base}}}"
    return m.group(0)


def _trailing_units(m: re.Match, units: list[str]) -> str:
    if set(m.group(1).lower().split()) & MATH_WORDS:
        return m.group(0)
    units.append(m.group(1))
    return ""


@lru_cache(maxsize=8192)
def normalize(answer: str) -> tuple[str, str]:
    """A canonical string for an answer (wrappers, spacing, units and decorations removed), and the key
    of the known units it carried ("" when none)."""
    s = " ".join(unwrap(answer).split())
    if not s.isascii():
        for k, v in _UNICODE.items():
            if k in s:
                s = s.replace(k, v)
        s = _SUBSCRIPT_DIGITS.sub(lambda m: "_{" + "".join(str(ord(c) - 0x2080) for c in m[0]) + "}", s)
    units: list[str] = []
    s = _TIME.sub(_time_of_day, s) if ":" in s or "m" in s.lower() else s
    s = _TRIG_DEGREES.sub(_trig_degrees, s) if "circ" in s or "degree" in s else s
    s = _number_words(_strip_text(s, units).strip(), units)
    for triggers, pattern, text in _REPLACEMENTS:
        if any(t in s for t in triggers):
            s = pattern.sub(lambda _, text=text: text, s)
    s = _MIXED.sub(lambda m: f"({m[1]}+\\frac{{{m[2] or m[3]}}}{{{m[4] or m[5]}}})", s)
    s = _BASE.sub(_base_numeral, s)
    s = _REPEATING.sub(_repeating, s)
    s = _UNITS.sub(lambda m: _trailing_units(m, units), s)
    s = _SPACES.sub("", " ".join(s.split())).rstrip(".")
    set_builder = _SET_BUILDER.fullmatch(s) if s.startswith("\\{") else None
    s = set_builder[2] if set_builder else s
    label = _LABEL.match(s) if "=" in s else None
    if label and "=" not in s[label.end() :]:
        s = s[label.end() :]
    if _THOUSANDS.fullmatch(s):
        s = s.replace(",", "")
    keys = ",".join(sorted({key for key in map(unit_key, units) if key})) if units else ""
    return _drop_redundant_groups(s), keys
