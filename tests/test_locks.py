import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from score import evaluate as ev
from score.config import REPO_ROOT, ScoreError, load_config
from score.experiment import run_experiment
from score.locks import take_lock

MAIN = str(REPO_ROOT / "code" / "main.py")
HOLD = "import sys, time\nfrom score.locks import take_lock\ntake_lock(__import__('pathlib').Path(sys.argv[1]))\n"


def holding(lock_file: Path) -> subprocess.Popen:
    """Another process that takes `lock_file` and keeps it until killed."""
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT / "code")}
    script = HOLD + "print('held', flush=True)\ntime.sleep(600)\n"
    process = subprocess.Popen(
        [sys.executable, "-c", script, str(lock_file)], stdout=subprocess.PIPE, text=True, env=env
    )
    assert process.stdout.readline().strip() == "held"
    return process


def test_a_lock_held_elsewhere_is_refused_and_freed_by_any_exit(tmp_path):
    lock_file = tmp_path / "run" / ".lock"
    other = holding(lock_file)
    with pytest.raises(ScoreError, match=f"held by another running process \\(pid {other.pid}\\)"):
        take_lock(lock_file)
    other.send_signal(signal.SIGKILL)  # no clean-up runs: the OS releases the lock, nothing stale is left
    other.wait()
    take_lock(lock_file)
    take_lock(lock_file)  # held by this process already: fine (an experiment evaluates into one folder twice)
    assert lock_file.read_text() == f"{os.getpid()}\n"


def test_an_evaluation_refuses_a_folder_another_evaluation_writes(tmp_path, tiny_model_dir, sample_jsonl):
    cfg = load_config(
        REPO_ROOT / "configs" / "tiny.yaml",
        [f"eval.model={tiny_model_dir}", f"eval.source={sample_jsonl}", f"train.output_dir={tmp_path}", "eval.name=x"],
    )
    other = holding(tmp_path / "base-model" / "eval" / ".x.lock")
    try:
        with pytest.raises(ScoreError, match="another run is writing there.*eval.name"):
            ev.evaluate(cfg)
    finally:
        other.kill()
        other.wait()
    assert not (tmp_path / "base-model" / "eval" / "x").exists()


def test_a_second_training_into_the_same_run_refuses_with_one_line(tmp_path, tiny_model_dir, sample_jsonl):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    sets = [f"model.name={tiny_model_dir}", f"data.source={sample_jsonl}", f"train.output_dir={tmp_path}"]
    sets += ["train.stage1_steps=500", "rollout.max_new_tokens=4", "train.save_every=0"]  # outlives the second
    command = [sys.executable, MAIN, "--task", "train", "--config", "configs/tiny.yaml"]
    command += [a for s in sets for a in ("--set", s)]
    first = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        metrics = tmp_path / "tiny" / "metrics.jsonl"
        deadline = time.monotonic() + 300
        while not metrics.exists() and first.poll() is None and time.monotonic() < deadline:
            time.sleep(0.5)
        assert metrics.exists(), first.stderr.read() if first.poll() is not None else "no step in 300 s"
        second = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
        assert second.returncode == 1
        assert second.stderr.strip().count("\n") == 0 and "Traceback" not in second.stderr
        assert "train.run_name" in second.stderr and f"pid {first.pid}" in second.stderr
        assert first.poll() is None  # the first run goes on
    finally:
        first.kill()
        first.wait()


def test_an_experiment_refuses_a_folder_another_experiment_writes(tmp_path):
    cfg = load_config(REPO_ROOT / "configs" / "tiny.yaml", [f"train.output_dir={tmp_path}", "experiment.name=e"])
    other = holding(tmp_path / "e" / ".lock")
    try:
        with pytest.raises(ScoreError, match="another run is writing there.*experiment.name"):
            run_experiment(cfg)
    finally:
        other.kill()
        other.wait()
    assert not (tmp_path / "e" / "settings.yaml").exists()  # refused before writing anything
