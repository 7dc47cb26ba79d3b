"""bench/: the prepared GPU check runs end to end at CPU sizes and writes what the lead reads off a GPU run."""

import json
import os
import subprocess
import sys

from score.config import REPO_ROOT


def test_gpu_check_small_writes_the_numbers_and_a_summary(tmp_path):
    env = {**os.environ, "GPU_CHECK_SMALL": "1", "OUT": str(tmp_path), "PYTHON": sys.executable}
    done = subprocess.run(
        ["bash", str(REPO_ROOT / "bench" / "gpu_check.sh")], env=env, capture_output=True, text=True, timeout=900
    )
    assert done.returncode == 0, done.stdout + done.stderr
    train = json.loads((tmp_path / "train.json").read_text())
    assert set(train["seconds"]) >= {"generate", "reference", "backward", "optimizer", "total"}
    assert train["update_vs_bare"] > 0 and train["peak_memory_bytes"] > 0
    assert train["step0_kl"]["kl_t1"] == 0 and train["step0_kl"]["kl_t2"] == 0  # reference = policy before updates
    rollout = json.loads((tmp_path / "rollout_hf.json").read_text())
    assert rollout["results"]["hf"]["tokens_per_second"] > 0
    summary = (tmp_path / "summary.txt").read_text()
    assert "update_vs_bare" in summary and "peak memory" in summary and "step-0 KL" in summary
    assert summary in done.stdout
