import json
import signal
import subprocess
import sys

import pytest
from score.config import REPO_ROOT

MAIN = str(REPO_ROOT / "code" / "main.py")


def run(*args: str, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, MAIN, *args], capture_output=True, text=True, cwd=cwd, timeout=120)


def test_help_explains_every_task(tmp_path):
    out = run("--help", cwd=tmp_path)
    assert out.returncode == 0
    for task in ("download", "train", "evaluate"):
        assert task in out.stdout


def test_unknown_config_key_is_one_line_exit_2(tmp_path):
    out = run("--task", "train", "--set", "train.learning_rate=1", cwd=tmp_path)
    assert out.returncode == 2
    assert out.stderr.strip().count("\n") == 0
    assert "train.learning_rate" in out.stderr and "Traceback" not in out.stderr


def test_config_found_from_any_directory(tmp_path):
    out = run("--task", "train", "--config", "configs/default.yaml", "--set", "train.lr=-1", cwd=tmp_path)
    assert out.returncode == 2 and "train.lr" in out.stderr and "default.yaml" in out.stderr


def test_unknown_task_is_rejected(tmp_path):
    out = run("--task", "fly", cwd=tmp_path)
    assert out.returncode == 2 and "invalid choice" in out.stderr


POOL_RUNS = {  # 80 evaluation problems, or 8 problems x 8 samples: both graded by a pool of 2 workers
    "evaluate": ["eval.batch_size=80", "eval.max_new_tokens=4"],
    "train": [
        "train.reward=answer", "train.batch_size=8", "rollout.samples_per_prompt=8", "train.micro_batch_size=16",
        "train.stage1_steps=1", "train.stage2_steps=0", "rollout.max_new_tokens=4", "rollout.generation_batch_size=64",
    ],
}  # fmt: skip


def pool_command(task: str, tmp_path, model, problems: int = 80, *settings: str) -> list[str]:
    """main.py running `task` on `problems` problems whose answers the grader pool of 2 workers must check."""
    rows = [
        {"problem": f"What is {k} + {k}?", "answer": "\\sqrt{2}", "subject": "Algebra", "level": 1, "unique_id": str(k)}
        for k in range(problems)
    ]
    source = tmp_path / "problems.jsonl"
    source.write_text("".join(json.dumps(row) + "\n" for row in rows))
    overrides = [
        f"model.name={model}", f"eval.model={model}", f"data.source={source}", f"eval.source={source}",
        f"train.output_dir={tmp_path}", "grader.workers=2", *POOL_RUNS[task], *settings,
    ]  # fmt: skip
    command = [sys.executable, MAIN, "--task", task, "--config", "configs/tiny.yaml"]
    return command + [a for o in overrides for a in ("--set", o)]


@pytest.mark.parametrize("task", POOL_RUNS)
def test_grading_in_a_pool_exits_and_leaves_no_process(task, tmp_path, tiny_model_dir, run_counting_leftovers):
    out, left = run_counting_leftovers(pool_command(task, tmp_path, tiny_model_dir), timeout=300)
    assert out.returncode == 0, out.stderr
    assert left == []


def test_sigterm_to_an_evaluation_grading_in_a_pool_is_one_line_and_leaves_nothing(
    tmp_path, tiny_model_dir, run_counting_leftovers
):
    # Five batches of 80: the signal comes once the pool's forkserver and its 2 workers run, with batches to do.
    command = pool_command("evaluate", tmp_path, tiny_model_dir, 400)
    out, left = run_counting_leftovers(command, timeout=300, stop=(signal.SIGTERM, "multiprocessing.forkserver", 3))
    assert out.returncode == 128 + signal.SIGTERM, out.stderr
    assert out.stderr.strip().splitlines()[-1] == "stopped by SIGTERM" and "Traceback" not in out.stderr, out.stderr
    assert left == []
    written = next(tmp_path.glob("base-*/eval/*/generations.jsonl"))
    assert len(written.read_text().splitlines()) < 400  # stopped before its end


def test_a_training_killed_with_its_grading_pool_up_leaves_nothing(tmp_path, tiny_model_dir, run_counting_leftovers):
    # SIGKILL runs no clean-up in the training process: its pool's workers must notice that it is gone.
    command = pool_command("train", tmp_path, tiny_model_dir, 80, "train.stage1_steps=20")
    out, left = run_counting_leftovers(command, timeout=300, stop=(signal.SIGKILL, "multiprocessing.forkserver", 3))
    assert out.returncode == -signal.SIGKILL, out.stderr
    assert left == []


@pytest.mark.parametrize(
    "setting", ["train.run_name=../../escaped", "train.run_name=", "train.lr=1e999", "train.seed=-1",
                "model.attn_implementation=bogus"],
)  # fmt: skip
def test_bad_names_and_values_are_one_line_exit_2(tmp_path, setting):
    out = run("--task", "train", "--set", f"train.output_dir={tmp_path}", "--set", setting, cwd=tmp_path)
    assert out.returncode == 2 and out.stderr.strip().count("\n") == 0
    assert setting.partition("=")[0] in out.stderr and "Traceback" not in out.stderr
    assert list(tmp_path.iterdir()) == []  # nothing written, inside output_dir or out of it
