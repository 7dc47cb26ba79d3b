import random
import time

import pytest
from score.diagnostics import MAX_EDIT_WORDS, edit_distance, levenshtein, same_answer, two_attempt_diagnostics


def levenshtein_by_definition(a, b) -> int:
    previous = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        current = [i]
        for j, y in enumerate(b, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (x != y)))
        previous = current
    return previous[-1]


def test_levenshtein_by_hand():
    assert levenshtein("kitten", "sitting") == 3
    assert levenshtein("", "abc") == 3 and levenshtein("abc", "") == 3 and levenshtein("", "") == 0
    assert levenshtein("flaw", "lawn") == 2
    assert levenshtein(["x", "=", "1"], ["x", "=", "2"]) == 1


def test_levenshtein_matches_the_definition():
    rng = random.Random(0)
    for _ in range(300):
        a = [rng.choice("abc") for _ in range(rng.randint(0, 9))]
        b = [rng.choice("abc") for _ in range(rng.randint(0, 9))]
        assert levenshtein(a, b) == levenshtein_by_definition(a, b), (a, b)


def test_edit_distance_is_normalized_over_words():
    assert edit_distance("so x = 2", "so x = 2") == 0.0
    assert edit_distance("so x = 2", "so x = 3") == pytest.approx(1 / 4)
    assert edit_distance("a b", "c d e f") == pytest.approx(4 / 4)
    assert edit_distance("", "") == 0.0 and edit_distance("", "a b") == 1.0
    assert edit_distance("x  =\n1", "x = 1") == 0.0  # whitespace is not an edit


def test_edit_distance_cost_is_bounded():
    rng = random.Random(1)
    first = " ".join(rng.choice("abcdefgh") for _ in range(50 * MAX_EDIT_WORDS))
    second = " ".join(rng.choice("abcdefgh") for _ in range(50 * MAX_EDIT_WORDS))
    began = time.perf_counter()
    value = edit_distance(first, second)
    assert 0 < value <= 1
    assert time.perf_counter() - began < 30  # only the first MAX_EDIT_WORDS words of each count


def test_same_answer():
    assert same_answer("1/2", " 1 / 2") and not same_answer("1/2", "0.5")
    assert same_answer(None, None) and not same_answer(None, "1") and not same_answer("1", None)


def test_two_attempt_diagnostics_by_hand():
    # 5 problems: right->right, wrong->right, wrong->wrong, wrong->wrong, right->wrong.
    correct = [(True, True), (False, True), (False, False), (False, False), (True, False)]
    answers = [("1", "1"), ("2", "3"), (None, None), ("4", "4"), ("5", "6")]
    texts = [("a b", "a b"), ("a b", "a c"), ("", ""), ("x", "y"), ("a b c d", "a b c")]
    d = two_attempt_diagnostics(correct, answers, texts)
    assert d["p_t2_right_given_t1_wrong"] == pytest.approx(1 / 3)
    assert d["p_t2_wrong_given_t1_right"] == pytest.approx(1 / 2)
    assert d["answer_changed"] == pytest.approx(2 / 5)
    assert d["edit_distance"] == pytest.approx((0 + 1 / 2 + 0 + 1 + 1 / 4) / 5)
    none = two_attempt_diagnostics([(True, True)], [("1", "1")], [("a", "a")])
    assert none["p_t2_right_given_t1_wrong"] is None and none["p_t2_wrong_given_t1_right"] == 0.0
