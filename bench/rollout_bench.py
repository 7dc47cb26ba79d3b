"""Rollout engines side by side on the same prompts, one run: the HF engine eager, with its static KV cache, and
with its compiled decode step (engines/hf.py), and the vLLM engine where it is installed.

    python bench/rollout_bench.py                                     # CPU: a random ~47M-parameter Qwen2
    python bench/rollout_bench.py --model qwen2.5-1.5b --problems 32 --samples 2 --max-new-tokens 512   # a GPU
    .venv-vllm/bin/python bench/rollout_bench.py --engines hf,vllm    # with vLLM

Each engine samples two-attempt conversations (temperature 1, `--samples` per problem) of the sample problems
through rollout.generate_rollouts, as training does, `--batch-size` conversations per engine call: one warm-up
batch (it compiles the decode step of hf-compiled: seconds_first_batch), then `--batches` measured batches.
Reports sampled tokens per second, seconds per two-attempt batch, and, for every HF variant, its greedy
conversations' agreement with the eager engine's (greedy_agreement: the share of attempt tokens before the first
difference; kernels that round differently flip near ties, and a random model's logits are full of them). For
vLLM, the time of one weight sync (the policy's full state into the engine and the prefix cache reset, as after
every optimizer step). The models are random: they rarely emit a stop token, so attempts run to
--max-new-tokens (all engines sample the same lengths).
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
from score.engines import vllm_available  # noqa: E402
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


ENGINES = ("hf", "hf-static", "hf-compiled", "vllm")


def conversations(engine, tokenizer, problems, cfg: RolloutConfig, args, greedy: bool = False):
    """One two-attempt batch of every problem's samples (greedy: all alike, in the same shapes as sampling)."""
    batch_size = args.batch_size or len(problems) * args.samples
    run = dict(attempts=2, samples_per_prompt=args.samples, greedy=greedy, reward_fn=zeros, batch_size=batch_size)
    return generate_rollouts(engine, tokenizer, problems, cfg, PromptConfig(), **run)


def synchronize() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def time_batches(engine, tokenizer, problems, cfg: RolloutConfig, args) -> dict:
    """Seconds of the first (warm-up) batch, then seconds and sampled tokens of each measured two-attempt batch."""
    began = time.perf_counter()
    conversations(engine, tokenizer, problems, cfg, args)
    synchronize()
    first = time.perf_counter() - began
    seconds, tokens = [], []
    for _ in range(args.batches):
        began = time.perf_counter()
        rollout = conversations(engine, tokenizer, problems, cfg, args)
        synchronize()
        seconds.append(time.perf_counter() - began)
        tokens.append(int(rollout.lengths.sum()))
    return {
        "seconds_first_batch": first,
        "seconds_per_batch": sum(seconds) / len(seconds),
        "sampled_tokens_per_batch": sum(tokens) / len(tokens),
        "tokens_per_second": sum(tokens) / sum(seconds),
    }


def greedy_agreement(engine, reference, tokenizer, problems, cfg: RolloutConfig, args) -> float:
    """Mean share of each conversation's attempt tokens before its first token that differs from `reference` (the
    eager engine's greedy rollout); 1 when identical. One flipped near-tie changes all the tokens after it."""
    ids, expected = conversations(engine, tokenizer, problems, cfg, args, greedy=True).input_ids, reference.input_ids
    width = max(ids.shape[1], expected.shape[1])
    ids, expected = (torch.nn.functional.pad(x, (0, width - x.shape[1]), value=-1) for x in (ids, expected))
    differs = ids != expected
    first = torch.where(differs.any(dim=1), differs.int().argmax(dim=1), width)
    attempts = torch.nn.functional.pad(reference.attempt_mask > 0, (0, width - reference.attempt_mask.shape[1]))
    before = attempts & (torch.arange(width) < first[:, None])
    return (before.sum(dim=1) / attempts.sum(dim=1)).mean().item()


def hf_engine(name: str, policy) -> HFEngine:
    return HFEngine(policy, compile=name == "hf-compiled", static_cache=name != "hf")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=["cpu-50m", "qwen2.5-1.5b"], default="cpu-50m")
    parser.add_argument("--layers", type=int, help="qwen2.5-1.5b only: fewer layers (default 28)")
    parser.add_argument("--engines", help=f"comma-separated, of {', '.join(ENGINES)} (default: all available)")
    parser.add_argument("--problems", type=int, default=8, help="problems per batch")
    parser.add_argument("--samples", type=int, default=2, help="samples per problem")
    parser.add_argument("--batch-size", type=int, help="conversations per engine call (default: problems x samples)")
    parser.add_argument("--max-new-tokens", type=int, default=64, help="per attempt")
    parser.add_argument("--batches", type=int, default=2, help="measured batches per engine")
    parser.add_argument("--syncs", type=int, default=3, help="measured weight syncs (vllm)")
    parser.add_argument("--gpu-memory-utilization", type=float, default=0.5, help="vLLM's share of the GPU")
    parser.add_argument("--json", type=Path, help="also write the numbers here")
    args = parser.parse_args()
    from transformers import AutoModelForCausalLM, AutoTokenizer

    names = args.engines.split(",") if args.engines else [n for n in ENGINES if n != "vllm" or vllm_available()]
    if unknown := set(names) - set(ENGINES):
        parser.error(f"unknown engines {', '.join(sorted(unknown))}; expected some of {', '.join(ENGINES)}")
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
    results = {}
    with tempfile.TemporaryDirectory(prefix="score-rollout-bench-") as tmp:
        folder = Path(tmp) / "model"
        if qwen:
            build_qwen_shape(folder, args.layers or QWEN25_15B["num_hidden_layers"], device)
        else:
            build_cpu_model(folder)
        tokenizer = AutoTokenizer.from_pretrained(folder)
        policy = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype).to(device).eval()
        if {"hf-static", "hf-compiled"} & set(names):  # the eager greedy tokens the other hf variants must give
            eager_greedy = conversations(HFEngine(policy), tokenizer, problems, cfg, args, greedy=True)
        for name in (n for n in names if n != "vllm"):
            engine = hf_engine(name, policy)
            results[name] = time_batches(engine, tokenizer, problems, cfg, args)
            results[name]["greedy_agreement"] = (
                1.0 if name == "hf" else greedy_agreement(engine, eager_greedy, tokenizer, problems, cfg, args)
            )
        if "vllm" in names:
            from score.engines.vllm import VLLMEngine

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
        "torch": torch.__version__,
        "conversations": len(problems) * args.samples,
        "batch_size": args.batch_size or len(problems) * args.samples,
        "max_new_tokens": args.max_new_tokens,
        "batches": args.batches,
        "load_before": load_before,
        "load_after": " ".join(f"{x:.2f}" for x in os.getloadavg()),
    }
    base = names[0]
    ratios = {name: r["tokens_per_second"] / results[base]["tokens_per_second"] for name, r in results.items()}
    print(json.dumps(settings))
    print(f"| engine | sampled tokens/s | vs {base} | s per two-attempt batch | first batch s | tokens per batch |"
          " greedy agreement |\n|---|---|---|---|---|---|---|")  # fmt: skip
    for name, r in results.items():
        same = f"{r['greedy_agreement']:.1%}" if "greedy_agreement" in r else "-"
        print(f"| {name} | {r['tokens_per_second']:.1f} | {ratios[name]:.2f}x | {r['seconds_per_batch']:.2f} | "
              f"{r['seconds_first_batch']:.1f} | {r['sampled_tokens_per_batch']:.0f} | {same} |")  # fmt: skip
    if "vllm" in results:
        print(f"vllm weight sync: {results['vllm']['seconds_weight_sync']:.3f} s "
              f"(engine start {results['vllm']['seconds_startup']:.1f} s)")  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps({"settings": settings, "results": results, f"vs_{base}": ratios}, indent=2))


if __name__ == "__main__":
    main()
