"""Rollout engines side by side: the HF engine (padded generate) and the vLLM engine on the same prompts, one run.

    .venv-vllm/bin/python bench/rollout_bench.py                      # CPU: a random ~47M-parameter Qwen2
    python bench/rollout_bench.py --model qwen2.5-1.5b --problems 64 --max-new-tokens 1024   # a GPU

Each engine samples two-attempt conversations (temperature 1, `--samples` per problem) of the sample problems
through rollout.generate_rollouts, as training does: one warm-up batch, then `--batches` measured batches. Reports
sampled tokens per second, seconds per two-attempt batch and the time of one weight sync (the policy's full
state into the vLLM engine and the prefix cache reset, as after every optimizer step). The models are random:
they rarely emit a stop token, so attempts run to --max-new-tokens (both engines sample the same lengths).
cpu-50m: hidden 512, 10 layers, 8 heads of 64, 2 KV heads, MLP 1536, vocabulary 32768, tied, fp32.
qwen2.5-1.5b: Qwen2.5-1.5B's shape (bench/train_bench.py), bf16 on a GPU (`--layers` for fewer layers).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "code"))

from score import tiny  # noqa: E402
from score.config import PromptConfig, RolloutConfig  # noqa: E402
from score.data import Problem  # noqa: E402
from score.engines.hf import HFEngine  # noqa: E402
from score.rollout import generate_rollouts  # noqa: E402
from train_bench import QWEN25_15B, build_qwen_shape, count_parameters  # noqa: E402

CPU_50M = dict(
    hidden_size=512, intermediate_size=1536, num_hidden_layers=10, num_attention_heads=8, num_key_value_heads=2
)


def build_cpu_model(out_dir: Path) -> Path:
    from transformers import GenerationConfig, Qwen2Config, Qwen2ForCausalLM

    tokenizer = tiny.build_tokenizer()
    eos, pad = tokenizer.convert_tokens_to_ids([tiny.IM_END, tiny.ENDOFTEXT])
    config = Qwen2Config(**CPU_50M, vocab_size=32768, tie_word_embeddings=True, eos_token_id=eos, pad_token_id=pad)
    torch.manual_seed(0)
    model = Qwen2ForCausalLM(config)
    model.generation_config = GenerationConfig(eos_token_id=eos, pad_token_id=pad)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return out_dir


def zeros(texts: list[str], problems: list[Problem]) -> list[float]:
    return [0.0] * len(texts)


def time_batches(engine, tokenizer, problems, cfg: RolloutConfig, args) -> dict:
    """Seconds and sampled tokens of each measured two-attempt batch, after one warm-up batch."""
    prompts = PromptConfig()
    run = dict(attempts=2, samples_per_prompt=args.samples, reward_fn=zeros, batch_size=len(problems) * args.samples)
    generate_rollouts(engine, tokenizer, problems, cfg, prompts, **run)
    seconds, tokens = [], []
    for _ in range(args.batches):
        began = time.perf_counter()
        rollout = generate_rollouts(engine, tokenizer, problems, cfg, prompts, **run)
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        seconds.append(time.perf_counter() - began)
        tokens.append(int(rollout.lengths.sum()))
    return {
        "seconds_per_batch": sum(seconds) / len(seconds),
        "sampled_tokens_per_batch": sum(tokens) / len(tokens),
        "tokens_per_second": sum(tokens) / sum(seconds),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=["cpu-50m", "qwen2.5-1.5b"], default="cpu-50m")
    parser.add_argument("--layers", type=int, help="qwen2.5-1.5b only: fewer layers (default 28)")
    parser.add_argument("--problems", type=int, default=8, help="problems per batch")
    parser.add_argument("--samples", type=int, default=2, help="samples per problem")
    parser.add_argument("--max-new-tokens", type=int, default=64, help="per attempt")
    parser.add_argument("--batches", type=int, default=2, help="measured batches per engine")
    parser.add_argument("--syncs", type=int, default=3, help="measured weight syncs")
    parser.add_argument("--gpu-memory-utilization", type=float, default=0.5, help="vLLM's share of the GPU")
    parser.add_argument("--json", type=Path, help="also write the numbers here")
    args = parser.parse_args()
    from score.engines.vllm import VLLMEngine
    from transformers import AutoModelForCausalLM, AutoTokenizer

    on_gpu = torch.cuda.is_available()
    device = torch.device("cuda" if on_gpu else "cpu")
    dtype = torch.bfloat16 if on_gpu else torch.float32
    qwen = args.model == "qwen2.5-1.5b"
    cfg = RolloutConfig(
        max_new_tokens=args.max_new_tokens,
        temperature=1.0,
        vllm_max_model_len=4096,
        vllm_gpu_memory_utilization=args.gpu_memory_utilization,
    )
    rows = tiny.sample_problems()  # cycled when --problems asks for more (repeats share their prompt's cache)
    problems = [Problem(r["unique_id"], r["problem"], r["solution"], r["answer"], r["subject"], r["level"]) for r in
                (rows[i % len(rows)] for i in range(args.problems))]  # fmt: skip
    load_before = " ".join(f"{x:.2f}" for x in os.getloadavg())
    with tempfile.TemporaryDirectory(prefix="score-rollout-bench-") as tmp:
        folder = Path(tmp) / "model"
        if qwen:
            build_qwen_shape(folder, args.layers or QWEN25_15B["num_hidden_layers"], device)
        else:
            build_cpu_model(folder)
        tokenizer = AutoTokenizer.from_pretrained(folder)
        policy = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype).to(device).eval()
        results = {"hf": time_batches(HFEngine(policy), tokenizer, problems, cfg, args)}
        began = time.perf_counter()
        engine = VLLMEngine(folder, cfg, seed=0, dtype=dtype)
        startup = time.perf_counter() - began
        results["vllm"] = time_batches(engine, tokenizer, problems, cfg, args)
        syncs = []
        for _ in range(args.syncs):
            began = time.perf_counter()
            engine.load_weights(policy.state_dict())
            syncs.append(time.perf_counter() - began)
        results["vllm"].update(seconds_weight_sync=sum(syncs) / len(syncs), seconds_startup=startup)
        engine.close()
        parameters = count_parameters(folder)

    settings = {
        "model": args.model,
        "parameters": parameters,
        "device": torch.cuda.get_device_name() if on_gpu else f"cpu ({torch.get_num_threads()} threads)",
        "dtype": str(dtype).removeprefix("torch."),
        "conversations": len(problems) * args.samples,
        "max_new_tokens": args.max_new_tokens,
        "batches": args.batches,
        "load_before": load_before,
        "load_after": " ".join(f"{x:.2f}" for x in os.getloadavg()),
    }
    ratio = results["vllm"]["tokens_per_second"] / results["hf"]["tokens_per_second"]
    print(json.dumps(settings))
    print("| engine | sampled tokens/s | s per two-attempt batch | tokens per batch |\n|---|---|---|---|")
    for name, r in results.items():
        tps, seconds, tokens = r["tokens_per_second"], r["seconds_per_batch"], r["sampled_tokens_per_batch"]
        print(f"| {name} | {tps:.1f} | {seconds:.2f} | {tokens:.0f} |")
    print(f"vllm / hf sampled tokens per second: {ratio:.2f}x")
    print(f"vllm weight sync: {results['vllm']['seconds_weight_sync']:.3f} s (engine start {startup:.1f} s)")
    if args.json:
        args.json.write_text(json.dumps({"settings": settings, "results": results, "ratio": ratio}, indent=2))


if __name__ == "__main__":
    main()
