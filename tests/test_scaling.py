import itertools
import math

import pytest
from score import scaling


def test_pass_at_k_by_hand_and_by_enumeration():
    assert scaling.pass_at_k(4, 1, 2) == pytest.approx(1 - 3 / 6)  # 1 - C(3,2)/C(4,2)
    assert scaling.pass_at_k(5, 2, 3) == pytest.approx(1 - 1 / 10)  # 1 - C(3,3)/C(5,3)
    assert scaling.pass_at_k(5, 0, 3) == 0.0 and scaling.pass_at_k(5, 3, 3) == 1.0 and scaling.pass_at_k(5, 2, 1) == 0.4
    # Unbiased: the mean over every k-subset of n samples of "some sample in it is right".
    for n, c in ((6, 2), (7, 3), (8, 1)):
        outcomes = [True] * c + [False] * (n - c)
        for k in range(1, n + 1):
            subsets = list(itertools.combinations(outcomes, k))
            assert scaling.pass_at_k(n, c, k) == pytest.approx(sum(map(any, subsets)) / math.comb(n, k))
    with pytest.raises(ValueError):
        scaling.pass_at_k(4, 5, 1)


def vote(*votes: tuple[str | None, bool]) -> bool:
    return scaling.majority_correct(scaling.equivalences([a for a, _ in votes]), [c for _, c in votes], len(votes))


def test_majority_vote():
    assert vote(("2", False), ("3", True), ("3", True))
    assert not vote(("2", False), ("3", True), ("2", False))
    assert not vote(("2", False), ("3", True))  # a tie goes to the answer seen first
    assert vote((None, False), (" 3", True), (None, False))  # no answer, no vote
    assert not vote((None, False), ("", False))


def test_majority_votes_on_equivalent_answers():
    # Gold 1/2: three ways of writing it outvote two 3s (as raw strings they were three votes of one each).
    answers = ["1/2", "\\frac{1}{2}", "0.5", "3", "3"]
    assert scaling.equivalences(answers)[0] == [True, True, True, False, False]
    samples = [[{"answer": a, "correct": a != "3"}] for a in answers]
    m = scaling.sampled_metrics([samples])
    assert [m["majority_at_k_t1"][k] for k in (1, 2, 3, 4, 5)] == [1.0] * 5
    # The equal-budget comparison inherits it: at k = 10 it votes on 5 second attempts, three of them halves.
    conversations = [sample("3", False, a, a != "3") for a in ("3", "\\frac{2}{4}", "0.50", "3", "1/2")]
    conversations += [sample("3", False, "3", False) for _ in range(5)]
    assert scaling.sampled_metrics([conversations])["equal_budget"][10]["sequential_t2"] == 1.0


def test_majority_does_not_depend_on_the_order_of_equivalent_answers():
    # Equivalence is not transitive: 50% = 50 and 50% = 0.5, but 50 != 0.5. Gold 0.5; a vote by classes judged by
    # their first member gave 0 for the first order and 1 for the second (issue 26, defect 6).
    gold = {"50": False, "50%": True, "0.5": True}
    for order in (["50", "50%", "0.5", "0.5"], ["50%", "50", "0.5", "0.5"], ["0.5", "50", "0.5", "50%"]):
        samples = [[{"answer": a, "correct": gold[a]}] for a in order]
        assert scaling.sampled_metrics([samples])["majority_at_k_t1"][4] == 1.0, order
    assert vote(("50", False), ("50", False), ("50%", True), ("0.5", True))  # 50%: all four; 50: three
    assert not vote(("50", False), ("50", False), ("50", False), ("0.5", True))


def test_code_answers_vote_as_text_without_the_answer_checker(monkeypatch):
    def checker(*args):
        raise AssertionError("a program went to the math answer checker")

    monkeypatch.setattr(scaling, "is_equivalent", checker)
    programs = ["def f(): return 1", "def f(): return 2", "def f(): return 1"]
    samples = [[{"answer": p, "correct": p.endswith("1")}] for p in programs]
    m = scaling.sampled_metrics([samples], domains=["code"])
    assert [m["majority_at_k_t1"][k] for k in (1, 2, 3)] == [1.0, 1.0, 1.0]


def sample(a1, c1, a2, c2):
    return [{"answer": a1, "correct": c1}, {"answer": a2, "correct": c2}]


def test_sampled_metrics_by_hand():
    # Problem A (gold 5): t1 answers 4, 5, 4, 5 ; t2 answers 5, 5, 4, 5.
    # Problem B (gold 7): t1 answers 7, 1, 1, 1 ; t2 answers 7, 7, 1, 7.
    a = [sample("4", False, "5", True), sample("5", True, "5", True), sample("4", False, "4", False)]
    a.append(sample("5", True, "5", True))
    b = [sample("7", True, "7", True), sample("1", False, "7", True), sample("1", False, "1", False)]
    b.append(sample("1", False, "7", True))
    m = scaling.sampled_metrics([a, b])
    assert (m["n"], m["problems"], m["attempts"]) == (4, 2, 2)
    assert m["pass_at_k_t1"][1] == pytest.approx((2 / 4 + 1 / 4) / 2)
    assert m["pass_at_k_t1"][2] == pytest.approx(((1 - 1 / 6) + (1 - 3 / 6)) / 2)
    assert m["pass_at_k_t2"][4] == 1.0
    # majority@k over the first k samples: A t1 4|4,5|4,5,4|4,5,4,5 -> wrong, wrong (tie), wrong, wrong (tie)
    # B t1: 7 | 7,1 (tie: 7) | 7,1,1 -> 1 | 1 -> right, right, wrong, wrong
    assert [m["majority_at_k_t1"][k] for k in (1, 2, 3, 4)] == [0.5, 0.5, 0.0, 0.0]
    assert [m["majority_at_k_t2"][k] for k in (1, 2, 3, 4)] == [1.0, 1.0, 1.0, 1.0]
    # Equal budget k: majority of k first attempts against majority of the first k/2 conversations' second ones.
    assert m["equal_budget"] == {
        2: {"parallel_t1": 0.5, "sequential_t2": 1.0},
        4: {"parallel_t1": 0.0, "sequential_t2": 1.0},
    }
    assert "| 4 | 0.0 | 100.0 |" in scaling.scaling_markdown(m)


def test_scaling_plot(tmp_path):
    m = scaling.sampled_metrics([[sample("1", True, "1", True), sample("2", False, "1", True)]])
    scaling.plot_scaling(m, tmp_path / "scaling.png")
    assert (tmp_path / "scaling.png").stat().st_size > 1000
