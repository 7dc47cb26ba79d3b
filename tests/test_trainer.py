import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from score.config import REPO_ROOT, ScoreError, load_config
from score.data import load_math
from score.trainer import stage_schedule, step_problems, train

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


def mean(values) -> float:
    values = list(values)
    return sum(values) / len(values)


def test_stage_schedule_and_rounds():
    cfg = load_config(None, ["train.stage1_steps=2", "train.stage2_steps=3", "train.rounds=2"])
    assert stage_schedule(cfg) == [1, 1, 2, 2, 2, 1, 1, 2, 2, 2]
    cfg = load_config(None, ["train.stage1_steps=0", "train.stage2_steps=2"])
    assert stage_schedule(cfg) == [2, 2]


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


def test_resume_ends_with_the_same_weights(tmp_path, tiny_model_dir, sample_jsonl):
    overrides = ["train.stage1_steps=2", "train.stage2_steps=2", "train.save_every=2", "train.lr=3e-3"]
    straight = train(tiny_config(tmp_path / "a", tiny_model_dir, sample_jsonl, *overrides), contains("y"))

    calls = {"n": 0}

    def crash_after_checkpoint(texts, problems):
        calls["n"] += 1
        if calls["n"] > 4:  # two scored attempts a step: step 3 dies after the step-2 checkpoint
            raise KeyboardInterrupt
        return contains("y")(texts, problems)

    cfg = tiny_config(tmp_path / "b", tiny_model_dir, sample_jsonl, *overrides)
    with pytest.raises(KeyboardInterrupt):
        train(cfg, crash_after_checkpoint)
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
    assert state == {"step": 4, "stage": 2, "data_position": 4}


def test_nonfinite_losses_stop_the_run_keeping_the_checkpoint(tmp_path, tiny_model_dir, sample_jsonl):
    calls = {"n": 0}

    def nan_after_two_steps(texts, problems):
        calls["n"] += 1
        return [float("nan") if calls["n"] > 4 else 0.0 for _ in texts]

    cfg = tiny_config(tmp_path, tiny_model_dir, sample_jsonl, "train.save_every=2", "train.max_nonfinite_steps=2")
    with pytest.raises(ScoreError, match="non-finite"):
        train(cfg, nan_after_two_steps)
    run = tmp_path / "runs" / "tiny"
    assert (run / "checkpoints" / "step_2" / "model.safetensors").is_file()
    assert [r.get("skipped") for r in metrics(run)] == [None, None, "non-finite loss", "non-finite loss"]


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
        for file in ("model.safetensors", "optimizer.bin", "random_states_0.pkl", "trainer_state.json"):
            assert (checkpoint / file).is_file(), (name, file)
    for model in ("final", "stage_ends/round1_stage1", "stage_ends/round1_stage2"):
        for file in ("model.safetensors", "config.json", "tokenizer.json"):
            assert (run / model / file).is_file(), (model, file)
    assert not list(run.rglob("*.tmp"))


def test_two_processes_share_weights(tmp_path):
    overrides = tiny_cli_overrides(tmp_path)
    assert run_cli("--task", "download", *overrides, cwd=tmp_path).returncode == 0
    # accelerate's --cpu launcher starts a single process (several need mpirun); --multi_gpu uses
    # torch.distributed.run, and the trainer makes the group gloo on a machine without GPUs.
    launcher = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2"]
    launcher += ["--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]
    out = run_cli("--task", "train", *overrides, "--set", "train.save_every=0", cwd=tmp_path, launcher=launcher)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "weights identical on 2 processes" in out.stdout
    run = tmp_path / "runs" / "tiny"
    assert (run / "checkpoints" / "step_6" / "random_states_1.pkl").is_file()
    assert len(metrics(run)) == 6
