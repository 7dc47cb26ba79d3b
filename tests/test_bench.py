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


def test_lora_memory_estimate_by_hand():
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import Qwen2Config, Qwen2ForCausalLM

    sys.path.insert(0, str(REPO_ROOT / "bench"))
    import train_bench

    # Qwen2.5-7B, rank 16 on q, k, v, o (3584 -> 3584, 512, 512, 3584), gate, up (3584 -> 18944), down (18944 -> 3584)
    per_layer = 16 * ((3584 + 3584) + 2 * (3584 + 512) + (3584 + 3584) + 2 * (3584 + 18944) + (18944 + 3584))
    assert per_layer == 1_441_792 and train_bench.lora_parameters(train_bench.QWEN25_7B, 16) == 28 * per_layer
    with torch.device("meta"):  # peft's own count on the real shape
        model = Qwen2ForCausalLM(Qwen2Config(**train_bench.QWEN25_7B))
        targets = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
        trainable, _ = get_peft_model(model, LoraConfig(r=16, target_modules=targets)).get_nb_trainable_parameters()
    assert trainable == 28 * per_layer
    params, _ = train_bench.parameter_counts(train_bench.QWEN25_7B)
    full = train_bench.estimate_memory(train_bench.QWEN25_7B, 1, 4096, on_gpu=True, reference_bytes=4)
    lora = train_bench.estimate_memory(train_bench.QWEN25_7B, 1, 4096, on_gpu=True, reference_bytes=4, lora_rank=16)
    adapters = 28 * per_layer
    assert lora["weights"] == 4 * params + 4 * adapters  # fp32 frozen base and fp32 adapters
    assert lora["gradients"] == 4 * adapters and lora["optimizer"] == 8 * adapters  # AdamW's two states
    assert lora["reference"] == 0  # the base with its adapters off
    assert lora["engine"] == full["engine"] == 2 * params and lora["activations"] == full["activations"]
    assert lora["total"] == 4 * params + 12 * adapters + 2 * params + full["activations"]
    assert lora["total"] < 80e9 < full["total"]  # one 80 GB GPU holds the LoRA update, not the full one


# One training update (reference log-probs, policy forward and backward, AdamW) of a small random Qwen2, measured in a
# fresh process: the peak resident memory after the first step (AdamW's states exist) over the memory before the
# models. glibc serves allocations >= 64 KiB by mmap (MALLOC_MMAP_THRESHOLD_ fixes the threshold) and returns them
# on free, so the resident peak is the peak of the live tensors, not of the allocator's cache.
MEASURE = """
import json, sys
import torch
from transformers import Qwen2Config, Qwen2ForCausalLM
from score import objectives
import train_bench

shape, rows, length = json.loads(sys.argv[1])
torch.set_num_threads(1)
torch.manual_seed(0)
ids = torch.randint(1000, (rows, length))
mask = torch.ones(rows, length, dtype=torch.long)
mask[:, : length // 4] = 0
before = int(next(l.split()[1] for l in open("/proc/self/status") if l.startswith("VmRSS:"))) * 1024
policy = Qwen2ForCausalLM(Qwen2Config(**shape)).train()
reference = Qwen2ForCausalLM(Qwen2Config(**shape)).eval().requires_grad_(False)
optimizer = torch.optim.AdamW(policy.parameters())
for step in range(2):
    if step:
        train_bench.reset_resident_peak()
    with torch.no_grad():
        ref_logp = objectives.token_logprobs(reference(input_ids=ids).logits, ids)
    logp = objectives.token_logprobs(policy(input_ids=ids).logits, ids)
    loss, _ = objectives.score_loss(logp, ref_logp, mask, torch.ones(rows, 1), (0.1,), "k3", float(mask.sum()))
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
print(train_bench.resident_peak_bytes() - before)
"""


def test_memory_estimate_matches_measured_cpu_peaks_within_15_percent():
    sys.path.insert(0, str(REPO_ROOT / "bench"))
    import train_bench

    env = {
        **os.environ,
        "MALLOC_MMAP_THRESHOLD_": "65536",
        "PYTHONPATH": os.pathsep.join([str(REPO_ROOT / "code"), str(REPO_ROOT / "bench")]),
    }
    for vocab, hidden, layers, rows, length in ((32000, 256, 2, 2, 128), (8000, 512, 4, 2, 512)):
        shape = dict(
            train_bench.QWEN25_15B, vocab_size=vocab, hidden_size=hidden, intermediate_size=3 * hidden,
            num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
        )  # fmt: skip
        args = json.dumps([shape, rows, length])
        done = subprocess.run([sys.executable, "-c", MEASURE, args], env=env, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        measured = int(done.stdout.split()[-1])
        estimate = train_bench.estimate_memory(shape, 1, rows * length, on_gpu=False, reference_bytes=4)["total"]
        assert abs(estimate - measured) <= 0.15 * measured, (shape, estimate, measured)


def test_testbed_sweep_reads_the_last_heldout_evaluation_and_counts_positive_deltas(tmp_path):
    sys.path.insert(0, str(REPO_ROOT / "bench"))
    import testbed_sweep

    held = {"accuracy_t1": 0.5, "accuracy_t2": 0.25, "delta": -0.25, "delta_i_to_c": 0.0, "delta_c_to_i": 0.25}
    held["p_t2_right_given_t1_wrong"] = 0.25
    records = [{"step": 0, **{f"heldout_{k}": v for k, v in held.items()}}, {"step": 1, "loss": 0.1}]
    records.append({"step": 1, **{f"heldout_{k}": 2 * v for k, v in held.items()}})
    (tmp_path / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in records))
    evaluations = testbed_sweep.heldout_evaluations(tmp_path / "metrics.jsonl")
    last = {k: evaluations[-1][k] for k in held}
    assert [e["step"] for e in evaluations] == [0, 1] and last == {k: 2 * v for k, v in held.items()}
    assert testbed_sweep.curve_line(evaluations) == "0: 50/25 25 25; 1: 100/50 50 50"
    table = testbed_sweep.sweep_table({"p": [held, last, {**held, "delta": 0.5}]})
    assert table.splitlines()[-1] == "| p | 66.7 | 33.3 | -8.3 | 0.0 | 33.3 | 1/3 |"


def test_testbed_sweep_trains_on_training_problems_only_and_reuses_finished_runs(tmp_path, monkeypatch, capsys):
    """A point's runs hold out training problems for validation; the test problems are never read."""
    from score import testbed
    from score.config import load_config

    sys.path.insert(0, str(REPO_ROOT / "bench"))
    import testbed_sweep

    paths = [
        f"model.base_dir={tmp_path / 'base_models'}",
        f"data.source={tmp_path / 'train.jsonl'}",
        f"eval.source={tmp_path / 'test.jsonl'}",
        f"train.output_dir={tmp_path / 'runs'}",
    ]
    cfg = load_config(REPO_ROOT / "configs" / "testbed.yaml", paths)
    testbed.build_testbed(cfg, train_problems=30, test_problems=8, steps=3, problems=40, log_every=0)
    (tmp_path / "test.jsonl").unlink()
    tiny = ["train.stage1_steps=1", "train.stage2_steps=1", "train.batch_size=4", "train.micro_batch_size=8"]
    tiny += ["train.eval_problems=6", "rollout.max_new_tokens=12", "eval.max_new_tokens=12"]
    argv = ["testbed_sweep.py", "--seeds", "0", "1", "--eval-every", "1", "--point", "tiny", *paths, *tiny]
    monkeypatch.setattr(sys, "argv", argv)
    testbed_sweep.main()
    trained = capsys.readouterr().out
    for seed in (0, 1):
        lines = (tmp_path / "runs" / "testbed-sweep" / f"tiny_seed{seed}" / "metrics.jsonl").read_text()
        held = [json.loads(line) for line in lines.splitlines() if "heldout_n" in line]
        assert [(r["step"], r["heldout_n"]) for r in held] == [(0, 6), (1, 6), (2, 6)]
    table = trained.splitlines()[-3:]
    assert table[0].startswith("| Point | t1 | t2 |") and table[2].startswith("| tiny |")
    unfinished = tmp_path / "runs" / "testbed-sweep" / "tiny_seed2"
    unfinished.mkdir()  # a run another process is still training: its last evaluation is not its result
    (unfinished / "metrics.jsonl").write_text(
        json.dumps({"step": 0, **{f"heldout_{k}": 0.0 for k in testbed_sweep.COLUMNS}})
    )
    monkeypatch.setattr(sys, "argv", [*argv[:4], "2", *argv[4:], "--table-only"])
    testbed_sweep.main()
    assert capsys.readouterr().out.splitlines() == table
    monkeypatch.setattr(sys, "argv", [*argv, "--table-only", "--curves"])
    testbed_sweep.main()
    curves = capsys.readouterr().out.splitlines()[:2]
    assert [line.split(" (step:")[0] for line in curves] == ["tiny seed 0", "tiny seed 1"]
    assert all(line.count(";") == 2 for line in curves)  # steps 0, 1 and 2


def test_an_estimate_for_no_gpus_is_one_error_line():
    for gpus in ("0", "-3"):
        done = subprocess.run(
            [sys.executable, str(REPO_ROOT / "bench" / "train_bench.py"), "--estimate", "7b", "--gpus", gpus],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert done.returncode == 2 and "Traceback" not in done.stderr and "GiB" not in done.stdout, done.stderr
        assert (
            done.stderr.strip()
            .splitlines()[-1]
            .endswith("--gpus and --tokens must be at least 1, --lora-rank at least 0")
        )
