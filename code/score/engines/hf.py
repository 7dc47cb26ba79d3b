"""The Hugging Face engine: one padded `model.generate` call per attempt of a batch.

Sampling uses only the temperature and top-p given: the model's own generation_config (Qwen ships top_k=20 and
repetition_penalty=1.05, for example) is set aside during the call, because the policy gradient assumes the
attempts are samples of the policy being trained.

Two ways to run generate (rollout.hf_compile):
    eager     a dynamic KV cache, the batch padded to its longest prompt: every shape goes, nothing compiles.
    compiled  transformers' static KV cache and a torch.compile'd decode step (on a GPU eager decoding is bound by
              kernel launches: 45 ms per token step for a 1.5B model at batch 1 to 64). A compiled step serves one
              shape only, so the batch is padded to a bucket: rows up to `bucket(rows)` (copies of the first
              prompt, stopped after one token and dropped), the prompt width to a multiple of PROMPT_MULTIPLE and
              the cache to `bucket(width + max_new_tokens)`; one run compiles a handful of times, not per batch.
Both sample the same distribution: padding is masked out of attention and positions count real tokens only.
"""

from __future__ import annotations

import torch
from transformers import CompileConfig, GenerationConfig, StoppingCriteria, StoppingCriteriaList

from score.config import ScoreError
from score.engines.base import Engine, Samples, Sampling

HF_COMPILE = ("auto", "on", "off")
PROMPT_MULTIPLE = 64  # compiled path: prompts are left padded to a multiple of this many tokens
COMPILE_BACKEND = "inductor"  # torch.compile's backend for the decode step (tests count compilations with theirs)


def bucket(n: int) -> int:
    """The smallest size >= n among 1, 2, 3, 4, 6, 8, 12, 16, 24, ... (powers of two and 1.5x them): padding to it
    adds less than half of n, and sizes up to 4096 fall into 24 buckets."""
    power = 1
    while power < n:
        power *= 2
    three_quarters = power * 3 // 4
    return three_quarters if power >= 4 and three_quarters >= n else power


def resolve_hf_compile(setting: str, device: torch.device) -> bool:
    """rollout.hf_compile: on, off, or auto = on for a CUDA model (launch-bound decoding) and off on a CPU (where
    compiling takes longer than it saves on short runs)."""
    if setting not in HF_COMPILE:
        raise ScoreError(f"rollout.hf_compile: unknown value {setting!r}; expected one of {', '.join(HF_COMPILE)}")
    return setting == "on" or (setting == "auto" and torch.device(device).type == "cuda")


def left_pad(seqs: list[list[int]], pad_id: int, device, width: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Ids and attention mask of `seqs`, left padded to `width` (default: the longest)."""
    width = width or max(map(len, seqs))
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for row, seq in enumerate(seqs):
        ids[row, width - len(seq) :] = torch.tensor(seq, dtype=torch.long)
        mask[row, width - len(seq) :] = 1
    return ids.to(device), mask.to(device)


class RowsDone(StoppingCriteria):
    """Marks rows `first` onwards (bucket padding) finished at once, so they never keep generate running."""

    def __init__(self, first: int):
        self.first = first

    def __call__(self, input_ids: torch.Tensor, scores, **kwargs) -> torch.Tensor:
        done = torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)
        done[self.first :] = True
        return done


class HFEngine(Engine):
    """Samples with the model's `generate`, in eval mode under no_grad; the model's mode is restored after.

    compile: the compiled path (module docstring); static_cache: its static cache and padded shapes without the
    compilation (default: as compile), the same computation, cheap to test. holds_weights: `model` is the engine's
    own copy (in the compute dtype, say), which load_weights refreshes from the policy's parameters.
    """

    def __init__(self, model, compile: bool = False, static_cache: bool | None = None, holds_weights: bool = False):
        self.model = model
        self.compile = compile
        self.static_cache = compile if static_cache is None else static_cache
        self.holds_weights = holds_weights

    @property
    def generation_config(self):
        return self.model.generation_config

    def load_weights(self, state: dict[str, torch.Tensor]) -> None:
        """Copies the policy's parameters in place (cast to the copy's dtype), so a compiled step stays valid."""
        if self.holds_weights:
            self.model.load_state_dict(state)

    def static_options(self, width: int, max_new_tokens: int) -> dict:
        """GenerationConfig fields of the static path for a padded batch of prompts `width` tokens wide."""
        options = dict(cache_implementation="static", max_cache_len=bucket(width + max_new_tokens))
        if not self.compile:
            return options | dict(disable_compile=True)
        # Shapes are bucketed, so each one compiles once (dynamic=False); CUDA graphs (reduce-overhead) on a GPU.
        compile_config = CompileConfig(dynamic=False, backend=COMPILE_BACKEND)
        if self.model.device.type != "cuda":
            compile_config.mode = "default"
            compile_config._compile_all_devices = True  # transformers compiles generate on a GPU only, unless asked
        return options | dict(compile_config=compile_config)

    def sample(self, prompts: list[list[int]], sampling: Sampling) -> Samples:
        """generate pads finished rows with pad_id, which may itself be a stop token (pad == eos), so a row ends
        at its FIRST stop token and everything after it is padding."""
        model = self.model
        options = {} if sampling.greedy else {"temperature": sampling.temperature, "top_p": sampling.top_p, "top_k": 0}
        width, padded, stopping = None, prompts, None
        if self.static_cache:
            width = -(-max(map(len, prompts)) // PROMPT_MULTIPLE) * PROMPT_MULTIPLE
            padded = prompts + [prompts[0]] * (bucket(len(prompts)) - len(prompts))
            stopping = StoppingCriteriaList([RowsDone(len(prompts))])
            options |= self.static_options(width, sampling.max_new_tokens)
        config = GenerationConfig(
            do_sample=not sampling.greedy,
            max_new_tokens=sampling.max_new_tokens,
            eos_token_id=sampling.stop_ids,
            pad_token_id=sampling.pad_id,
            **options,
        )
        input_ids, attention_mask = left_pad(padded, sampling.pad_id, model.device, width)
        was_training, saved_config = model.training, model.generation_config
        model.eval()
        model.generation_config = config
        try:
            with torch.no_grad():
                out = model.generate(input_ids=input_ids, attention_mask=attention_mask, stopping_criteria=stopping)
        finally:
            model.generation_config = saved_config
            model.train(was_training)
        out = out[: len(prompts), input_ids.shape[1] :].cpu()
        is_stop = torch.isin(out, torch.tensor(sampling.stop_ids))
        lengths = torch.where(is_stop.any(dim=1), is_stop.int().argmax(dim=1) + 1, out.shape[1])
        return Samples([row[:n] for row, n in zip(out.tolist(), lengths.tolist(), strict=True)])
