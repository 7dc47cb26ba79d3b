import subprocess
import sys

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
