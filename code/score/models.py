"""Model loading and weight dtypes (shared by training, evaluation and benchmarks); LoRA policies (peft): adapters,
the adapters-off reference and merged weights; FSDP2 sharding of the policy, its gradient synchronisation,
generation from full parameters and the gathered full state dict."""

from __future__ import annotations

import json
import os
from contextlib import contextmanager
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import DistributedType, parse_flag_from_env
from torch import Tensor
from transformers import AutoModelForCausalLM

from score.config import ModelConfig, ScoreError, first_line, resolve_path


def resolve_model_path(name: str, base_dir: str) -> Path:
    """A downloaded model under base_dir/<name>, else `name` itself as a local folder."""
    candidates = (resolve_path(base_dir) / name, resolve_path(name))
    for candidate in candidates:
        if is_model_folder(candidate):
            return candidate
    for candidate in candidates:
        if candidate.is_dir():
            raise ScoreError(f"{candidate} is a folder but not a model: it holds no config.json (nor a LoRA "
                             "adapter's adapter_config.json)")  # fmt: skip
    raise ScoreError(
        f"model '{name}' not found in {resolve_path(base_dir)} or as a folder; "
        "run `python code/main.py --task download` first"
    )


def load_model(path: Path, model: ModelConfig, dtype: torch.dtype) -> torch.nn.Module:
    """The model in `path`; a LoRA adapter folder (a final/ saved without model.lora_merge_on_save) is loaded onto
    its base model and merged, so evaluation samples a plain model."""
    base = adapter_base(path)
    try:
        loaded = AutoModelForCausalLM.from_pretrained(
            base or path, dtype=dtype, attn_implementation=model.attn_implementation
        )
    except ImportError as e:  # an attention kernel whose package is not installed (flash_attention_2 on a CPU)
        raise ScoreError(f"model.attn_implementation={model.attn_implementation}: {first_line(e)}") from None
    if base is None:
        return loaded
    from peft import PeftModel

    return PeftModel.from_pretrained(loaded, path).merge_and_unload()


def is_model_folder(path: Path) -> bool:
    """A Transformers model folder or a LoRA adapter folder (peft's adapter_config.json)."""
    return (path / "config.json").is_file() or (path / "adapter_config.json").is_file()


def adapter_base(path: Path) -> Path | None:
    """The base model folder of a folder that holds a LoRA adapter only (None for any other folder): the
    base_model_name_or_path peft wrote into adapter_config.json, which must still be a model folder."""
    config = path / "adapter_config.json"
    if (path / "config.json").is_file() or not config.is_file():
        return None
    try:
        base = Path(json.loads(config.read_text())["base_model_name_or_path"])
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ScoreError(f"{config} is unreadable ({type(e).__name__}: {e}); it should be the one peft wrote") from None
    if not (base / "config.json").is_file():
        raise ScoreError(f"the LoRA adapter in {path} was trained on {base}, which holds no model now")
    return base


def disable_dropout(model: torch.nn.Module) -> None:
    """Dropout off everywhere, so train mode (which activation checkpointing needs) scores tokens under the same
    distribution that sampled them in eval mode. Qwen2 and most current LLMs ship with dropout 0 anyway."""
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
        if isinstance(getattr(module, "attention_dropout", None), float):
            module.attention_dropout = 0.0


LORA_PREFIX = "base_model.model."  # peft's names: PeftModel -> LoraModel -> the Transformers model


def add_lora(model: torch.nn.Module, cfg: ModelConfig, seed: int = 0) -> torch.nn.Module:
    """The model wrapped by peft with LoRA adapters on cfg.lora_target_modules; only the adapters train. B starts
    at zero, so until the first update the adapted model computes exactly what the base model does. A's random
    start is drawn from `seed` alone, the same on every process (FSDP2 keeps each process's shard of it as it is)."""
    from peft import LoraConfig, get_peft_model
    from peft.tuners.lora import LoraLayer

    targets = cfg.lora_target_modules
    config = LoraConfig(
        r=cfg.lora_rank,
        lora_alpha=cfg.lora_alpha,
        lora_dropout=cfg.lora_dropout,
        target_modules="all-linear" if targets == ["all-linear"] else targets,
        task_type="CAUSAL_LM",
    )
    try:
        with torch.random.fork_rng(devices=[]):  # the caller's random streams go on untouched
            torch.manual_seed(seed)
            policy = get_peft_model(model, config)
    except ValueError as e:  # no layer of those names
        raise ScoreError(f"model.lora_target_modules={targets}: {first_line(e)}") from None
    embeddings = model.get_input_embeddings().weight
    for name, module in policy.named_modules():
        if not isinstance(module, LoraLayer):
            continue
        if not isinstance(module.base_layer, torch.nn.Linear):  # merge_lora merges linear layers only
            raise ScoreError(f"model.lora_target_modules: {name} is not a linear layer; adapters go on linear layers")
        if module.base_layer.weight is embeddings:  # merged, the one tied weight would change the embeddings too
            raise ScoreError(
                f"model.lora_target_modules: {name} shares its weight with the input embeddings "
                "(tie_word_embeddings), so merged weights cannot hold its adapter; leave it out"
            )
    return policy


def lora_scaling(model: torch.nn.Module) -> float | None:
    """lora_alpha / r of a LoRA policy (peft's PeftModel); None for a plain model."""
    from peft import PeftModel

    if not isinstance(model, PeftModel):
        return None
    config = model.peft_config["default"]
    return config.lora_alpha / config.r


def merge_lora(state: dict[str, Tensor], scaling: float, dtype: torch.dtype | None = None) -> dict[str, Tensor]:
    """A LoRA policy's state dict (peft's names) as the plain model's: each adapted weight W becomes
    W + scaling x B @ A (computed in float32, returned in `dtype`, default W's), the adapters are dropped and every
    name is the base model's (what vLLM and Transformers load). Only merged weights are new tensors; `state` is
    unchanged."""
    merged = {}
    for name, tensor in state.items():
        if ".lora_A." in name or ".lora_B." in name:
            continue
        if name.endswith(".base_layer.weight"):
            stem = name.removesuffix(".base_layer.weight")
            a, b = state[f"{stem}.lora_A.default.weight"], state[f"{stem}.lora_B.default.weight"]
            tensor = (tensor.float() + scaling * (b.float() @ a.float())).to(dtype or tensor.dtype)
        merged[name.removeprefix(LORA_PREFIX).replace(".base_layer.", ".")] = tensor
    return merged


class AdaptersOff:
    """The reference of a LoRA policy: the policy's own forward with its adapters disabled (peft's disable_adapter),
    so the frozen base weights serve both and no second copy is held. Called under no_grad."""

    def __init__(self, policy: torch.nn.Module):
        self.policy = policy  # the PeftModel, unwrapped from DDP

    def __call__(self, **inputs):
        with self.policy.disable_adapter():
            return self.policy(**inputs)


def transformers_model(model: torch.nn.Module) -> torch.nn.Module:
    """A LoRA policy's Transformers model, which holds the adapters (peft injects them into its layers); a plain
    model itself. Generation runs on it (Transformers' own generate samples the adapted policy), and FSDP2 shards it:
    every forward, the policy's, the reference's (adapters off) and generate's, passes through it as the root."""
    from peft import PeftModel

    return model.get_base_model() if isinstance(model, PeftModel) else model


def weight_dtypes(model: ModelConfig, on_gpu: bool) -> tuple[torch.dtype, torch.dtype, str]:
    """(policy dtype, reference dtype, accelerate mixed precision).

    `auto` keeps fp32 master weights under bf16 autocast on GPU: at the paper's lr (5e-6) most bf16 weight
    updates would round away. The reference takes the same numeric path as the policy (the same weights dtype
    under the same autocast), so before any update its log-probs equal the policy's bit for bit and the KL is 0;
    bf16 reference weights would compute different logits (mean |delta logp| 0.04 on a CPU emulation) and the KL
    term would pull the policy toward rounding noise. The price is fp32 reference weights (twice bf16's memory);
    model.reference_dtype=bfloat16 takes bf16 reference weights instead (at 7B: 14 GB less per process unsharded).
    """
    policy, mixed_precision = _policy_dtype(model, on_gpu)
    return policy, torch.bfloat16 if model.reference_dtype == "bfloat16" else policy, mixed_precision


def _policy_dtype(model: ModelConfig, on_gpu: bool) -> tuple[torch.dtype, str]:
    if model.dtype == "auto":
        return torch.float32, "bf16" if on_gpu else "no"
    if model.dtype == "float16" and not on_gpu:  # tiny.yaml on a CPU: non-finite sampling at step 2
        raise ScoreError(
            "model.dtype=float16 on a CPU: its weights turn non-finite in training; use auto, bfloat16 or float32"
        )
    return getattr(torch, model.dtype), "no"


def sharding_requested(accelerator: Accelerator) -> bool:
    """FSDP was asked for by the launch (`accelerate launch --config_file configs/accelerate/fsdp.yaml`).

    On GPUs accelerate reports DistributedType.FSDP; on a CPU it falls back to MULTI_CPU but the launcher still
    exports ACCELERATE_USE_FSDP, so the same sharded code path runs (and is tested) over gloo.
    """
    return accelerator.distributed_type == DistributedType.FSDP or parse_flag_from_env("ACCELERATE_USE_FSDP")


def check_sharding_settings(micro_batch_tokens: int = 0) -> None:
    """The FSDP launch settings this trainer honours: FSDP2, parameters on the GPU, micro-batches by count (every
    sharded forward and backward is a collective, so all processes must run as many; a token budget could give
    them different numbers). Anything else is one error."""
    version = os.environ.get("FSDP_VERSION", "2")
    if version != "2":
        raise ScoreError(f"fsdp_version {version} in the accelerate config: this trainer shards with FSDP2 only")
    if parse_flag_from_env("FSDP_OFFLOAD_PARAMS"):
        raise ScoreError("fsdp_offload_params: true in the accelerate config is not supported; set it to false")
    if micro_batch_tokens:
        raise ScoreError(
            "train.micro_batch_tokens with FSDP2: processes could run different numbers of micro-batches, each a "
            "collective; set it to 0 (micro_batch_size per pass)"
        )


def shard_policy(policy: torch.nn.Module) -> torch.nn.Module:
    """FSDP2 (torch's fully_shard) over all processes: every decoder layer is its own unit, then the root (a LoRA
    policy's Transformers model, inside peft's wrapper: see transformers_model).

    Parameters become DTensors sharded on dim 0; the optimizer must be built after this. Parameters are
    gathered in their own dtype (fp32 master weights) and bf16 compute comes from accelerate's autocast, as with
    DDP: the policy keeps the reference's numeric path (see weight_dtypes), at twice the all-gather volume of
    bf16 gathering.
    """
    from torch.distributed.fsdp import fully_shard

    root = transformers_model(policy)
    layer_types = tuple(getattr(root, "_no_split_modules", None) or ())
    for module in root.modules():
        if type(module).__name__ in layer_types:
            fully_shard(module)
    fully_shard(root)
    return policy


def is_sharded(policy: torch.nn.Module) -> bool:
    from torch.distributed.fsdp import FSDPModule

    return isinstance(transformers_model(policy), FSDPModule)


@contextmanager
def gradient_sync(accelerator: Accelerator, policy: torch.nn.Module, sync: bool):
    """Accumulate gradients locally (sync=False) or reduce them over processes in this backward (sync=True).

    DDP reduces in the backward outside no_sync. FSDP2 reduce-scatters in every backward whatever `sync` says:
    its unsynchronised accumulation would keep every process's unsharded fp32 gradients until the last micro-batch
    (28 GB per GPU for a 7B policy), and a reduce-scatter per micro-batch keeps only this process's shard. Both
    average over processes, so the loss normalizer is the same for both.
    """
    if is_sharded(policy):
        transformers_model(policy).set_requires_gradient_sync(True)
        yield
    elif sync:
        yield
    else:
        with accelerator.no_sync(policy):
            yield


@contextmanager
def generation_model(accelerator: Accelerator, policy: torch.nn.Module):
    """The policy as a plain module for `generate`, with full parameters.

    A sharded policy is unsharded once (one all-gather per unit) and kept whole until the block ends, so each
    process runs as many forward passes as its own generation needs, with no collective per token (processes
    may stop at different lengths and, in evaluation, hold different numbers of problems). The cost is one
    full copy of the weights per GPU in their own dtype during generation; that is the compute dtype, since fp32
    master weights under bf16 autocast sample from a bf16 engine copy instead (trainer.start_run, sync_engine).
    """
    if not is_sharded(policy):
        yield transformers_model(accelerator.unwrap_model(policy))
        return
    root = transformers_model(policy)
    units = [m for m in root.modules() if is_sharded(m)]
    root.set_reshard_after_forward(False)
    for unit in units:
        unit.unshard()
    try:
        yield root
    finally:
        for unit in units:
            unit.reshard()
        root.set_reshard_after_forward(True)


def full_state_dict(
    accelerator: Accelerator, policy: torch.nn.Module, main_only: bool = False, dtype: torch.dtype | None = None
) -> dict[str, Tensor]:
    """Full, unsharded parameters and buffers under the plain model's names (no DDP/FSDP prefixes).

    Every process joins (a sharded policy is gathered). By default every process gets the full tensors on its
    device (a rollout engine per process needs them); main_only gives them on the CPU to the main process only,
    and an empty dict to the others (for saving). A sharded policy is gathered one tensor at a time, each cast at
    once to `dtype` (floating tensors; default: their own) and, with main_only, moved to the CPU: a process never
    holds more than one full fp32 parameter beyond the result (a rollout engine in bf16 asks for bf16 and gets half
    the fp32 model). An unsharded policy gives its own tensors (no copy; the engine casts as it loads).
    """
    if not is_sharded(policy):
        state = accelerator.unwrap_model(policy).state_dict()
        if main_only:
            return {k: v.detach().cpu() for k, v in state.items()} if accelerator.is_main_process else {}
        return state
    from torch.distributed.tensor import DTensor

    keep = accelerator.is_main_process or not main_only
    state = {}
    tensor_names: dict[int, str] = {}  # tied parameters (Qwen2's lm_head and embeddings): gathered once, shared
    for name, tensor in policy.state_dict(keep_vars=True).items():
        if (first := tensor_names.setdefault(id(tensor), name)) != name:
            if keep:
                state[name] = state[first]
            continue
        full = tensor.detach().full_tensor() if isinstance(tensor, DTensor) else tensor.detach()
        if keep:
            full = full.to(dtype) if dtype is not None and full.is_floating_point() else full
            state[name] = full.cpu() if main_only else full
    return state


def engine_state(
    accelerator: Accelerator, policy: torch.nn.Module, dtype: torch.dtype | None = None
) -> dict[str, Tensor]:
    """The full parameters a rollout engine loads (full_state_dict, every process), in `dtype`. A LoRA policy gives
    its merged weights, each computed from the float32 W, A and B and rounded to `dtype` once: rounding W, A and B
    to bf16 before the merge loses most small adapter updates. A sharded LoRA policy is gathered in float32 for it."""
    scaling = lora_scaling(accelerator.unwrap_model(policy))
    if scaling is None:
        return full_state_dict(accelerator, policy, dtype=dtype)
    return merge_lora(full_state_dict(accelerator, policy), scaling, dtype)
