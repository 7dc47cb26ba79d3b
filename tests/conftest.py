"""Shared fixtures: the tiny local model and the project's sample MATH-style problems."""

import os
import subprocess
import time
import uuid
from pathlib import Path

import psutil
import pytest
from score import tiny
from score.config import REPO_ROOT


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A random 2-layer Qwen2 model with its tokenizer, built once per test session."""
    return tiny.build_tiny_model(tmp_path_factory.mktemp("tiny") / "model")


@pytest.fixture(scope="session")
def sample_rows() -> list[dict]:
    return tiny.sample_problems()


@pytest.fixture(scope="session")
def sample_jsonl(tmp_path_factory, sample_rows) -> Path:
    """The sample problems as a MATH-500-style JSONL file."""
    return tiny.write_sample_jsonl(tmp_path_factory.mktemp("jsonl") / "math.jsonl", sample_rows)


@pytest.fixture(scope="session")
def sample_tar_root(tmp_path_factory, sample_rows) -> Path:
    """A folder holding MATH/{train,test}/<subject>/<n>.json, as MATH.tar extracts."""
    root = tmp_path_factory.mktemp("tar")
    tiny.write_sample_tar_layout(root, sample_rows)
    return root


@pytest.fixture
def run_counting_leftovers():
    """Run a command in a subprocess (with a timeout: a hang fails, not blocks) and return it with the processes it
    left behind. Its descendants are found by an environment marker they inherit, since an exiting parent's
    children are re-parented away from it; those still alive a few seconds after it returned are killed and
    listed."""

    def run(command: list[str], timeout: float = 120, **kwargs) -> tuple[subprocess.CompletedProcess, list[str]]:
        marker = uuid.uuid4().hex
        env = {**os.environ, "PYTHONPATH": str(REPO_ROOT / "code"), "SCORE_TEST_MARKER": marker}
        try:
            out = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env, **kwargs)
        except subprocess.TimeoutExpired:
            for proc in _marked_processes(marker):  # a hang's processes would outlive the test
                proc.kill()
            raise
        deadline = time.monotonic() + 10  # a forkserver notices its parent's exit within moments
        while (left := _marked_processes(marker)) and time.monotonic() < deadline:
            time.sleep(0.2)
        names = [" ".join(p.cmdline())[:120] for p in left]
        for proc in left:
            proc.kill()
        return out, names

    return run


def _marked_processes(marker: str) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter():
        try:
            if proc.environ().get("SCORE_TEST_MARKER") == marker:
                found.append(proc)
        except psutil.Error:  # gone meanwhile, or not ours to read
            pass
    return found
