"""Units of measurement and numbers written as words: the vocabulary that normalisation reads.

A unit is read into a canonical key (`mi/hr`, `miles per hour` and `mph` all give `hour^-1 mile`), so
that two answers whose units differ can be told apart; words that are not known units (`people`,
`ways`) give no key and never make answers unequal.
"""

from __future__ import annotations

import re
from fractions import Fraction

_UNIT_NAMES = {
    "meter": "m meter meters metre metres",
    "centimeter": "cm centimeter centimeters centimetre centimetres",
    "millimeter": "mm millimeter millimeters millimetre millimetres",
    "kilometer": "km kilometer kilometers kilometre kilometres",
    "inch": "in inch inches",
    "foot": "ft foot feet",
    "yard": "yd yds yard yards",
    "mile": "mi mile miles",
    "gram": "g gram grams",
    "kilogram": "kg kgs kilogram kilograms",
    "milligram": "mg milligram milligrams",
    "pound": "lb lbs pound pounds",
    "ounce": "oz ounce ounces",
    "ton": "ton tons tonne tonnes",
    "second": "s sec secs second seconds",
    "minute": "min mins minute minutes",
    "hour": "h hr hrs hour hours",
    "day": "day days",
    "week": "wk week weeks",
    "month": "month months",
    "year": "yr yrs year years",
    "liter": "l liter liters litre litres",
    "milliliter": "ml milliliter milliliters millilitre millilitres",
    "gallon": "gal gallon gallons",
    "degree": "deg degree degrees",
    "radian": "rad radian radians",
    "dollar": "dollar dollars",
    "cent": "cent cents",
}
_UNITS = {alias: name for name, aliases in _UNIT_NAMES.items() for alias in aliases.split()}
_SPEEDS = {"mph": "mi/hr", "kph": "km/hr", "kmh": "km/hr"}
_UNIT_FACTOR = re.compile(r"([a-z]+)(?:\^\{?(-?\d)\}?)?")


def unit_key(text: str) -> str:
    """Canonical key of a unit like `m/s^2`, `square feet` or `miles per hour`; "" when any part is unknown."""
    text = text.lower().replace("\\", " ").replace(".", " ").strip()
    text = _SPEEDS.get(text, text)
    text = re.sub(r"\s+per\s+", "/", text)
    text = re.sub(r"\b(?:square|sq)\s+([a-z]+)", r"\1^2", text)
    text = re.sub(r"\b(?:cubic|cu)\s+([a-z]+)", r"\1^3", text)
    powers: dict[str, int] = {}
    for k, side in enumerate(text.split("/")):
        factors = side.replace("cdot", " ").replace("*", " ").split()
        if not factors or len(factors) > 4:
            return ""
        for factor in factors:
            m = _UNIT_FACTOR.fullmatch(factor)
            if not m or m.group(1) not in _UNITS:
                return ""
            name = _UNITS[m.group(1)]
            powers[name] = powers.get(name, 0) + int(m.group(2) or 1) * (1 if k == 0 else -1)
    return " ".join(f"{name}^{e}" if e != 1 else name for name, e in sorted(powers.items()) if e)


_ONES = "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen "
_ONES += "seventeen eighteen nineteen"
_SMALL = {word: n for n, word in enumerate(_ONES.split())}
_TENS = {w: 10 * n for n, w in enumerate("twenty thirty forty fifty sixty seventy eighty ninety".split(), start=2)}
_SCALES = {"hundred": 100, "thousand": 1000, "million": 10**6, "billion": 10**9}
_PARTS = {"half": 2, "halves": 2, "third": 3, "quarter": 4, "fourth": 4, "fifth": 5, "sixth": 6, "seventh": 7,
          "eighth": 8, "ninth": 9, "tenth": 10, "eleventh": 11, "twelfth": 12, "hundredth": 100}  # fmt: skip


def _whole(words: list[str]) -> int | None:
    """`twenty one`, `three hundred and five`, `two thousand`; None when the words are not such a number."""
    total = current = 0
    seen = False
    for word in words:
        if word in _SMALL or word in _TENS:
            current += _SMALL.get(word, 0) + _TENS.get(word, 0)
        elif word == "hundred" and seen:
            current *= 100
        elif word in _SCALES and seen:
            total, current = total + current * _SCALES[word], 0
        elif word == "and" and seen:
            continue
        else:
            return None
        seen = True
    return total + current if seen else None


def _fraction(words: list[str]) -> Fraction | None:
    """`a half`, `one third`, `three halves`, `two thirds`; None when the words are not such a fraction."""
    if len(words) < 2:
        return None
    last = words[-1]
    part = _PARTS.get(last) or (_PARTS.get(last[:-1]) if last.endswith("s") else None)
    count = 1 if words[:-1] in (["a"], ["an"]) else _whole(words[:-1])
    return None if part is None or count is None else Fraction(count, part)


def words_to_number(text: str) -> Fraction | None:
    """The value of a number written in words (`seven`, `twenty-one`, `three halves`, `one and a half`,
    `negative two thirds`), or None when `text` is not one."""
    words = text.lower().replace("-", " ").split()
    sign = 1
    if words[:1] in (["negative"], ["minus"]):
        sign, words = -1, words[1:]
    if not words or len(words) > 12:
        return None
    value = _whole(words)
    if value is None:
        value = _fraction(words)
    if value is None and "and" in words:  # one and a half
        k = len(words) - 1 - words[::-1].index("and")
        whole, part = _whole(words[:k]), _fraction(words[k + 1 :])
        value = None if whole is None or part is None else whole + part
    return None if value is None else sign * Fraction(value)
