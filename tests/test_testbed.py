import json
import random
from collections import Counter

import pytest
import torch
from score import testbed
from score.config import Config, PromptConfig, RolloutConfig, ScoreError
from score.data import Problem, load_math
from score.grader import reward
from score.prompts import conversation_pieces, end_of_turn_id
from score.rollout import generate_rollouts
from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

PROMPTS = PromptConfig(first_turn="Add column by column.", correction="Fix any error.")


def test_rows_are_math500_style_with_right_answers():
    rows = testbed.make_problems(300, seed=1, split="test")
    assert [r["unique_id"] for r in rows[:2]] == ["test/arithmetic/1.json", "test/arithmetic/2.json"]
    for row in rows:
        a, b = testbed.operands(row)
        assert row["answer"] == str(a + b)
        assert len(str(a)) == len(str(b)) == testbed.LEVEL_DIGITS[row["level"]]
        assert reward(row["solution"], row["answer"]) == 1.0
        assert row["solution"].endswith(f"$\\boxed{{{a + b}}}$.")
    kinds = Counter(testbed.problem_kind(*testbed.operands(r)) for r in rows)
    for kind, share in testbed.KIND_SHARES.items():
        assert abs(kinds[kind] / len(rows) - share) < 0.08


def test_worked_solution_carries():
    assert testbed.write_attempt(473, 259, testbed.true_carries(473, 259)) == (
        "3+9+0=12 → 2, 7+5+1=13 → 32, 4+2+1=7 → 732. The answer is $\\boxed{732}$."
    )
    # The base model's two mistakes: no carry after a column summing to 10, and the final carry left out.
    assert testbed.write_attempt(37, 93, [0, 0]).endswith("7+3+0=10 → 0, 3+9+0=12 → 120. The answer is $\\boxed{120}$.")
    assert testbed.write_attempt(85, 61, [0, 0], drop=True).endswith("→ 46. The answer is $\\boxed{46}$.")
    assert [testbed.problem_kind(*p) for p in [(37, 93), (85, 61), (18, 21), (12, 34)]] == [
        "trap",
        "drop",
        "nine",
        "plain",
    ]


def test_problems_are_seeded_and_splits_disjoint():
    assert testbed.make_problems(50, seed=3, split="train") == testbed.make_problems(50, seed=3, split="train")
    assert testbed.make_problems(50, seed=3, split="train") != testbed.make_problems(50, seed=4, split="train")
    test = testbed.make_problems(200, seed=0, split="test")
    pairs = {tuple(sorted(testbed.operands(r))) for r in test}
    assert len(pairs) == len(test)
    train = testbed.make_problems(1000, seed=1, split="train", exclude={testbed.operands(r) for r in test})
    assert not pairs & {tuple(sorted(testbed.operands(r))) for r in train}


def test_running_out_of_problems_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(testbed, "LEVEL_SHARES", {1: 1.0})
    monkeypatch.setattr(testbed, "MAX_DRAWS", 2000)
    with pytest.raises(ScoreError, match="cannot draw 2000 distinct testbed problems"):
        testbed.make_problems(2000, seed=0, split="train", kinds={"nine": 1.0})


def test_base_habits():
    """Attempt 1 is wrong on traps, attempt 2 repeats it unless it re-checks (then it is right), and a repeat
    breaks a correct answer only through a 9-column."""
    rng = random.Random(0)
    habits = testbed.Habits()
    rows = testbed.make_problems(400, seed=5, split="train")
    outcomes = Counter()
    for row in rows:
        a, b = testbed.operands(row)
        kind = testbed.problem_kind(a, b)
        first, second = testbed.base_attempts(a, b, rng, habits)
        right1, right2 = reward(first, row["answer"]), reward(second, row["answer"])
        checked = second.startswith(testbed.CHECK_OPENER)
        if kind == "trap":
            assert right1 == 0.0
        if kind in ("nine", "plain"):
            assert right1 == 1.0
        if checked:
            assert right2 == 1.0
        elif kind == "trap":
            assert right2 == 0.0  # keep=1: a repeat keeps the slip
        elif kind == "plain":
            assert second == first
        outcomes[kind, checked, right2] += 1
    nine_repeats = outcomes["nine", False, 0.0] + outcomes["nine", False, 1.0]
    assert outcomes["nine", False, 0.0] / nine_repeats == pytest.approx(habits.doubt, abs=0.2)
    assert sum(n for (_, checked, _), n in outcomes.items() if checked) / len(rows) == pytest.approx(
        habits.check, abs=0.04
    )


@pytest.fixture(scope="module")
def tokenizer():
    rows = testbed.make_problems(60, seed=0, split="sft", distinct=False)
    return testbed.build_tokenizer(rows, PROMPTS, testbed.Habits(), seed=0, vocab_size=400)


class ScriptedModel(torch.nn.Module):
    """Stands in for a model in generate_rollouts: 'samples' the given token ids, one list per attempt."""

    def __init__(self, attempts: list[list[int]], eot: int):
        super().__init__()
        self.attempts = attempts
        self.calls = 0
        self.device = torch.device("cpu")
        self.generation_config = GenerationConfig(eos_token_id=eot)

    def generate(self, input_ids, attention_mask, stopping_criteria=None):
        ids = torch.tensor(self.attempts[self.calls])
        self.calls += 1
        return torch.cat([input_ids, ids.expand(input_ids.shape[0], -1)], dim=1)


def test_sft_layout_is_the_rollout_layout(tokenizer):
    row = testbed.make_problems(1, seed=2, split="test")[0]
    a, b = testbed.operands(row)
    texts = testbed.base_attempts(a, b, random.Random(1))
    eot = end_of_turn_id(tokenizer, PROMPTS)
    attempts = [tokenizer(t, add_special_tokens=False)["input_ids"] + [eot] for t in texts]
    model = ScriptedModel(attempts, eot)
    problem = Problem(row["unique_id"], row["problem"], row["solution"], row["answer"], row["subject"], row["level"])
    rollout = generate_rollouts(model, tokenizer, [problem], RolloutConfig(max_new_tokens=100), PROMPTS, greedy=True)

    batch = testbed.sft_batch(tokenizer, [conversation_pieces(tokenizer, row["problem"], PROMPTS)], [texts], eot)
    assert torch.equal(batch["input_ids"], rollout.input_ids)
    assert torch.equal(batch["attention_mask"], rollout.attention_mask)
    # Loss falls exactly on the tokens a rollout marks as attempts, the end-of-turn tokens included.
    assert torch.equal(batch["labels"] != -100, rollout.attempt_mask > 0)
    assert rollout.texts == [list(texts)]


def test_build_on_a_tiny_budget(tmp_path, capsys):
    cfg = Config()
    cfg.prompts = PROMPTS
    cfg.model.name, cfg.model.base_dir = "adder", str(tmp_path / "base_models")
    cfg.data.source, cfg.eval.source = str(tmp_path / "train.jsonl"), str(tmp_path / "test.jsonl")
    testbed.build_testbed(cfg, train_problems=30, test_problems=10, steps=3, problems=40, log_every=0)

    train = load_math(cfg.data.source)
    test = load_math(cfg.eval.source, split="test")
    assert len(train) == 30 and len(test) == 10 and test[0].id == "test/arithmetic/1.json"
    model_dir = tmp_path / "base_models" / "adder"
    info = json.loads((model_dir / "testbed.json").read_text())
    assert info["steps"] == 3 and info["habits"] == vars(testbed.Habits())
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    tok = AutoTokenizer.from_pretrained(model_dir)
    rollout = generate_rollouts(model, tok, test[:2], RolloutConfig(max_new_tokens=6), PROMPTS, greedy=True)
    assert rollout.rewards.shape == (2, 2) and rollout.lengths.max() <= 6

    testbed.build_testbed(cfg, train_problems=30, test_problems=10, steps=3, problems=40, log_every=0)
    assert "already built" in capsys.readouterr().out


def test_testbed_config_names_the_files():
    from score.config import REPO_ROOT, load_config

    cfg = load_config(REPO_ROOT / "configs" / "testbed.yaml")
    assert cfg.data.source.endswith(".jsonl") and cfg.eval.source.endswith(".jsonl")
    rows = testbed.make_problems(20, seed=0, split="test")
    tok = testbed.build_tokenizer(rows, cfg.prompts, testbed.Habits(), seed=0, vocab_size=400)
    # The longest attempt (a re-check of a 3-digit sum with a final carry) fits the token budget.
    longest = testbed.write_attempt(999, 999, testbed.true_carries(999, 999), check=True)
    assert len(tok(longest)["input_ids"]) < min(cfg.rollout.max_new_tokens, cfg.eval.max_new_tokens)


def test_build_wants_jsonl_paths():
    cfg = Config()
    cfg.eval.source = ""
    cfg.data.source = "data/testbed/train.jsonl"
    with pytest.raises(ScoreError, match="eval.source: the testbed writes"):
        testbed.build_testbed(cfg)


def test_base_model_build_is_seeded(tmp_path):
    paths = [
        testbed.sft_base_model(tmp_path / name, PROMPTS, seed=seed, steps=2, problems=20, log_every=0)
        for name, seed in (("a", 0), ("b", 0), ("c", 1))
    ]
    weights = [AutoModelForCausalLM.from_pretrained(p).state_dict() for p in paths]
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
    assert not all(torch.equal(weights[0][k], weights[2][k]) for k in weights[0])


def test_short_end_to_end_on_the_testbed(tmp_path):
    """The testbed config runs through the unchanged train and evaluate tasks (tiny budget)."""
    from score.config import REPO_ROOT, load_config
    from score.evaluate import evaluate
    from score.trainer import train

    cfg = load_config(
        REPO_ROOT / "configs" / "testbed.yaml",
        [
            f"model.base_dir={tmp_path / 'base_models'}",
            f"data.source={tmp_path / 'train.jsonl'}",
            f"eval.source={tmp_path / 'test.jsonl'}",
            f"train.output_dir={tmp_path / 'runs'}",
            "train.stage1_steps=1",
            "train.stage2_steps=1",
            "train.batch_size=4",
            "train.micro_batch_size=8",
            "rollout.max_new_tokens=12",
            "eval.max_new_tokens=12",
        ],
    )
    testbed.build_testbed(cfg, train_problems=30, test_problems=8, steps=3, problems=40, log_every=0)
    run = train(cfg)
    assert [json.loads(line)["stage"] for line in (run / "metrics.jsonl").open()] == [1, 2]
    metrics = json.loads((evaluate(cfg) / "metrics.json").read_text())
    assert metrics["n"] == 8 and metrics["attempts"] == 2
