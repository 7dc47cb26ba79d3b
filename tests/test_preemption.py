"""SIGTERM/SIGUSR1 stop training at a step boundary with a checkpoint; the resumed run ends as an uninterrupted one."""

import json
import os
import signal
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import load_file
from score.config import REPO_ROOT
from score.preemption import STOPPED_EXIT_CODE, StopRequests, next_step_fits, run_deadline, slurm_job_end

# The real command line (main.py), with the answer checker replaced by a reward the tiny model earns, so
# that its weights move; each process writes its pid so that a test can signal exactly one of them.
ENTRY = """
import os, sys
from pathlib import Path
sys.path.insert(0, {code!r})
Path({pids!r}, "pid_" + os.environ.get("RANK", "0")).write_text(str(os.getpid()))
import main, score.trainer
score.trainer.grade = lambda texts, answers, *settings: [float("y" in t) for t in texts]
sys.exit(main.main(sys.argv[1:]))
"""
LAUNCH_2 = ["-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1"]
LAUNCH_2 += ["--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", "0"]


def test_stop_requests_catch_signals_only_while_active():
    before = signal.getsignal(signal.SIGUSR1)
    accelerator = SimpleNamespace(device="cpu", num_processes=1)
    with StopRequests() as stop:
        assert stop.agreed(accelerator) is None
        os.kill(os.getpid(), signal.SIGUSR1)
        assert stop.agreed(accelerator) == "signal SIGUSR1"
        os.kill(os.getpid(), signal.SIGTERM)
        assert stop.agreed(accelerator) == "signal SIGTERM"
    assert signal.getsignal(signal.SIGUSR1) is before
    with StopRequests() as stop:
        stop.time_up()
        assert stop.agreed(accelerator) == "the time limit"


def test_next_step_fits_before_the_deadline():
    # now 100 s, the longest step 30 s, 20 s for the checkpoint and exit: the step must end by 150 s
    assert next_step_fits(100, 150, 30, 20) and not next_step_fits(100, 149, 30, 20)
    assert next_step_fits(100, None, 1e9, 1e9)  # no deadline


def test_the_deadline_is_the_earlier_of_time_limit_and_slurm_end(tmp_path, monkeypatch):
    for name in ("SLURM_JOB_ID", "SLURM_JOB_END_TIME"):
        monkeypatch.delenv(name, raising=False)
    assert slurm_job_end() is None and run_deadline(1000, 0) is None
    assert run_deadline(1000, 60) == 1060
    monkeypatch.setenv("SLURM_JOB_END_TIME", "1030")
    assert run_deadline(1000, 60) == 1030 and run_deadline(1000, 0) == 1030
    # Slurm before 23.02: squeue prints the end in local time, or N/A when the job has no limit
    monkeypatch.delenv("SLURM_JOB_END_TIME")
    monkeypatch.setenv("SLURM_JOB_ID", "42")
    squeue = tmp_path / "squeue"
    monkeypatch.setenv("PATH", f"{tmp_path}:{os.environ['PATH']}")
    for printed, end in (("2026-12-04T19:00:00", datetime(2026, 12, 4, 19).timestamp()), ("N/A", None)):
        squeue.write_text(f'#!/bin/sh\n[ "$*" = "-h -j 42 -o %e" ] && echo {printed}\n')
        squeue.chmod(0o755)
        assert slurm_job_end() == end


def start(tmp_path: Path, name: str, model: Path, data: Path, processes: int, *extra: str) -> subprocess.Popen:
    pids = tmp_path / f"pids_{name}"
    pids.mkdir(exist_ok=True)
    entry = tmp_path / "entry.py"
    entry.write_text(ENTRY.format(code=str(REPO_ROOT / "code"), pids=str(pids)))
    launcher = [sys.executable] + (LAUNCH_2 if processes == 2 else [])
    overrides = [
        f"model.name={model}",
        f"data.source={data}",
        f"train.output_dir={tmp_path / name}",
        "train.stage1_steps=3",
        "train.stage2_steps=3",
        "train.lr=3e-3",
        "train.save_every=0",
        "train.sample_every=0",
        "rollout.max_new_tokens=8",
        "prompts.first_turn=Solve.",
        "prompts.correction=Again.",
        *extra,
    ]
    command = launcher + [str(entry), "--task", "train", "--config", "configs/tiny.yaml"]
    command += [arg for o in overrides for arg in ("--set", o)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(command, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(process: subprocess.Popen) -> tuple[int, str]:
    out, err = process.communicate(timeout=600)
    return process.returncode, out + err


def final_weights(run: Path) -> dict[str, torch.Tensor]:
    return load_file(run / "final" / "model.safetensors")


def logged_steps(run: Path) -> list[dict]:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if not k.startswith("seconds")} for r in rows]


@pytest.mark.parametrize("processes", [1, 2])
def test_signal_checkpoints_at_step_boundary_and_resume_matches(tmp_path, tiny_model_dir, sample_jsonl, processes):
    code, log = finish(start(tmp_path, "straight", tiny_model_dir, sample_jsonl, processes))
    assert code == 0, log[-3000:]

    stopped = start(tmp_path, "stopped", tiny_model_dir, sample_jsonl, processes)
    run = tmp_path / "stopped" / "tiny"
    deadline = time.monotonic() + 300
    while not (run / "metrics.jsonl").exists() or not (run / "metrics.jsonl").read_text():
        assert stopped.poll() is None and time.monotonic() < deadline, finish(stopped)[1][-3000:]
        time.sleep(0.05)
    # One process only (the last rank): the processes must agree to stop after the same step.
    target = tmp_path / "pids_stopped" / f"pid_{processes - 1}"
    os.kill(int(target.read_text()), signal.SIGUSR1)
    code, log = finish(stopped)
    if processes == 1:
        assert code == STOPPED_EXIT_CODE, log[-3000:]
    else:  # torch.distributed.run reports the workers' status 75 as a failure
        assert code != 0 and "exitcode  : 75" in log, log[-3000:]
    done = len(logged_steps(run))
    assert 1 <= done < 6, log[-3000:]
    assert f"stopped by signal SIGUSR1 after step {done} of 6" in log
    checkpoint = run / "checkpoints" / f"step_{done}"
    assert [p.name for p in (run / "checkpoints").iterdir()] == [checkpoint.name]
    for rank in range(processes):
        assert (checkpoint / f"rng_{rank}.pt").is_file()
    assert not (run / "final").exists()

    code, log = finish(start(tmp_path, "stopped", tiny_model_dir, sample_jsonl, processes, "train.resume=true"))
    assert code == 0, log[-3000:]
    assert f"resuming from {checkpoint} (step {done} of 6)" in log
    straight, resumed = final_weights(tmp_path / "straight" / "tiny"), final_weights(run)
    initial = load_file(tiny_model_dir / "model.safetensors")
    assert any(not torch.equal(straight[k], initial[k]) for k in initial), "training must move the weights"
    assert all(torch.equal(straight[k], resumed[k]) for k in straight)
    assert logged_steps(tmp_path / "straight" / "tiny") == logged_steps(run)
