"""Rollout engines: they turn token-id prompts into sampled token ids, nothing more.

The conversation (prompt ids, splicing earlier attempts, stop tokens, truncation, several samples per problem)
lives in rollout.py, the same for every engine. Two engines:
    hf    padded `model.generate` (engines/hf.py) on the model being trained, or on a bf16 copy of it when it keeps
          fp32 master weights under bf16 autocast; compiled on a GPU (rollout.hf_compile).
    vllm  a colocated in-process vLLM engine (engines/vllm.py): paged KV cache, prefix caching, fast kernels;
          its weights are synced from the policy after every optimizer step.
`rollout.engine: auto` picks vllm when it is installed and a GPU is present, else hf (see `resolve_engine_name`).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch

from score.config import ModelConfig, RolloutConfig, ScoreError
from score.engines.base import Engine, Samples, Sampling
from score.engines.hf import HFEngine, resolve_hf_compile
from score.engines.vllm import VLLMEngine
from score.models import adapter_base, load_model

__all__ = ["Engine", "Samples", "Sampling", "open_engine", "resolve_engine_name", "resolve_tis_cap"]

ENGINES = ("auto", "hf", "vllm")
VLLM_TIS_CAP = 2.0  # the truncated importance sampling cap the vllm engine gets by default


def vllm_available() -> bool:
    return importlib.util.find_spec("vllm") is not None


def resolve_engine_name(name: str) -> str:
    """`auto` -> vllm when vLLM is installed and a GPU is present, else hf; hf and vllm stay."""
    if name not in ENGINES:
        raise ScoreError(f"rollout.engine: unknown engine {name!r}; expected one of {', '.join(ENGINES)}")
    if name == "auto":
        return "vllm" if vllm_available() and torch.cuda.is_available() else "hf"
    if name == "vllm" and not vllm_available():
        raise ScoreError(
            "rollout.engine=vllm: vLLM is not installed (on a GPU: pip install -r requirements-vllm.txt; "
            "on a CPU: make setup-vllm and use .venv-vllm)"
        )
    return name


def resolve_tis_cap(rollout: RolloutConfig) -> float:
    """rollout.tis_cap with its default (-1) resolved: 2 with the vllm engine, which samples in bf16 while training
    scores fp32 master weights under autocast (the drift is real), 0 with hf (it samples the trained weights);
    an explicit value stays."""
    if rollout.tis_cap >= 0:
        return rollout.tis_cap
    return VLLM_TIS_CAP if resolve_engine_name(rollout.engine) == "vllm" else 0.0


def open_engine(
    rollout: RolloutConfig, model_path: Path, seed: int, dtype: torch.dtype, model: torch.nn.Module | None = None
) -> Engine:
    """The engine rollout.engine names, sampling in `dtype` (what the model computes in). vllm loads the weights of
    `model_path` into a colocated vLLM engine, seeded with `seed`. hf samples `model` itself (rollout.hf_compile
    says how), or, when `model`'s weights are not in `dtype` (fp32 master weights under bf16 autocast), a copy of
    `model_path` in `dtype` on `model`'s device, refreshed by load_weights: bf16 weights decode 1.6-2.2x as fast
    as autocast over fp32 ones on a GPU (issue 17), and the trainer scores the sampled tokens itself."""
    if resolve_engine_name(rollout.engine) == "vllm":
        if adapter_base(model_path) is not None:
            raise ScoreError(
                f"{model_path} holds a LoRA adapter only, which the vllm engine does not load: use rollout.engine=hf, "
                "or train with model.lora_merge_on_save=true for merged weights"
            )
        return VLLMEngine(model_path, rollout, seed=seed, dtype=dtype)
    if model is None:
        raise ValueError("the hf engine samples a model; none given")
    compile = resolve_hf_compile(rollout.hf_compile, model.device)
    if model.dtype == dtype:
        return HFEngine(model, compile)
    attention = model.config._attn_implementation  # the policy's attention kernels, so the copy samples like it
    # load_model: a LoRA adapter folder loads as its base with the adapter merged, the plain model the policy started as
    copy = load_model(model_path, ModelConfig(attn_implementation=attention), dtype)
    return HFEngine(copy.to(model.device).eval(), compile, holds_weights=True)
