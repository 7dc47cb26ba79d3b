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
def run_counting_leftovers(tmp_path_factory):
    """Run a command in a subprocess (with a timeout: a hang fails, not blocks) and return it with what it left
    behind: processes, and multiprocessing's pymp-* folders in its TMPDIR. Its descendants are found by an
    environment marker they inherit, since an exiting parent's children are re-parented away from it; those still
    alive a few seconds after it returned are killed and listed. `stop=(signal, text, n)`: send the command that
    signal once n of its processes' command lines contain `text` (say, once its grading pool's workers run)."""

    def run(
        command: list[str], timeout: float = 120, stop: tuple[int, str, int] | None = None, **kwargs
    ) -> tuple[subprocess.CompletedProcess, list[str]]:
        marker = uuid.uuid4().hex
        temp = tmp_path_factory.mktemp("TMPDIR")
        env = {**os.environ, "PYTHONPATH": str(REPO_ROOT / "code"), "SCORE_TEST_MARKER": marker, "TMPDIR": str(temp)}
        deadline = time.monotonic() + timeout
        # Files, not pipes: processes left behind hold the command's stdout and stderr open.
        logs = tmp_path_factory.mktemp("output")
        with (
            open(logs / "stdout", "w+") as stdout,
            open(logs / "stderr", "w+") as stderr,
            subprocess.Popen(command, stdout=stdout, stderr=stderr, text=True, env=env, **kwargs) as proc,
        ):
            try:
                if stop is not None:
                    signum, text, n = stop
                    while sum(text in " ".join(p.cmdline()) for p in _marked_processes(marker)) < n:
                        if proc.poll() is not None or time.monotonic() > deadline:
                            raise AssertionError(f"no process of {command} ran {text!r}")
                        time.sleep(0.1)
                    proc.send_signal(signum)
                proc.wait(timeout=max(1.0, deadline - time.monotonic()))
            except BaseException:
                for leftover in [proc, *_marked_processes(marker)]:  # a hang's processes would outlive the test
                    leftover.kill()
                raise
        out = subprocess.CompletedProcess(
            command, proc.returncode, (logs / "stdout").read_text(), (logs / "stderr").read_text()
        )
        deadline = time.monotonic() + 10  # a forkserver notices its parent's exit within moments
        while (left := _marked_processes(marker)) and time.monotonic() < deadline:
            time.sleep(0.2)
        names = [" ".join(p.cmdline())[:120] for p in left]
        for proc in left:
            proc.kill()
        return out, names + [str(folder) for folder in temp.glob("pymp-*")]

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
