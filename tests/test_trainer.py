import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import torch
from accelerate.state import AcceleratorState
from safetensors.torch import load_file, save_file
from score import objectives
from score import trainer as trainer_module
from score.checkpoints import RunFiles
from score.config import REPO_ROOT, ScoreError, load_config
from score.data import load_math
from score.models import load_model, weight_dtypes
from score.objectives import stage_schedule
from score.trainer import lr_factor, step_problems, train

# 4 problems x 4 samples in one micro-batch, a fast lr, no checkpoints: the learning tests' step
RL_BATCH = [
    "train.batch_size=4",
    "rollout.samples_per_prompt=4",
    "train.micro_batch_size=16",
    "train.lr=3e-3",
    "train.save_every=0",
]
SHORT_PROMPTS = ["prompts.first_turn=Solve.", "prompts.correction=Again."]  # short sequences keep CPU tests fast


def tiny_config(tmp_path: Path, model_dir: Path, data: Path, *overrides: str):
    return load_config(
        REPO_ROOT / "configs" / "tiny.yaml",
        [
            f"model.name={model_dir}",
            f"data.source={data}",
            f"train.output_dir={tmp_path / 'runs'}",
            "rollout.max_new_tokens=8",
            "train.sample_every=0",
            *SHORT_PROMPTS,
            *overrides,
        ],
    )


def metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def contains(target: str):
    """A synthetic reward: 1 when the attempt's text contains `target`."""
    return lambda texts, problems: [float(target in text) for text in texts]


def crash_in_step(step: int, reward):
    """`reward` until training step `step`, where scoring raises KeyboardInterrupt (a killed run): a step scores its
    two attempts in two calls."""
    calls = {"n": 0}

    def scored(texts, problems):
        calls["n"] += 1
        if calls["n"] > 2 * (step - 1):
            raise KeyboardInterrupt
        return reward(texts, problems)

    return scored


def mean(values) -> float:
    values = list(values)
    return sum(values) / len(values)


def record_calls(monkeypatch, name: str) -> list[tuple[tuple, object]]:
    """trainer.<name> still runs, and each call is recorded as (its positional arguments, its result)."""
    original, calls = getattr(trainer_module, name), []

    def recorded(*args, **kwargs):
        calls.append((args, original(*args, **kwargs)))
        return calls[-1][1]

    monkeypatch.setattr(trainer_module, name, recorded)
    return calls


def test_stage_schedule_and_rounds():
    cfg = load_config(None, ["train.stage1_steps=2", "train.stage2_steps=3", "train.rounds=2"])
    assert stage_schedule(cfg) == [1, 1, 2, 2, 2, 1, 1, 2, 2, 2]
    cfg = load_config(None, ["train.stage1_steps=0", "train.stage2_steps=2"])
    assert stage_schedule(cfg) == [2, 2]


def test_lr_schedules_by_hand():
    # 2 warm-up steps of 6: 1/3, 2/3, then 4 steps decaying from 1 (progress 0, 1/4, 2/4, 3/4).
    factors = lambda schedule: [lr_factor(s, 6, 2, schedule) for s in range(6)]  # noqa: E731
    assert factors("constant") == pytest.approx([1 / 3, 2 / 3, 1, 1, 1, 1])
    assert factors("linear") == pytest.approx([1 / 3, 2 / 3, 1, 3 / 4, 1 / 2, 1 / 4])
    cosine = [0.5 * (1 + math.cos(math.pi * p)) for p in (0, 1 / 4, 1 / 2, 3 / 4)]
    assert factors("cosine") == pytest.approx([1 / 3, 2 / 3, *cosine])
    assert lr_factor(0, 1, 0, "cosine") == 1.0  # one step: the full lr


def test_processes_see_different_problems(sample_jsonl):
    problems = load_math(sample_jsonl)
    for step in range(5):
        seen = [{p.id for p in step_problems(problems, step, 8, rank, 2, seed=1)} for rank in range(2)]
        assert len(seen[0]) == len(seen[1]) == 4 and not seen[0] & seen[1]
    # one epoch visits every problem once
    epoch = [p.id for s in range(len(problems) // 4) for p in step_problems(problems, s, 4, 0, 1, seed=1)]
    assert sorted(epoch) == sorted(p.id for p in problems)


def test_learning_raises_reward(tmp_path, tiny_model_dir, sample_jsonl):
    # Stage I: only attempt 2 gets a policy gradient; the reward is 1 when attempt 2 contains "y".
    cfg = tiny_config(
        tmp_path,
        tiny_model_dir,
        sample_jsonl,
        "train.stage1_steps=30",
        "train.stage2_steps=0",
        *RL_BATCH,
    )
    rows = metrics(train(cfg, reward_fn=contains("y")))
    assert len(rows) == 30 and all(r["stage"] == 1 for r in rows)
    start, end = mean(r["reward_t2"] for r in rows[:5]), mean(r["reward_t2"] for r in rows[-5:])
    assert end > start + 0.4, (start, end)
    weights = load_file(tmp_path / "runs" / "tiny" / "final" / "model.safetensors")
    base = load_file(tiny_model_dir / "model.safetensors")
    assert any(not torch.equal(weights[k], base[k]) for k in base)


def test_stage1_beta2_holds_attempt_one(tmp_path, tiny_model_dir, sample_jsonl):
    # The reward pulls attempt 2 towards "y"; attempt 1 shares the weights, so only beta2 keeps it in place.
    def run(beta2: float) -> list[dict]:
        cfg = tiny_config(
            tmp_path / str(beta2),
            tiny_model_dir,
            sample_jsonl,
            "train.stage1_steps=20",
            "train.stage2_steps=0",
            *RL_BATCH,
            f"train.beta2={beta2}",
            "train.beta1=0",
            "train.kl_estimator=k1",
        )
        return metrics(train(cfg, reward_fn=contains("y")))

    held, free = run(5.0), run(0.0)
    kl = lambda rows, k: mean(abs(r[f"kl_t{k}"]) for r in rows[-5:])  # noqa: E731
    assert kl(held, 1) < 0.5 * kl(free, 1), (kl(held, 1), kl(free, 1))
    assert kl(held, 1) < kl(held, 2)


@pytest.fixture
def fresh_accelerate_state():
    """Accelerate keeps one mixed-precision setting per process; a test that changes it starts and ends clean."""
    AcceleratorState._reset_state(reset_partial_state=True)
    yield
    AcceleratorState._reset_state(reset_partial_state=True)


@pytest.mark.usefixtures("fresh_accelerate_state")
@pytest.mark.parametrize("kl_mode", ["loss", "reward"])
def test_reference_matches_the_policy_before_any_update_under_bf16_autocast(
    tmp_path, tiny_model_dir, sample_jsonl, monkeypatch, kl_mode
):
    # The GPU path, emulated on the CPU: fp32 policy weights under bf16 autocast, the reference on the same path.
    # Step 1 measures the KL before the first update, so it must be exactly 0 (bf16 reference weights: not 0).
    monkeypatch.setattr(trainer_module, "weight_dtypes", lambda model, on_gpu: weight_dtypes(model, on_gpu=True))
    policy_dtype, reference_dtype, mixed = weight_dtypes(load_config(None).model, on_gpu=True)
    assert (policy_dtype, reference_dtype, mixed) == (torch.float32, torch.float32, "bf16")
    cfg = tiny_config(
        tmp_path,
        tiny_model_dir,
        sample_jsonl,
        "train.stage1_steps=1",
        "train.stage2_steps=0",
        f"train.kl_mode={kl_mode}",
    )
    (first,) = metrics(train(cfg, reward_fn=contains("y")))
    assert first["kl_t1"] == 0.0 and first["kl_t2"] == 0.0
    monkeypatch.setattr(trainer_module, "weight_dtypes", lambda model, on_gpu: (torch.float32, torch.bfloat16, "bf16"))
    (first,) = metrics(train(load_config(tmp_path / "runs" / "tiny" / "config.yaml", ["train.run_name=bf16ref"])))
    assert first["kl_t1"] > 0  # the check sees a mismatched reference


@pytest.mark.usefixtures("fresh_accelerate_state")
def test_hf_samples_a_bf16_copy_synced_after_every_step_under_bf16_autocast(
    tmp_path, tiny_model_dir, sample_jsonl, monkeypatch
):
    # The GPU path, emulated on the CPU: fp32 master weights under bf16 autocast sample from the HF engine's bf16
    # copy, which holds the trained weights after every optimizer step.
    monkeypatch.setattr(trainer_module, "weight_dtypes", lambda model, on_gpu: weight_dtypes(model, on_gpu=True))
    opened, synced = record_calls(monkeypatch, "open_engine"), record_calls(monkeypatch, "sync_engine")
    cfg = tiny_config(
        tmp_path, tiny_model_dir, sample_jsonl, "rollout.engine=hf", "train.stage1_steps=1", "train.stage2_steps=1"
    )
    run = train(cfg, reward_fn=contains("y"))
    ((_, engine),) = opened
    assert engine.holds_weights and engine.model.dtype == torch.bfloat16 and len(synced) == 2
    final = final_weights(run)
    assert not torch.equal(
        final["model.norm.weight"], load_file(tiny_model_dir / "model.safetensors")["model.norm.weight"]
    )
    for name, param in engine.model.named_parameters():  # the saved file keeps a tied parameter once, as here
        assert torch.equal(param, final[name].to(torch.bfloat16)), name


def test_heldout_problems_are_evaluated_and_never_trained_on(tmp_path, tiny_model_dir, sample_jsonl, monkeypatch):
    temperatures = set()
    real_logprobs = objectives.token_logprobs

    def spy(logits, ids, chunk_size=1024, temperature=1.0):
        temperatures.add(temperature)
        return real_logprobs(logits, ids, chunk_size, temperature)

    monkeypatch.setattr(objectives, "token_logprobs", spy)
    trained = set()

    def reward(texts, problems):
        trained.update(p.id for p in problems)
        return contains("y")(texts, problems)

    cfg = tiny_config(
        tmp_path,
        tiny_model_dir,
        sample_jsonl,
        "train.stage1_steps=2",
        "train.stage2_steps=3",
        "train.eval_every=2",
        "train.eval_problems=3",
        "train.lr_schedule=cosine",
        "train.kl_mode=reward",
        "train.gamma=1",
        "rollout.temperature=0.7",
        "eval.max_new_tokens=4",
    )
    run = train(cfg, reward_fn=reward)
    heldout = {p.id for p in load_math(sample_jsonl, split="train", seed=cfg.data.seed)[:3]}
    assert trained and not trained & heldout
    rows = metrics(run)
    evaluations = [r for r in rows if "heldout_accuracy_t1" in r]
    assert [r["step"] for r in evaluations] == [0, 2, 4, 5]  # before the first step, every 2, after the last
    assert all(r["heldout_n"] == 3 for r in evaluations)
    for key in ("heldout_delta_i_to_c", "heldout_p_t2_right_given_t1_wrong", "heldout_edit_distance"):
        assert key in evaluations[0]
    steps = [r for r in rows if "reward_t1" in r]
    for key in ("p_t2_right_given_t1_wrong", "p_t2_wrong_given_t1_right", "answer_changed", "edit_distance"):
        assert key in steps[0]
    assert 0 <= steps[0]["edit_distance"] <= 1
    assert temperatures == {0.7}  # policy and reference score tokens under the sampling distribution
    assert (run / "training.png").stat().st_size > 1000


def test_training_guards_are_clear_errors(tmp_path, tiny_model_dir, sample_jsonl):
    with pytest.raises(ScoreError, match="top_p=0.9"):
        train(tiny_config(tmp_path, tiny_model_dir, sample_jsonl, "rollout.top_p=0.9"))
    with pytest.raises(ScoreError, match="temperature=0"):
        train(tiny_config(tmp_path, tiny_model_dir, sample_jsonl, "rollout.temperature=0"))
    with pytest.raises(
        ScoreError, match=r"need \d+ tokens \(2 attempts x rollout.max_new_tokens=3000.*context is 4096"
    ):
        train(tiny_config(tmp_path, tiny_model_dir, sample_jsonl, "rollout.max_new_tokens=3000"))
    with pytest.raises(ScoreError, match="eval.max_new_tokens=5000"):
        train(tiny_config(tmp_path, tiny_model_dir, sample_jsonl, "train.eval_every=1", "eval.max_new_tokens=5000"))
    with pytest.raises(ScoreError, match="eval_problems=1000"):
        train(tiny_config(tmp_path, tiny_model_dir, sample_jsonl, "train.eval_every=1", "train.eval_problems=1000"))
    with pytest.raises(ScoreError, match=r"^model.lora_rank=100000 is larger than the model's width \(\d+\)"):
        train(tiny_config(tmp_path, tiny_model_dir, sample_jsonl, "model.lora_rank=100000"))
    assert not (tmp_path / "runs" / "tiny").exists()  # refused at its start: no folder holding only .lock
    for setting in ("train.batch_size=1000000000000", "rollout.samples_per_prompt=100000000"):
        with pytest.raises(ScoreError, match=r"^train.batch_size=\d+ x rollout.samples_per_prompt=\d+ = .* GiB"):
            train(tiny_config(tmp_path, tiny_model_dir, sample_jsonl, setting))
    assert not (tmp_path / "runs" / "tiny" / "metrics.jsonl").exists()


def test_resume_ends_with_the_same_weights(tmp_path, tiny_model_dir, sample_jsonl):
    overrides = ["train.stage1_steps=2", "train.stage2_steps=2", "train.save_every=2", "train.lr=3e-3"]
    straight = train(tiny_config(tmp_path / "a", tiny_model_dir, sample_jsonl, *overrides), contains("y"))

    cfg = tiny_config(tmp_path / "b", tiny_model_dir, sample_jsonl, *overrides)
    with pytest.raises(KeyboardInterrupt):
        train(cfg, crash_in_step(3, contains("y")))  # after the step-2 checkpoint
    run = tmp_path / "b" / "runs" / "tiny"
    assert [p.name for p in (run / "checkpoints").iterdir()] == ["step_2"]
    with pytest.raises(ScoreError, match="resume"):
        train(cfg, contains("y"))
    resumed = train(
        tiny_config(tmp_path / "b", tiny_model_dir, sample_jsonl, *overrides, "train.resume=true"), contains("y")
    )
    a = load_file(straight / "final" / "model.safetensors")
    b = load_file(resumed / "final" / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    drop = lambda rows: [{k: v for k, v in r.items() if not k.startswith("seconds")} for r in rows]  # noqa: E731
    assert drop(metrics(straight)) == drop(metrics(resumed))
    state = json.loads((resumed / "checkpoints" / "step_4" / "trainer_state.json").read_text())
    assert {k: state[k] for k in ("step", "stage", "data_position", "processes")} == {
        "step": 4,
        "stage": 2,
        "data_position": 4,
        "processes": 1,
    }


def test_nonfinite_losses_stop_the_run_keeping_the_checkpoint(tmp_path, tiny_model_dir, sample_jsonl):
    calls = {"n": 0}

    def nan_after_two_steps(texts, problems):
        calls["n"] += 1
        return [float("nan") if calls["n"] > 4 else 0.0 for _ in texts]

    cfg = tiny_config(tmp_path, tiny_model_dir, sample_jsonl, "train.save_every=2", "train.max_nonfinite_steps=2")
    with pytest.raises(ScoreError, match="non-finite"):
        train(cfg, nan_after_two_steps)
    run = tmp_path / "runs" / "tiny"
    assert [p.name for p in RunFiles(run).finished_checkpoints()] == ["step_2", "step_4"]
    assert [r.get("skipped") for r in metrics(run)] == [None, None, "non-finite loss", "non-finite loss"]


def test_an_update_that_blows_the_weights_up_stops_the_run_before_sampling_with_them(
    tmp_path, tiny_model_dir, sample_jsonl
):
    # Finite loss and gradients, but lr 1e8 moves every weight by about 1e8: the next sampling got NaN probabilities.
    cfg = tiny_config(tmp_path, tiny_model_dir, sample_jsonl, "train.lr=1e8", "train.save_every=1")
    with pytest.raises(ScoreError, match=r"^step 1: the update took .* \(train.lr=1e\+08\); lower train.lr$") as error:
        train(cfg, lambda texts, problems: [float(k % 2) for k in range(len(texts))])
    assert "\n" not in str(error.value)
    assert RunFiles(tmp_path / "runs" / "tiny").finished_checkpoints() == []  # the broken weights are not kept


def test_infinite_gradient_norm_skips_the_step_not_its_saves(tmp_path, tiny_model_dir, sample_jsonl, monkeypatch):
    # A finite loss whose gradient is infinite at step 2 only: the step is skipped (AdamW would write NaN), and
    # the step-2 checkpoint and the Stage I end model due at step 2 are still saved.
    steps = {"n": 0}
    loaded = []

    def load_with_hook(path, model_cfg, dtype):
        loaded.append(load_model(path, model_cfg, dtype))
        if len(loaded) == 1:  # the policy is loaded first
            weight = loaded[0].get_input_embeddings().weight
            weight.register_hook(lambda g: g * float("inf") if steps["n"] == 2 else g)
        return loaded[-1]

    def count_steps(texts, problems):
        steps["n"] += 0.5  # two attempts scored per step
        return contains("y")(texts, problems)

    monkeypatch.setattr(trainer_module, "load_model", load_with_hook)
    overrides = ["train.stage1_steps=2", "train.stage2_steps=2", "train.save_every=2", *RL_BATCH[:4]]
    run = train(tiny_config(tmp_path, tiny_model_dir, sample_jsonl, *overrides), count_steps)
    rows = metrics(run)
    assert [r.get("skipped") for r in rows] == [None, "non-finite gradient norm", None, None]
    assert math.isfinite(rows[2]["grad_norm"]) and "loss" in rows[1] and math.isfinite(float(rows[1]["loss"]))
    for folder in ("checkpoints/step_2", "checkpoints/step_4", "stage_ends/round1_stage1", "final"):
        assert (run / folder).is_dir(), folder
    weights = load_file(run / "final" / "model.safetensors")
    assert all(torch.isfinite(w).all() for w in weights.values())
    stage1_end = load_file(run / "stage_ends" / "round1_stage1" / "model.safetensors")
    base = load_file(tiny_model_dir / "model.safetensors")
    assert any(not torch.equal(stage1_end[k], base[k]) for k in base)  # step 1 was taken


def test_resume_refuses_other_settings_and_accepts_neutral_ones(tmp_path, tiny_model_dir, sample_jsonl):
    overrides = ["train.stage1_steps=1", "train.stage2_steps=1", "train.save_every=1"]
    run = train(tiny_config(tmp_path, tiny_model_dir, sample_jsonl, *overrides), contains("y"))
    saved = (run / "config.yaml").read_text()
    resume = [*overrides, "train.resume=true"]
    with pytest.raises(ScoreError, match=r"train\.lr \(0\.001 -> 0\.002\), train\.beta2") as error:
        train(tiny_config(tmp_path, tiny_model_dir, sample_jsonl, *resume, "train.lr=2e-3", "train.beta2=0.5"))
    assert "\n" not in str(error.value) and "alpha" not in str(error.value)
    with pytest.raises(ScoreError, match="train.stage1_steps"):  # a different schedule, not an extension
        train(tiny_config(tmp_path, tiny_model_dir, sample_jsonl, *resume, "train.stage1_steps=2"))
    # A schedule that ends before the newest checkpoint (step 2) is refused, not run as "step 2 of 1" (issue 26).
    with pytest.raises(ScoreError, match="its newest checkpoint step_2 lies beyond the 1 steps of this schedule"):
        train(tiny_config(tmp_path, tiny_model_dir, sample_jsonl, *resume, "train.stage2_steps=0"))
    assert (run / "config.yaml").read_text() == saved
    # logging, save cadence, evaluation and more Stage II steps cannot change the steps already taken
    neutral = [*resume, "train.stage2_steps=2", "train.save_every=0", "train.sample_every=1", "eval.max_problems=3"]
    train(tiny_config(tmp_path, tiny_model_dir, sample_jsonl, *neutral), contains("y"))
    assert [r["step"] for r in metrics(run)] == [1, 2, 3]
    assert load_config(run / "config.yaml").train.stage2_steps == 2


def test_resume_refuses_another_base_model_and_other_data(tmp_path, tiny_model_dir, sample_jsonl):
    # model.base_dir and the base's name are the same; its weights are replaced in place (issue 26, defect 1)
    base, data = tmp_path / "base", tmp_path / "math.jsonl"
    shutil.copytree(tiny_model_dir, base)
    shutil.copy(sample_jsonl, data)
    overrides = ["train.stage1_steps=1", "train.stage2_steps=1", "train.save_every=1"]
    run = train(tiny_config(tmp_path, base, data, *overrides), contains("y"))
    weights = load_file(base / "model.safetensors")
    save_file({name: 2 * w for name, w in weights.items()}, base / "model.safetensors", metadata={"format": "pt"})
    resume = [*overrides, "train.stage2_steps=2", "train.resume=true"]
    with pytest.raises(ScoreError, match=r"cannot resume .*: model files: model\.safetensors \(\w{12} -> \w{12}\)"):
        train(tiny_config(tmp_path, base, data, *resume), contains("y"))
    save_file(weights, base / "model.safetensors", metadata={"format": "pt"})
    data.write_text("".join(data.read_text().splitlines(keepends=True)[:-1]))  # one problem fewer
    with pytest.raises(ScoreError, match=r"data \(\w{12} -> \w{12}\)"):
        train(tiny_config(tmp_path, base, data, *resume), contains("y"))
    assert json.loads((run / "provenance.json").read_text())["model files"]["model.safetensors"]


def test_a_sampled_heldout_evaluation_leaves_the_training_as_it_was(tmp_path, tiny_model_dir, sample_jsonl):
    # eval.* decide no trained weight, so a sampled held-out evaluation must not draw from the rollouts' random
    # streams: two runs differing only in eval.temperature trained different models before issue 26 (defect 8).
    watched = ["train.stage1_steps=1", "train.stage2_steps=2", "train.save_every=0", "train.eval_every=1",
               "train.eval_problems=2", "eval.max_new_tokens=4"]  # fmt: skip
    runs = [
        train(tiny_config(tmp_path / name, tiny_model_dir, sample_jsonl, *watched, temperature), contains("y"))
        for name, temperature in (("greedy", "eval.temperature=0"), ("sampled", "eval.temperature=1.0"))
    ]
    greedy, sampled = (load_file(run / "final" / "model.safetensors") for run in runs)
    assert all(torch.equal(greedy[name], sampled[name]) for name in greedy)
    rewards = [[(r["reward_t1"], r["reward_t2"]) for r in metrics(run) if "reward_t1" in r] for run in runs]
    assert rewards[0] == rewards[1] and len(rewards[0]) == 3


def test_gradient_checkpointing_saves_less_for_backward(tmp_path, tiny_model_dir, sample_jsonl):
    # The policy as the update sees it (after a rollout, which switches to eval mode and back): with
    # model.gradient_checkpointing its forward keeps far fewer bytes for the backward pass.
    saved = {}
    for checkpointing in (False, True):
        cfg = tiny_config(
            tmp_path / str(checkpointing), tiny_model_dir, sample_jsonl, f"model.gradient_checkpointing={checkpointing}"
        )
        run = trainer_module.start_run(cfg)
        run.times.update(score=0.0)
        _, rollout = trainer_module.sample_step(run, 0, contains("y"))
        assert run.policy.training
        saved[checkpointing] = 0

        def pack(tensor, checkpointing=checkpointing):
            saved[checkpointing] += tensor.numel() * tensor.element_size()
            return tensor

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            logits = run.policy(input_ids=rollout.input_ids, attention_mask=rollout.attention_mask).logits
        logits.sum().backward()
    assert saved[True] < 0.6 * saved[False], saved


def test_bad_input_is_one_clear_error(tmp_path, tiny_model_dir, sample_jsonl):
    with pytest.raises(ScoreError, match="no training problems"):
        train(tiny_config(tmp_path, tiny_model_dir, sample_jsonl, "data.subjects=[Prealgebra]", "data.levels=[5]"))
    with pytest.raises(ScoreError, match="--task download"):
        train(tiny_config(tmp_path, tmp_path / "no-model", sample_jsonl))


def run_cli(*args: str, cwd: Path, launcher: list[str] | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = (launcher or [sys.executable]) + [str(REPO_ROOT / "code" / "main.py"), *args]
    return subprocess.run(command, capture_output=True, text=True, cwd=cwd, env=env, timeout=600)


def tiny_cli_overrides(tmp_path: Path) -> list[str]:
    return [
        "--config",
        "configs/tiny.yaml",
        "--set",
        f"model.base_dir={tmp_path / 'base_models'}",
        "--set",
        f"data.source={tmp_path / 'data' / 'train.jsonl'}",
        "--set",
        f"eval.source={tmp_path / 'data' / 'test.jsonl'}",
        "--set",
        f"train.output_dir={tmp_path / 'runs'}",
    ]


def test_tiny_config_writes_every_output(tmp_path):
    overrides = tiny_cli_overrides(tmp_path)
    assert run_cli("--task", "download", *overrides, cwd=tmp_path).returncode == 0
    out = run_cli("--task", "train", *overrides, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    run = tmp_path / "runs" / "tiny"
    assert load_config(run / "config.yaml").train.run_name == "tiny"
    rows = metrics(run)
    assert [r["step"] for r in rows] == [1, 2, 3, 4, 5, 6] and [r["stage"] for r in rows] == [1, 1, 1, 2, 2, 2]
    for key in (
        "reward_t1",
        "reward_t2",
        "i_to_c",
        "c_to_i",
        "kl_t1",
        "kl_t2",
        "loss",
        "entropy",
        "length_t1",
        "length_t2",
        "truncated_t1",
        "truncated_t2",
        "seconds_generate",
        "seconds_score",
        "seconds_reference",
        "seconds_backward",
    ):
        assert key in rows[0], key
    assert list((run / "tensorboard").glob("events.out.tfevents.*"))
    samples = [json.loads(line) for line in (run / "samples.jsonl").read_text().splitlines()]
    assert samples and len(samples[0]["attempts"]) == 2
    for name in ("step_3", "step_6"):
        checkpoint = run / "checkpoints" / name
        for file in (".metadata", "__0_0.distcp", "rng_0.pt", "trainer_state.json"):
            assert (checkpoint / file).is_file(), (name, file)
    for model in ("final", "stage_ends/round1_stage1", "stage_ends/round1_stage2"):
        for file in ("model.safetensors", "config.json", "tokenizer.json"):
            assert (run / model / file).is_file(), (model, file)
    assert not list(run.rglob("*.tmp"))


TWO_PROCESSES = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", "2", "--num_machines", "1"]
# accelerate's --cpu launcher starts a single process (several need mpirun); --multi_gpu uses torch.distributed.run,
# and the trainer makes the group gloo on a machine without GPUs.
DDP = [*TWO_PROCESSES, "--multi_gpu", "--mixed_precision", "no", "--dynamo_backend", "no"]
# The shipped FSDP launch config: accelerate itself falls back to MULTI_CPU here, the trainer shards with FSDP2.
FSDP = [*TWO_PROCESSES, "--config_file", str(REPO_ROOT / "configs/accelerate/fsdp.yaml"), "--mixed_precision", "no"]


def final_weights(run: Path) -> dict[str, torch.Tensor]:
    return load_file(run / "final" / "model.safetensors")


def test_two_processes_train_and_exit_cleanly(tmp_path):
    # Three consecutive 2-process runs exit 0 (a run used to abort at exit, or lose a race in save_checkpoint);
    # the tiny config's reward moves the weights, so "identical on 2 processes" means something.
    overrides = tiny_cli_overrides(tmp_path)
    assert run_cli("--task", "download", *overrides, cwd=tmp_path).returncode == 0
    # The batch baseline gathers both processes' rewards; the held-out problems are split over both and gathered.
    options = ["train.baseline=batch", "train.eval_every=3"]
    options = [x for option in options for x in ("--set", option)]
    for attempt in range(3):
        name = ["--set", f"train.run_name=r{attempt}"]
        out = run_cli("--task", "train", *overrides, *options, *name, cwd=tmp_path, launcher=DDP)
        assert out.returncode == 0, out.stderr[-3000:]
        assert "weights identical on 2 processes" in out.stdout
    run = tmp_path / "runs" / "r0"
    assert [p.name for p in RunFiles(run).finished_checkpoints()] == ["step_3", "step_6"]
    assert (run / "checkpoints" / "step_6" / "rng_1.pt").is_file()
    rows = [r for r in metrics(run) if "reward_t1" in r]
    assert len(rows) == 6 and any(r["grad_norm"] > 0 for r in rows)
    assert [(r["step"], r["heldout_n"]) for r in metrics(run) if "heldout_n" in r] == [(0, 4), (3, 4), (6, 4)]
    base = load_file(tmp_path / "base_models" / "tiny-qwen2" / "model.safetensors")
    assert any(not torch.equal(final_weights(run)[k], base[k]) for k in base)
    assert all(torch.equal(final_weights(run)[k], final_weights(tmp_path / "runs" / "r2")[k]) for k in base)


def test_two_processes_killed_and_resumed_match_an_uninterrupted_run(tmp_path):
    overrides = tiny_cli_overrides(tmp_path)
    assert run_cli("--task", "download", *overrides, cwd=tmp_path).returncode == 0
    overrides += ["--set", "train.stage2_steps=20", "--set", "train.save_every=2"]
    straight = run_cli("--task", "train", *overrides, "--set", "train.run_name=straight", cwd=tmp_path, launcher=DDP)
    assert straight.returncode == 0, straight.stderr[-3000:]

    command = [*DDP, str(REPO_ROOT / "code" / "main.py"), "--task", "train", *overrides]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    log = (tmp_path / "killed.log").open("w")
    launcher = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=log, stderr=log)
    files = RunFiles(tmp_path / "runs" / "tiny")
    deadline = time.monotonic() + 300
    while not files.finished_checkpoints() and launcher.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    parent = psutil.Process(launcher.pid)  # the launcher and both training processes, mid-run
    for process in [parent, *parent.children(recursive=True)]:
        process.send_signal(signal.SIGKILL)
    launcher.wait()
    killed_at = len(metrics(files.root))
    assert files.finished_checkpoints() and killed_at < 23, killed_at

    resumed = run_cli("--task", "train", *overrides, "--set", "train.resume=true", cwd=tmp_path, launcher=DDP)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    a, b = final_weights(tmp_path / "runs" / "straight"), final_weights(files.root)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert [r["reward_t2"] for r in metrics(files.root)] == [
        r["reward_t2"] for r in metrics(tmp_path / "runs" / "straight")
    ]


def test_fsdp2_on_two_processes_trains_saves_and_resumes_exactly(tmp_path):
    # configs/accelerate/fsdp.yaml on 2 gloo processes: the policy is sharded (FSDP2), two micro-batches
    # accumulate without synchronisation, generation runs from gathered parameters, checkpoints are sharded.
    overrides = tiny_cli_overrides(tmp_path) + ["--set", "train.micro_batch_size=2"]
    assert run_cli("--task", "download", *overrides, cwd=tmp_path).returncode == 0
    sharded = run_cli("--task", "train", *overrides, "--set", "train.run_name=fsdp", cwd=tmp_path, launcher=FSDP)
    assert sharded.returncode == 0, sharded.stderr[-3000:]
    assert "policy sharded with FSDP2 over 2 processes, and the reference" in sharded.stdout
    run = tmp_path / "runs" / "fsdp"
    assert sorted(p.name for p in (run / "checkpoints" / "step_3").glob("*.distcp")) == ["__0_0.distcp", "__1_0.distcp"]
    # the same steps data-parallel (DDP): the same gradients up to float summation order
    replicated = run_cli("--task", "train", *overrides, "--set", "train.run_name=ddp", cwd=tmp_path, launcher=DDP)
    assert replicated.returncode == 0, replicated.stderr[-3000:]
    a, b = final_weights(run), final_weights(tmp_path / "runs" / "ddp")
    assert a.keys() == b.keys() and all(torch.allclose(a[k], b[k], atol=1e-5) for k in a)
    base = load_file(tmp_path / "base_models" / "tiny-qwen2" / "model.safetensors")
    assert any(not torch.equal(a[k], base[k]) for k in base)

    # exact resume: Stage I alone (3 steps, checkpoint at step 3), then resumed with Stage II added
    first = run_cli(*overrides, "--task", "train", "--set", "train.stage2_steps=0", cwd=tmp_path, launcher=FSDP)
    assert first.returncode == 0, first.stderr[-3000:]
    second = run_cli(*overrides, "--task", "train", "--set", "train.resume=true", cwd=tmp_path, launcher=FSDP)
    assert second.returncode == 0, second.stderr[-3000:]
    c = final_weights(tmp_path / "runs" / "tiny")
    assert all(torch.equal(a[k], c[k]) for k in a)


def test_resume_with_another_lr_is_one_error_line(tmp_path):
    overrides = tiny_cli_overrides(tmp_path) + ["--set", "train.stage1_steps=1", "--set", "train.stage2_steps=0"]
    assert run_cli("--task", "download", *overrides, cwd=tmp_path).returncode == 0
    assert run_cli("--task", "train", *overrides, cwd=tmp_path).returncode == 0
    config = (tmp_path / "runs" / "tiny" / "config.yaml").read_text()
    out = run_cli("--task", "train", *overrides, "--set", "train.resume=true", "--set", "train.lr=5e-4", cwd=tmp_path)
    assert out.returncode == 1
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: cannot resume") and "train.lr (0.001 -> 0.0005)" in lines[0]
    assert (tmp_path / "runs" / "tiny" / "config.yaml").read_text() == config


def test_resumed_run_does_not_repeat_tensorboard_steps(tmp_path, tiny_model_dir, sample_jsonl):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    overrides = ["train.stage1_steps=2", "train.stage2_steps=2", "train.save_every=2"]
    with pytest.raises(KeyboardInterrupt):  # steps 1-3 logged, the checkpoint at step 2
        train(tiny_config(tmp_path, tiny_model_dir, sample_jsonl, *overrides), crash_in_step(4, contains("y")))
    run = train(tiny_config(tmp_path, tiny_model_dir, sample_jsonl, *overrides, "train.resume=true"), contains("y"))
    events = EventAccumulator(str(run / "tensorboard"))
    events.Reload()
    assert [e.step for e in events.Scalars("train/loss")] == [1, 2, 3, 4]
    assert [r["step"] for r in metrics(run)] == [1, 2, 3, 4]


def test_training_stops_with_a_checkpoint_when_the_next_step_would_not_fit(
    tmp_path, tiny_model_dir, sample_jsonl, monkeypatch
):
    # A clock the reward advances: every step lasts 60 s. time_limit 200 s and stop_margin 50 s: after step 1
    # (60 s) another step ends at 170 s, in time; after step 2 it would end at 230 s, so the run stops there.
    from types import SimpleNamespace

    from score.preemption import STOP_NOTE_VARIABLE, TrainingStopped

    clock = {"now": 1000.0}

    def slow_reward(texts, problems):
        clock["now"] += 30  # two scored attempts a step
        return contains("y")(texts, problems)

    monkeypatch.setattr(
        trainer_module, "time", SimpleNamespace(time=lambda: clock["now"], perf_counter=time.perf_counter)
    )
    for name in ("SLURM_JOB_ID", "SLURM_JOB_END_TIME"):
        monkeypatch.delenv(name, raising=False)
    note = tmp_path / "stop_note"
    monkeypatch.setenv(STOP_NOTE_VARIABLE, str(note))
    limited = ["train.save_every=0", "train.time_limit=200", "train.stop_margin=50"]
    with pytest.raises(TrainingStopped, match="stopped by the time limit after step 2 of 6") as stopped:
        train(tiny_config(tmp_path, tiny_model_dir, sample_jsonl, *limited), slow_reward)
    run = tmp_path / "runs" / "tiny"
    assert [p.name for p in RunFiles(run).finished_checkpoints()] == ["step_2"]
    assert note.read_text() == str(stopped.value) + "\n"  # run.slurm requeues on it
    train(tiny_config(tmp_path, tiny_model_dir, sample_jsonl, "train.save_every=0", "train.resume=true"), slow_reward)
    assert [r["step"] for r in metrics(run)] == [1, 2, 3, 4, 5, 6]


def test_a_damaged_checkpoint_falls_back_to_the_previous_one(tmp_path, tiny_model_dir, sample_jsonl, capsys):
    overrides = ["train.stage1_steps=2", "train.stage2_steps=0", "train.save_every=1"]
    run = train(tiny_config(tmp_path, tiny_model_dir, sample_jsonl, *overrides), contains("y"))
    shard = run / "checkpoints" / "step_2" / "__0_0.distcp"
    shard.write_bytes(shard.read_bytes()[:100])
    capsys.readouterr()
    longer = [*overrides, "train.stage2_steps=1", "train.resume=true"]
    train(tiny_config(tmp_path, tiny_model_dir, sample_jsonl, *longer), contains("y"))
    out = capsys.readouterr().out
    assert f"checkpoint step_2 is damaged: {shard} is missing or cut short; taking the previous checkpoint" in out
    assert "step 1 of 3" in out and [r["step"] for r in metrics(run)] == [1, 2, 3]


def test_an_unwritable_output_folder_is_one_error_line(tmp_path, tiny_model_dir, sample_jsonl):
    # root ignores permissions: a file where the output folder belongs fails for everyone
    blocked = tmp_path / "runs"
    blocked.write_text("not a folder")
    with pytest.raises(ScoreError, match=f"cannot write to {blocked / 'tiny'}: ") as error:
        train(tiny_config(tmp_path, tiny_model_dir, sample_jsonl))
    assert "\n" not in str(error.value)


def test_replica_check_copies_one_parameter_at_a_time_in_float64(monkeypatch):
    import weakref
    from types import SimpleNamespace

    live, most = [0], [0]
    double = torch.Tensor.double

    def counted_double(tensor):
        copy = double(tensor)
        live[0] += 1
        most[0] = max(most[0], live[0])
        weakref.finalize(copy, lambda: live.__setitem__(0, live[0] - 1))
        return copy

    policy = torch.nn.Sequential(*[torch.nn.Linear(4, 4) for _ in range(5)])  # 10 parameters
    gathered = []
    accelerator = SimpleNamespace(
        num_processes=2, is_main_process=False, device=torch.device("cpu"),
        gather=lambda t: gathered.append(t) or torch.cat([t, t]),
    )  # fmt: skip
    monkeypatch.setattr(torch.Tensor, "double", counted_double)
    trainer_module.check_replicas_agree(accelerator, policy)
    assert most[0] <= 2  # the previous copy is freed as the next is made: never the whole model
    params = [double(p.detach()) for p in policy.parameters()]
    expected = torch.stack([sum(p.sum() for p in params), sum((p * p).sum() for p in params)])
    torch.testing.assert_close(gathered[0].view(2), expected)

    accelerator.gather = lambda t: torch.cat([t, t + 1])
    with pytest.raises(ScoreError, match="model weights differ across processes"):
        trainer_module.check_replicas_agree(accelerator, policy)


def budget_rollout(lengths: list[int], width: int = 12):
    from score.rollout import Rollout

    g = torch.Generator().manual_seed(0)
    n = len(lengths)
    attention = (torch.arange(width)[None] < torch.tensor(lengths)[:, None]).long()
    attempts = torch.where(torch.arange(width)[None] >= 2, 1, 0) * attention
    attempts[:, -3:] *= 2  # a second attempt where the longest rows reach
    ids = torch.randint(3, 60, (n, width), generator=g) * attention
    zeros = torch.zeros(n, 2)
    return Rollout(ids, attention, attempts, zeros, zeros.bool(), zeros.long(), [[""]] * n, torch.arange(n))


def test_micro_batches_by_token_budget_cover_every_row_once_within_the_budget():
    rollout = budget_rollout([5, 2, 9, 3, 8, 1])
    pieces = list(trainer_module.micro_batches(rollout, size=4, tokens=16))
    assert [p[3].tolist() for p in pieces] == [[2], [4, 0], [3, 1, 5]]  # longest first, like lengths together
    for ids, _, attempts, rows in pieces:
        assert ids.shape == (len(rows), rollout.attention_mask[rows].sum(1).max())  # trimmed to the longest
        assert ids.numel() <= 16 or len(rows) == 1
        assert torch.equal(ids, rollout.input_ids[rows, : ids.shape[1]])
        assert torch.equal(attempts, rollout.attempt_mask[rows, : ids.shape[1]])
    consecutive = [p[3].tolist() for p in trainer_module.micro_batches(rollout, size=4)]
    assert consecutive == [[0, 1, 2, 3], [4, 5]]


def test_micro_batches_by_token_budget_give_the_same_loss_and_gradients(tiny_model_dir):
    rollout = budget_rollout([5, 2, 12, 3, 8, 11])
    advantages = torch.randn(6, 2, generator=torch.Generator().manual_seed(1))
    normalizer = objectives.loss_units(rollout.attempt_mask, "token_mean")

    def loss_and_gradients(**batching):
        policy = load_model(tiny_model_dir, load_config(None).model, torch.float64)
        total = 0.0
        for ids, attention, attempts, rows in trainer_module.micro_batches(rollout, **batching):
            logp, _ = objectives.token_logprobs_and_entropy(policy(input_ids=ids, attention_mask=attention).logits, ids)
            loss, _ = objectives.score_loss(
                logp, logp.detach() - 0.1, attempts, advantages[rows], (0.1, 0.01), "k3", normalizer
            )
            loss.backward()
            total += loss.item()
        return total, [p.grad for p in policy.parameters()]

    loss, grads = loss_and_gradients(size=2)
    packed_loss, packed_grads = loss_and_gradients(size=2, tokens=24)
    assert packed_loss == pytest.approx(loss, rel=1e-9)
    for grad, packed in zip(grads, packed_grads, strict=True):
        torch.testing.assert_close(packed, grad, rtol=1e-7, atol=1e-10)


def test_a_warmup_longer_than_the_run_is_one_warning_line(tmp_path, tiny_model_dir, sample_jsonl, capsys):
    steps = ["train.warmup_steps=50", "train.stage1_steps=1", "train.stage2_steps=0"]
    train(tiny_config(tmp_path, tiny_model_dir, sample_jsonl, *RL_BATCH, *steps))
    warnings = [line for line in capsys.readouterr().out.splitlines() if line.startswith("warning")]
    assert warnings == [
        "warning: train.warmup_steps=50 is not shorter than the run's 1 steps: the learning rate never reaches "
        "train.lr=0.003"
    ]
