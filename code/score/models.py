"""Model and tokenizer loading and weight dtypes, shared by training, evaluation and benchmarks."""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import AutoModelForCausalLM

from score.config import ModelConfig, ScoreError, resolve_path


def resolve_model_path(name: str, base_dir: str) -> Path:
    """A downloaded model under base_dir/<name>, else `name` itself as a local folder."""
    for candidate in (resolve_path(base_dir) / name, resolve_path(name)):
        if (candidate / "config.json").is_file():
            return candidate
    raise ScoreError(
        f"model '{name}' not found in {resolve_path(base_dir)} or as a folder; "
        "run `python code/main.py --task download` first"
    )


def load_model(path: Path, model: ModelConfig, dtype: torch.dtype) -> torch.nn.Module:
    return AutoModelForCausalLM.from_pretrained(path, dtype=dtype, attn_implementation=model.attn_implementation)


def weight_dtypes(model: ModelConfig, on_gpu: bool) -> tuple[torch.dtype, torch.dtype, str]:
    """(policy dtype, reference dtype, accelerate mixed precision).

    `auto` keeps fp32 master weights under bf16 autocast on GPU: at the paper's lr (5e-6) most bf16 weight
    updates would round away. The reference takes the same numeric path as the policy (the same weights dtype
    under the same autocast), so before any update its log-probs equal the policy's bit for bit and the KL is 0;
    bf16 reference weights would compute different logits (mean |delta logp| 0.04 on a CPU emulation) and the KL
    term would pull the policy toward rounding noise. The price is fp32 reference weights (twice bf16's memory).
    """
    if model.dtype == "auto":
        return (torch.float32, torch.float32, "bf16") if on_gpu else (torch.float32, torch.float32, "no")
    dtype = getattr(torch, model.dtype)
    return dtype, dtype, "no"
