"""Time split of one SCoRe optimizer step, measured inside the real training loop.

    .venv/bin/python bench/train_bench.py --model tiny [--prompts short] [--json out.json]
    .venv/bin/python bench/train_bench.py --model qwen2.5-1.5b --batch-size 8 --max-new-tokens 1024   # on a GPU
    .venv/bin/python bench/train_bench.py --model qwen2.5-1.5b --layers 2 --batch-size 2 --max-new-tokens 16  # CPU
    .venv/bin/python bench/train_bench.py --estimate 7b --gpus 8      # memory per process, nothing run
    .venv/bin/python bench/train_bench.py --estimate 7b --gpus 1 --lora-rank 16   # and LoRA's next to it

tiny: the tiny model with configs/tiny.yaml. qwen2.5-1.5b: a random model of Qwen2.5-1.5B's shape with the paper's
settings (configs/default.yaml): on a GPU fp32 master weights under bf16 autocast and a bf16 reference, as the trainer
runs it (`--set model.dtype=bfloat16` for pure bf16, `--set model.gradient_checkpointing=true`, and so on).

Builds a random model and the sample problems in a temporary folder, runs score.trainer.train for warm-up +
measured steps and reports the mean of the measured steps. The loop is observed, not changed:
  - the trainer's own timers (seconds_generate / _score / _reference / _backward in metrics.jsonl) read a clock
    that first waits for queued CUDA work, so asynchronous kernels are charged to the part that launched them;
  - global optimizer hooks time AdamW's step; the metrics logger marks the end of each step (wall time, memory);
  - generate_rollouts is wrapped to count the generated and trained tokens;
  - checkpoint and model saving are skipped: not part of a step (a 1.5B run would write about 30 GB).
The models are random: they rarely emit a stop token, so attempts run to max_new_tokens (the worst case for
generation), and the answer checker finds no final answers, so scoring here is a lower bound (see
bench/grader_bench.py for the checker on real solutions).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from contextlib import ExitStack
from pathlib import Path
from unittest import mock

import torch
from safetensors import safe_open
from torch.optim.optimizer import register_optimizer_step_post_hook, register_optimizer_step_pre_hook

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "code"))

from score import logs, models, tiny, trainer  # noqa: E402
from score import rollout as rollout_module  # noqa: E402
from score.config import REPO_ROOT, Config, ScoreError, load_config  # noqa: E402

# Qwen2.5-1.5B(-Instruct) config.json: the shape the paper's runs train.
QWEN25_15B = dict(
    vocab_size=151936,
    hidden_size=1536,
    intermediate_size=8960,
    num_hidden_layers=28,
    num_attention_heads=12,
    num_key_value_heads=2,
    max_position_embeddings=32768,
    rope_theta=1000000.0,
    rms_norm_eps=1e-6,
    tie_word_embeddings=True,
)
# Qwen2.5-7B(-Instruct) config.json, for --estimate 7b.
QWEN25_7B = dict(
    QWEN25_15B,
    vocab_size=152064,
    hidden_size=3584,
    intermediate_size=18944,
    num_attention_heads=28,
    num_key_value_heads=4,
    tie_word_embeddings=False,
)
SHORT_PROMPTS = ("Solve the problem.", "Check the solution and correct it.")
PARTS = [
    ("generate", "generation"),
    ("score", "scoring (answer checker)"),
    ("reference", "reference forward"),
    ("backward", "policy forward+backward"),
    ("optimizer", "optimizer (AdamW step)"),
    ("other", "other (clip, advantages, logs)"),
]


def resident_peak_bytes() -> int:
    """Peak resident memory of this process since the last reset_resident_peak (Linux VmHWM)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def reset_resident_peak() -> None:
    Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS (Linux >= 4.0)


def count_parameters(folder: Path) -> int:
    total = 0
    for path in folder.glob("*.safetensors"):
        with safe_open(path, "pt") as f:
            for name in f.keys():
                total += torch.Size(f.get_slice(name).get_shape()).numel()
    return total


def build_qwen_shape(out_dir: Path, layers: int, device: torch.device) -> Path:
    """A random Qwen2.5-1.5B-shaped model saved in bf16, with the tiny tokenizer (no download).

    The tokenizer's ids all lie inside the model's vocabulary; sampled ids beyond the tokenizer decode to nothing,
    which only shortens the texts the answer checker sees.
    """
    from transformers import GenerationConfig, Qwen2Config, Qwen2ForCausalLM

    tokenizer = tiny.build_tokenizer()
    eos, pad = tokenizer.convert_tokens_to_ids([tiny.IM_END, tiny.ENDOFTEXT])
    config = Qwen2Config(**{**QWEN25_15B, "num_hidden_layers": layers}, eos_token_id=eos, pad_token_id=pad)
    torch.manual_seed(0)
    with torch.device(device):
        model = Qwen2ForCausalLM(config).to(torch.bfloat16)
    model.generation_config = GenerationConfig(eos_token_id=eos, pad_token_id=pad)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    del model
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return out_dir


class Probe:
    """What the bench observes in the training loop, one entry per logged step."""

    def __init__(self, micro_batching: tuple[int, int]):
        self.micro_batching = micro_batching  # train.micro_batch_size, train.micro_batch_tokens
        self.steps: list[dict] = []
        self.rollouts: list[rollout_module.Rollout] = []  # one per step, for the bare forward+backward
        self.current = {"optimizer": 0.0}
        self.started = 0.0

    def generate_rollouts(self, *args, **kwargs):
        rollout = rollout_module.generate_rollouts(*args, **kwargs)
        self.rollouts.append(rollout)
        generated = int(rollout.lengths.sum())
        tokens = int(rollout.attention_mask.sum())
        padded = sum(ids.numel() for ids, *_ in trainer.micro_batches(rollout, *self.micro_batching))
        self.current.update(
            conversations=rollout.input_ids.shape[0],
            generated=generated,
            trained=tokens,
            padded=padded,
            context=tokens - generated,
            truncated=rollout.truncated.float().mean().item(),
        )
        return rollout

    def optimizer_started(self, optimizer, args, kwargs) -> None:
        self.current["optimizer_began"] = trainer.clock()

    def optimizer_done(self, optimizer, args, kwargs) -> None:
        self.current["optimizer"] += trainer.clock() - self.current.pop("optimizer_began")

    def step_logged(self, record: dict) -> None:
        now = trainer.clock()
        previous = self.steps[-1]["ended"] if self.steps else self.started
        if torch.cuda.is_available():
            memory = torch.cuda.max_memory_allocated()
        else:
            memory = resident_peak_bytes()
        self.steps.append({**self.current, "record": record, "ended": now, "wall": now - previous, "memory": memory})
        self.current = {"optimizer": 0.0}


def bare_forward_backward(cfg: Config, rollouts: list, device: torch.device) -> dict:
    """Seconds and tokens of a bare forward+backward (Transformers' own next-token loss) of a fresh copy of the
    policy, in the trainer's dtype and autocast, over the micro-batch shapes the trainer ran on these rollouts.

    Every position of a bare batch is a real token (random ids, no padding), so padding and the objective's extra
    work count against the trainer. The first micro-batch runs once untimed (warm-up).
    """
    from accelerate import Accelerator

    on_gpu = device.type == "cuda"
    dtype, _, mixed_precision = models.weight_dtypes(cfg.model, on_gpu)
    accelerator = Accelerator(mixed_precision=mixed_precision, cpu=not on_gpu)
    model = models.load_model(Path(cfg.model.name), cfg.model, dtype).to(device)
    if cfg.model.gradient_checkpointing:
        model.gradient_checkpointing_enable()
    models.disable_dropout(model)
    model.train()
    vocab = model.config.vocab_size
    generator = torch.Generator().manual_seed(0)
    batching = cfg.train.micro_batch_size, cfg.train.micro_batch_tokens
    shapes = [ids.shape for rollout in rollouts for ids, *_ in trainer.micro_batches(rollout, *batching)]

    def forward_backward(shape: torch.Size) -> None:
        ids = torch.randint(vocab, shape, generator=generator).to(device)
        with accelerator.autocast():
            model(input_ids=ids, labels=ids).loss.backward()

    forward_backward(shapes[0])
    began = trainer.clock()
    for shape in shapes:
        forward_backward(shape)
    seconds = trainer.clock() - began
    return {"seconds": seconds, "tokens": sum(shape.numel() for shape in shapes)}


def observed_train(cfg: Config, probe: Probe) -> None:
    """score.trainer.train with the probe attached (see the module docstring); nothing saved."""

    class MarkingLogger(logs.MetricsLogger):
        def log(self, record: dict) -> None:
            probe.step_logged(record)
            super().log(record)

    with ExitStack() as stack:
        stack.enter_context(mock.patch.object(trainer, "MetricsLogger", MarkingLogger))
        stack.enter_context(mock.patch.object(trainer, "generate_rollouts", probe.generate_rollouts))
        stack.enter_context(mock.patch.object(trainer, "save_checkpoint", lambda *a, **k: None))
        stack.enter_context(mock.patch.object(trainer, "save_model", lambda *a, **k: None))
        for register, hook in (
            (register_optimizer_step_pre_hook, probe.optimizer_started),
            (register_optimizer_step_post_hook, probe.optimizer_done),
        ):
            stack.callback(register(hook).remove)
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
        else:
            reset_resident_peak()
        probe.started = trainer.clock()
        trainer.train(cfg)


def summarize(steps: list[dict], warmup: int, bare: dict) -> dict:
    """Means over the measured steps; token rates are ratios of sums; `bare` from bare_forward_backward."""
    measured = steps[warmup:]
    if any("seconds_generate" not in s["record"] for s in measured):
        raise ScoreError("a measured step was skipped for a non-finite loss; the timings would mix step kinds")
    n = len(measured)
    seconds = {}
    for key, _ in PARTS[:4]:
        seconds[key] = sum(s["record"][f"seconds_{key}"] for s in measured) / n
    seconds["optimizer"] = sum(s["optimizer"] for s in measured) / n
    seconds["total"] = sum(s["wall"] for s in measured) / n
    seconds["other"] = seconds["total"] - sum(seconds[key] for key, _ in PARTS[:5])
    tokens = {key: sum(s[key] for s in measured) / n for key in ("generated", "trained", "padded", "context")}
    trained_rate = tokens["trained"] / seconds["backward"]
    bare_rate = bare["tokens"] / bare["seconds"]
    conversations = measured[0]["conversations"]
    return {
        "seconds": seconds,
        "tokens_per_step": tokens,
        "tokens_per_conversation": {
            "context": tokens["context"] / conversations,
            **{f"attempt_{k}": sum(s["record"][f"length_t{k}"] for s in measured) / n for k in (1, 2)},
        },
        "truncated": sum(s["truncated"] for s in measured) / n,
        "tokens_per_second": {
            "generated": tokens["generated"] / seconds["generate"],
            "trained": trained_rate,
            "bare_forward_backward": bare_rate,
            "reference": tokens["trained"] / seconds["reference"],
            "step": tokens["trained"] / seconds["total"],
        },
        "update_vs_bare": trained_rate / bare_rate,
        "step0_kl": {k: v for k, v in steps[0]["record"].items() if k.startswith("kl_")},  # 0 before any update
        "peak_memory_bytes": max(s["memory"] for s in steps),
        "per_step": [
            {
                "warmup": i < warmup,
                "wall": s["wall"],
                "optimizer": s["optimizer"],
                **{k: v for k, v in s["record"].items() if k.startswith("seconds_")},
            }
            for i, s in enumerate(steps)
        ],
    }


def print_report(settings: dict, result: dict) -> None:
    s, t, rate = result["seconds"], result["tokens_per_step"], result["tokens_per_second"]
    per_conv = result["tokens_per_conversation"]
    print(
        f"\nSCoRe step, {settings['model']} ({settings['parameters'] / 1e6:.1f}M parameters, "
        f"{settings['layers']} layers) on {settings['device']}, policy {settings['policy_dtype']}"
        f" / reference {settings['reference_dtype']}, autocast {settings['mixed_precision']}"
    )
    print(
        f"{settings['batch_size']} problems x {settings['samples_per_prompt']} samples = "
        f"{settings['conversations']} conversations, micro-batch {settings['micro_batch_size']}, "
        f"max_new_tokens {settings['max_new_tokens']}, {settings['prompts']} prompts, stage {settings['stage']}; "
        f"mean of {settings['steps']} steps after {settings['warmup']} warm-up"
    )
    print(f"\n  {'part':32s} {'seconds':>9s} {'share':>7s}")
    for key, label in PARTS:
        print(f"  {label:32s} {s[key]:9.3f} {100 * s[key] / s['total']:6.1f}%")
    print(f"  {'step total':32s} {s['total']:9.3f}")
    print(
        f"\n  tokens per conversation: context {per_conv['context']:.0f}, attempt 1 {per_conv['attempt_1']:.1f}, "
        f"attempt 2 {per_conv['attempt_2']:.1f} (truncated {100 * result['truncated']:.0f}%)"
    )
    print(
        f"  tokens per step: generated {t['generated']:.0f}, trained {t['trained']:.0f} "
        f"(padded micro-batches {t['padded']:.0f})"
    )
    print(f"  generated tokens/s  {rate['generated']:10.1f}   (generation time)")
    print(f"  trained tokens/s    {rate['trained']:10.1f}   (policy forward+backward time)")
    print(f"  bare tokens/s       {rate['bare_forward_backward']:10.1f}   (bare forward+backward, same shapes)")
    print(f"  update / bare       {result['update_vs_bare']:10.2f}")
    print(f"  reference tokens/s  {rate['reference']:10.1f}")
    print(f"  trained tokens/s    {rate['step']:10.1f}   (whole step)")
    memory = result["peak_memory_bytes"] / 2**30
    kind = "CUDA max_memory_allocated" if settings["on_gpu"] else "peak RSS (VmHWM)"
    print(f"  peak memory         {memory:10.2f} GiB ({kind} in train(): loading and all steps)")
    print(f"  step-0 KL           {' '.join(f'{k} {v:.3g}' for k, v in result['step0_kl'].items())}")
    print(f"  load average        {settings['load_before']} before, {settings['load_after']} after")


def bench_config(args: argparse.Namespace, tmp: Path, qwen: bool) -> Config:
    """configs/tiny.yaml (tiny) or configs/default.yaml (the paper's settings), pointed at `tmp`, one stage."""
    total = args.warmup + args.steps
    overrides = [
        f"model.name={tmp / 'model'}",
        f"data.source={tmp / 'train.jsonl'}",
        f"train.output_dir={tmp / 'runs'}",
        "train.run_name=bench",
        f"train.stage1_steps={total if args.stage == 1 else 0}",
        f"train.stage2_steps={total if args.stage == 2 else 0}",
        "train.rounds=1",
        "train.save_every=0",
        "train.sample_every=0",
        f"rollout.samples_per_prompt={args.samples}",
    ]
    for key, value in (
        ("train.batch_size", args.batch_size or (8 if qwen else None)),
        ("train.micro_batch_size", args.micro_batch_size),
        ("rollout.max_new_tokens", args.max_new_tokens),
    ):
        if value is not None:
            overrides.append(f"{key}={value}")
    if args.prompts == "short":
        overrides += [f"prompts.first_turn={json.dumps(SHORT_PROMPTS[0])}"]
        overrides += [f"prompts.correction={json.dumps(SHORT_PROMPTS[1])}"]
    return load_config(REPO_ROOT / "configs" / ("default.yaml" if qwen else "tiny.yaml"), overrides + args.set)


def parameter_counts(shape: dict) -> tuple[int, int]:
    """(all parameters, parameters of one decoder layer) of a Qwen2 shape."""
    h, i, v = shape["hidden_size"], shape["intermediate_size"], shape["vocab_size"]
    kv = h // shape["num_attention_heads"] * shape["num_key_value_heads"]
    layer = (h * h + h) + 2 * (h * kv + kv) + h * h + 3 * h * i + 2 * h  # q, k, v (with biases), o, MLP, 2 norms
    embeddings = v * h * (1 if shape["tie_word_embeddings"] else 2)
    return embeddings + shape["num_hidden_layers"] * layer + h, layer


def lora_parameters(shape: dict, rank: int) -> int:
    """Adapter parameters of rank `rank` on every linear layer of the decoder layers (q, k, v, o, gate, up, down:
    model.lora_target_modules' default): rank x (inputs + outputs) each."""
    h, i = shape["hidden_size"], shape["intermediate_size"]
    kv = h // shape["num_attention_heads"] * shape["num_key_value_heads"]
    layer = rank * (2 * (h + h) + 2 * (h + kv) + 3 * (h + i))  # q and o, k and v, gate, up and down
    return shape["num_hidden_layers"] * layer


def estimate_memory(
    shape: dict, gpus: int, tokens: int, on_gpu: bool, reference_bytes: int, chunk: int = 1024, lora_rank: int = 0
) -> dict:
    """Bytes per process of a SCoRe update: fp32 master weights, gradients and AdamW's two fp32 states, sharded
    over `gpus` processes by FSDP2 when there are several (plus the two decoder layers it holds gathered at a time),
    the reference (`reference_bytes` per parameter, sharded the same way), the HF engine's bf16 copy of the
    weights under bf16 autocast on a GPU, and the activations of a micro-batch of `tokens` tokens at their peak,
    in objectives.token_logprobs' backward pass: per decoder layer about 12 hidden-size and 4 MLP-size values per
    token (norm inputs and outputs, q, k, v, attention output, gate, up, their product) in the compute dtype, the
    logits and their gradient, and its float32 [chunk, vocab] blocks (one; two when the logits are bf16 and a chunk
    is upcast first). Tied embeddings get a second gradient of the embedding's size (the input embedding's, added
    to the output layer's). total: gradients fill as activations are freed, so the larger of the two counts.

    lora_rank > 0: the frozen base keeps its fp32 weights (model.dtype auto), the fp32 adapters (lora_parameters)
    are all that get gradients and AdamW states, and the reference is the same weights with the adapters off (none
    of its own); the engine copy and the activations stay (the adapters' own rank-sized activations are left out)."""
    params, layer = parameter_counts(shape)
    compute = 2 if on_gpu else 4  # bytes of an activation: bf16 under autocast on a GPU, fp32 on a CPU
    gathered = 2 * layer if gpus > 1 else 0
    tied = shape["vocab_size"] * shape["hidden_size"] if shape["tie_word_embeddings"] else 0
    h, i, v = shape["hidden_size"], shape["intermediate_size"], shape["vocab_size"]
    per_token = shape["num_hidden_layers"] * compute * (12 * h + 4 * i) + 2 * compute * v
    adapters = lora_parameters(shape, lora_rank)
    trained = adapters if lora_rank else params + tied
    parts = {
        "weights": 4 * (params / gpus + gathered) + 4 * adapters / gpus,
        "gradients": 4 * trained / gpus,
        "optimizer": 8 * (adapters if lora_rank else params) / gpus,
        "reference": 0 if lora_rank else reference_bytes * (params / gpus + gathered),
        "engine": 2 * params if on_gpu else 0,
        "activations": tokens * per_token + (1 if compute == 4 else 2) * 4 * min(chunk, tokens) * v,
    }
    others = sum(value for key, value in parts.items() if key not in ("gradients", "activations"))
    return {**parts, "total": others + max(parts["gradients"], parts["activations"])}


def print_estimate(name: str, gpus: int, tokens: int, reference_bytes: int, lora_rank: int = 0) -> None:
    shape = {"1.5b": QWEN25_15B, "7b": QWEN25_7B}[name]
    parts = estimate_memory(shape, gpus, tokens, on_gpu=True, reference_bytes=reference_bytes)
    params, _ = parameter_counts(shape)
    print(f"Qwen2.5-{name} shape ({params / 1e9:.2f}B parameters) on {gpus} GPU(s), fp32 masters under bf16 autocast, "
          f"{'FSDP2' if gpus > 1 else 'unsharded'}, micro-batch of {tokens} tokens, reference {reference_bytes} bytes "
          "per parameter; GiB per process:")  # fmt: skip
    if not lora_rank:
        for key, value in parts.items():
            print(f"  {key:12s} {value / 2**30:8.2f}")
        return
    lora = estimate_memory(shape, gpus, tokens, on_gpu=True, reference_bytes=reference_bytes, lora_rank=lora_rank)
    print(f"  LoRA: rank {lora_rank} on q, k, v, o, gate, up, down ({lora_parameters(shape, lora_rank) / 1e6:.1f}M "
          "adapter parameters), reference = adapters off")  # fmt: skip
    print(f"  {'':12s} {'full':>8s} {'LoRA':>8s}")
    for key, value in parts.items():
        print(f"  {key:12s} {value / 2**30:8.2f} {lora[key] / 2**30:8.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=["tiny", "qwen2.5-1.5b"], default="tiny")
    parser.add_argument("--layers", type=int, help="qwen2.5-1.5b only: fewer layers for a smoke run (default 28)")
    parser.add_argument("--batch-size", type=int, help="problems per step (default: tiny.yaml 4, qwen 8)")
    parser.add_argument("--samples", type=int, default=2, help="samples per problem")
    parser.add_argument("--micro-batch-size", type=int, help="conversations per forward/backward (default 4)")
    parser.add_argument("--max-new-tokens", type=int, help="per attempt (default: tiny 32, qwen 1024)")
    parser.add_argument("--prompts", choices=["paper", "short"], default="paper", help="instruction texts")
    parser.add_argument("--stage", type=int, choices=[1, 2], default=2)
    parser.add_argument("--steps", type=int, default=3, help="measured steps")
    parser.add_argument("--warmup", type=int, default=1, help="warm-up steps (at least 1)")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE", help="config override")
    parser.add_argument("--json", type=Path, help="also write the numbers here")
    parser.add_argument("--estimate", choices=["1.5b", "7b"], help="print a memory estimate per process, run nothing")
    parser.add_argument("--gpus", type=int, default=8, help="--estimate: processes (FSDP2 when more than 1)")
    parser.add_argument("--tokens", type=int, default=4096, help="--estimate: tokens per micro-batch")
    parser.add_argument("--reference-bytes", type=int, choices=[2, 4], default=4, help="--estimate: bf16 or fp32")
    parser.add_argument("--lora-rank", type=int, default=0, help="--estimate: also a LoRA policy of this rank")
    args = parser.parse_args()
    if args.gpus < 1 or args.tokens < 1 or args.lora_rank < 0:
        parser.error("--gpus and --tokens must be at least 1, --lora-rank at least 0")
    if args.estimate:
        print_estimate(args.estimate, args.gpus, args.tokens, args.reference_bytes, args.lora_rank)
        return
    if args.layers is not None and (args.model == "tiny" or args.layers < 1):
        parser.error("--layers takes a positive count and applies to --model qwen2.5-1.5b only")
    if args.warmup < 1 or args.steps < 1:
        parser.error("--warmup and --steps must be at least 1 (the first measured step starts at a warm-up's end)")
    qwen = args.model == "qwen2.5-1.5b"
    layers = (args.layers or QWEN25_15B["num_hidden_layers"]) if qwen else 2
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    load_before = " ".join(f"{x:.2f}" for x in os.getloadavg())

    with tempfile.TemporaryDirectory(prefix="score-bench-") as tmp:
        tmp = Path(tmp)
        cfg = bench_config(args, tmp, qwen)  # before building a model: a bad --set fails fast
        if qwen:
            build_qwen_shape(Path(cfg.model.name), layers, device)
        else:
            tiny.build_tiny_model(cfg.model.name)
        tiny.write_sample_jsonl(cfg.data.source)
        probe = Probe((cfg.train.micro_batch_size, cfg.train.micro_batch_tokens))
        observed_train(cfg, probe)
        bare = bare_forward_backward(cfg, probe.rollouts[args.warmup :], device)
        parameters = count_parameters(Path(cfg.model.name))
    policy_dtype, reference_dtype, mixed_precision = models.weight_dtypes(cfg.model, device.type == "cuda")

    settings = {
        "model": args.model,
        "parameters": parameters,
        "layers": layers,
        "on_gpu": device.type == "cuda",
        "device": torch.cuda.get_device_name() if device.type == "cuda" else f"cpu ({torch.get_num_threads()} threads)",
        "policy_dtype": str(policy_dtype).removeprefix("torch."),
        "reference_dtype": str(reference_dtype).removeprefix("torch."),
        "mixed_precision": mixed_precision,
        "batch_size": cfg.train.batch_size,
        "samples_per_prompt": cfg.rollout.samples_per_prompt,
        "conversations": cfg.train.batch_size * cfg.rollout.samples_per_prompt,
        "micro_batch_size": cfg.train.micro_batch_size,
        "generation_batch_size": cfg.rollout.generation_batch_size,
        "max_new_tokens": cfg.rollout.max_new_tokens,
        "prompts": args.prompts,
        "stage": args.stage,
        "steps": args.steps,
        "warmup": args.warmup,
        "overrides": args.set,
        "load_before": load_before,
        "load_after": " ".join(f"{x:.2f}" for x in os.getloadavg()),
    }
    result = summarize(probe.steps, args.warmup, bare)
    print_report(settings, result)
    if args.json:
        args.json.write_text(json.dumps({"settings": settings, **result}, indent=2) + "\n")
        print(f"\nwrote {args.json}")


if __name__ == "__main__":
    try:
        main()
    except ScoreError as e:
        sys.exit(f"error: {e}")
