import json
import random
from itertools import count

import pytest
import torch
from huggingface_hub import ModelCard
from score import baselines, sft
from score.card import write_run_card
from score.config import REPO_ROOT, load_config
from score.data import Problem
from score.prompts import ConversationPieces
from score.rollout import Rollout
from transformers import AutoModelForCausalLM


def test_pairs_join_each_wrong_attempt_with_a_right_one_to_the_same_problem():
    # Problem 0: samples right (ids 5 9), wrong (6 9), wrong (7); problem 1: two wrong samples, no pair.
    rows = [[5, 9], [6, 9], [7, 0], [8, 9], [8, 0]]
    mask = [[1, 1], [1, 1], [1, 0], [1, 1], [1, 0]]
    rollout = Rollout(
        input_ids=torch.tensor([[1] + r for r in rows]),
        attention_mask=torch.tensor([[1] + [int(m > 0) for m in ms] for ms in mask]),
        attempt_mask=torch.tensor([[0] + ms for ms in mask]),
        rewards=torch.tensor([[1.0], [0.0], [0.0], [0.0], [0.0]]),
        truncated=torch.tensor([[False], [False], [True], [False], [True]]),
        lengths=torch.tensor([[2], [2], [1], [2], [1]]),
        texts=[["a"]] * 5,
        problem_index=torch.tensor([0, 0, 0, 1, 1]),
    )
    problems = [Problem("a", "x", "", "1", "S", 1), Problem("b", "y", "", "2", "S", 1)]
    pieces = [ConversationPieces(prompt=[1, 2], between=[[9, 3]])] * 2
    pairs = baselines.pair_conversations(rollout, problems, pieces, {9}, random.Random(0), "d")
    # The stop token 9 that closed a sampled attempt is the template's end of turn: spliced, not repeated; the
    # truncated attempt (7) gets the template's end of turn.
    assert pairs == [
        ([1, 2, 6, 9, 3, 5, 9], [0, 0, 1, 1, 0, 2, 2]),
        ([1, 2, 7, 9, 3, 5, 9], [0, 0, 1, 0, 0, 2, 2]),
    ]
    # D+ adds the right attempt paired with a right one (the only one: itself); problem 1 still has no pair.
    plus = baselines.pair_conversations(rollout, problems, pieces, {9}, random.Random(0), "d_plus")
    assert plus == pairs + [([1, 2, 5, 9, 3, 5, 9], [0, 0, 1, 1, 0, 2, 2])]


def test_star_keeps_d_or_d_plus_by_hand():
    # Rewards per attempt of six traces: wrong -> right, right -> right, right -> wrong, wrong -> wrong,
    # wrong -> right, right -> right.
    rewards = torch.tensor([[0.0, 1.0], [1.0, 1.0], [1.0, 0.0], [0.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    assert baselines.star_rows(rewards, "d") == [0, 4]
    assert baselines.star_rows(rewards, "d_plus") == [0, 1, 4, 5]


def config(tmp_path, tiny_model_dir, sample_jsonl):
    return load_config(
        REPO_ROOT / "configs" / "tiny.yaml",
        [
            f"model.name={tiny_model_dir}",
            f"data.source={sample_jsonl}",
            f"train.output_dir={tmp_path}",
            "prompts.first_turn=Solve.",
            "prompts.correction=Again.",
            "rollout.max_new_tokens=5",
            "sft.rounds=2",
            "sft.steps=3",
            "sft.problems=4",
            "sft.samples=2",
            "sft.batch_size=4",
            "sft.micro_batch_size=2",
            "sft.lr=1e-3",
        ],
    )


def every_other_right(monkeypatch):
    """The checker says every second first attempt is right and every second attempt right (one reward call per
    attempt of all rows: attempt 1, attempt 2, then the next round's attempt 1, ...)."""
    calls = count()

    def rewards(texts, problems, grading):
        second = next(calls) % 2
        return [1.0 if second else float(i % 2) for i in range(len(texts))]

    monkeypatch.setattr(baselines, "problem_rewards", rewards)


def lines(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def weights_changed(start, final) -> bool:
    a = AutoModelForCausalLM.from_pretrained(start).state_dict()
    b = AutoModelForCausalLM.from_pretrained(final).state_dict()
    return any(not torch.equal(a[k], b[k]) for k in a)


def test_star_keeps_right_second_attempts_and_fine_tunes(tmp_path, tiny_model_dir, sample_jsonl, monkeypatch):
    every_other_right(monkeypatch)
    cfg = config(tmp_path, tiny_model_dir, sample_jsonl)
    final = baselines.run_star(cfg, tmp_path / "star", tiny_model_dir)
    assert final == tmp_path / "star" / "final" and weights_changed(tiny_model_dir, final)
    log = lines(tmp_path / "star" / "metrics.jsonl")
    rounds = [r for r in log if r["stage"] == "sample"]
    # 4 problems x 2 samples a round; attempt 1 is wrong on every other one and attempt 2 always right, so D keeps
    # the wrong -> right half.
    assert [(r["round"], r["sampled"], r["kept"], r["reward_t2"]) for r in rounds] == [(1, 8, 4, 1.0), (2, 8, 4, 1.0)]
    assert [r["step"] for r in log if r["stage"] == "sft"] == [1, 2, 3, 4, 5, 6]
    assert [r["step"] for r in rounds] == [0, 3]
    assert (tmp_path / "star" / "tensorboard").is_dir()
    write_run_card(cfg, final, supervised="star", start=tiny_model_dir)
    card = ModelCard.load(final / "README.md")  # final/'s model card names the baseline and its data
    assert "supervised-fine-tuning" in card.data.tags and "STaR for self-correction" in card.text
    assert f"on D (attempt 1 wrong, attempt 2 right), starting from `{tiny_model_dir}`" in card.text
    # A finished run is reused.
    monkeypatch.setattr(baselines, "SupervisedRun", None)
    assert baselines.run_star(cfg, tmp_path / "star", tiny_model_dir) == final


def test_pair_sft_fine_tunes_on_pairs(tmp_path, tiny_model_dir, sample_jsonl, monkeypatch):
    every_other_right(monkeypatch)
    cfg = config(tmp_path, tiny_model_dir, sample_jsonl)
    final = baselines.run_pair_sft(cfg, tmp_path / "pair", tiny_model_dir)
    assert weights_changed(tiny_model_dir, final)
    log = lines(tmp_path / "pair" / "metrics.jsonl")
    # One sampling of rounds x problems = 8 problems x 2 first attempts, one right and one wrong each: 8 pairs.
    (sampled,) = [r for r in log if r["stage"] == "sample"]
    assert (sampled["sampled"], sampled["kept"], sampled["reward_t1"]) == (16, 8, 0.5) and "reward_t2" not in sampled
    assert len([r for r in log if r["stage"] == "sft"]) == 6
    write_run_card(cfg, final, supervised="pair_sft", start=tiny_model_dir)
    assert "Pair-SFT (Kumar et al., 2024, Section 4)" in ModelCard.load(final / "README.md").text


@pytest.mark.parametrize("restart", [True, False])
def test_star_restarts_each_round_from_the_start_model(tmp_path, tiny_model_dir, sample_jsonl, monkeypatch, restart):
    every_other_right(monkeypatch)
    cfg = config(tmp_path, tiny_model_dir, sample_jsonl)
    cfg.sft.star_restart = restart
    start = AutoModelForCausalLM.from_pretrained(tiny_model_dir).state_dict()
    entries = []  # per round: (fine-tuning starts from the start model's weights, its optimizer has state)
    finetune = sft.finetune

    def spy(model, conversations, pad_id, optimizer, *args, **kwargs):
        weights = model.state_dict()
        entries.append((all(torch.equal(weights[k].cpu(), start[k]) for k in start), bool(optimizer.state)))
        return finetune(model, conversations, pad_id, optimizer, *args, **kwargs)

    monkeypatch.setattr(sft, "finetune", spy)
    baselines.run_star(cfg, tmp_path / "star", tiny_model_dir)
    # Restart: every round from the start weights and a fresh optimizer; otherwise round 2 continues round 1.
    assert entries == ([(True, False), (True, False)] if restart else [(True, False), (False, True)])
