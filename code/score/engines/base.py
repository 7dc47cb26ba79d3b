"""What every rollout engine is: token-id prompts and a Sampling in, Samples out."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import torch


@dataclass
class Sampling:
    """How one attempt is sampled. Greedy ignores temperature and top_p."""

    max_new_tokens: int
    stop_ids: list[int]  # an attempt ends at the first of these, which is part of the attempt
    pad_id: int  # fills the padding of batched prompts (engines that pad)
    greedy: bool = False
    temperature: float = 1.0
    top_p: float = 1.0


@dataclass
class Samples:
    """One attempt of every prompt: sampled ids up to and including the first stop id (or max_new_tokens ids)."""

    ids: list[list[int]]
    logprobs: list[list[float]] | None = None  # the sampler's log-probability of each sampled id, if it gives them


class Engine(ABC):
    """Samples continuations of token-id prompts. `generation_config` holds the model's own eos ids.

    An engine that keeps its own copy of the weights (`holds_weights`) is given the policy's full state after
    every optimizer step (`load_weights`); it may free memory during the update (`sleep`, woken by load_weights).
    """

    generation_config = None
    holds_weights = False

    @abstractmethod
    def sample(self, prompts: list[list[int]], sampling: Sampling) -> Samples:
        """One attempt of every prompt, sampled as `sampling` says."""

    def load_weights(self, state: dict[str, torch.Tensor]) -> None:  # noqa: B027 (optional hook, no-op)
        """Take the policy's parameters (Hugging Face names); the next sample uses them."""

    def sleep(self) -> None:  # noqa: B027 (optional hook, no-op)
        """Free what the engine can while the policy is updated."""

    def close(self) -> None:  # noqa: B027 (optional hook, no-op)
        """Release the engine's memory."""
