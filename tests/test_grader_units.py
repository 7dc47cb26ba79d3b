from fractions import Fraction

import pytest
from score.grader.units import unit_key, words_to_number


@pytest.mark.parametrize(
    "one, other",
    [
        ("mi/hr", "miles per hour"),
        ("mph", "mi/h"),
        ("m/s^2", "meters / second^{2}"),
        ("square feet", "ft^2"),
        ("cubic cm", "cm^3"),
        ("kg", "Kilograms"),
    ],
)
def test_same_unit_same_key(one, other):
    assert unit_key(one) == unit_key(other) != ""


@pytest.mark.parametrize("one, other", [("kg", "g"), ("m/s", "m/s^2"), ("cm", "cm^2"), ("mi/hr", "km/hr")])
def test_different_units_different_keys(one, other):
    assert unit_key(one) != unit_key(other)


@pytest.mark.parametrize("words", ["people", "sq units", "ways", "m/people", ""])
def test_unknown_units_have_no_key(words):
    assert unit_key(words) == ""


@pytest.mark.parametrize(
    "text, value",
    [
        ("zero", 0),
        ("seven", 7),
        ("Twenty-One", 21),
        ("one hundred and five", 105),
        ("two thousand three hundred", 2300),
        ("a half", Fraction(1, 2)),
        ("three halves", Fraction(3, 2)),
        ("two thirds", Fraction(2, 3)),
        ("one and a half", Fraction(3, 2)),
        ("negative five", -5),
    ],
)
def test_words_to_number(text, value):
    assert words_to_number(text) == value


@pytest.mark.parametrize("text", ["half", "hundred", "and", "a", "people", "seven people", "third place"])
def test_words_that_are_not_numbers(text):
    assert words_to_number(text) is None
