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


def test_memory_estimate_counts_the_parameters_of_the_real_shapes():
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    sys.path.insert(0, str(REPO_ROOT / "bench"))
    import train_bench

    for shape in (train_bench.QWEN25_15B, train_bench.QWEN25_7B):
        with torch.device("meta"):
            model = Qwen2ForCausalLM(Qwen2Config(**shape))
        layer = sum(p.numel() for p in model.model.layers[0].parameters())
        assert train_bench.parameter_counts(shape) == (sum(p.numel() for p in model.parameters()), layer)
    sharded = train_bench.estimate_memory(train_bench.QWEN25_7B, 8, 4096, on_gpu=True, reference_bytes=2)
    alone = train_bench.estimate_memory(train_bench.QWEN25_7B, 1, 4096, on_gpu=True, reference_bytes=2)
    assert sharded["optimizer"] * 8 == alone["optimizer"] and sharded["engine"] == alone["engine"]
