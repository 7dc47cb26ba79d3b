"""Batched multi-attempt generation: conversations x, y1, p, y2, ... as token ids, masks, rewards.

Every attempt is one engine call per batch of conversations (score/engines/: padded HF generate or vLLM); the
sampled ids are spliced into the conversation unchanged (see prompts.py), so the training forward pass scores
exactly the tokens that were sampled, in exactly the context they were sampled in. The conversation logic lives
here only; an engine just samples continuations of token-id prompts.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from score.config import GraderConfig, PromptConfig, RolloutConfig
from score.data import Problem
from score.domains import problem_rewards
from score.engines import Engine, Sampling
from score.engines.hf import HFEngine, resolve_hf_compile
from score.progress import inner_progress
from score.prompts import conversation_pieces, end_of_turn_id, splice

RewardFn = Callable[[list[str], list[Problem]], list[float]]


@dataclass
class Rollout:
    """N = len(problems) * samples_per_prompt conversations with K attempts each; tensors on the CPU.

    Row r is a sample of problems[problem_index[r]]; the samples of one problem are contiguous rows.
    """

    input_ids: torch.Tensor  # [N, T] long: x, y1, p, y2, ..., yK, right padded with the pad id
    attention_mask: torch.Tensor  # [N, T] long: 1 on the conversation, 0 on padding
    attempt_mask: torch.Tensor  # [N, T] long: k on tokens sampled in attempt k (its stop token included), else 0
    rewards: torch.Tensor  # [N, K] float: reward of each attempt
    truncated: torch.Tensor  # [N, K] bool: the attempt used max_new_tokens without a stop token
    lengths: torch.Tensor  # [N, K] long: tokens sampled in each attempt (= attempt_mask == k per row)
    texts: list[list[str]]  # [N][K] decoded attempts, without the stop token and special tokens
    problem_index: torch.Tensor  # [N] long: index into the problems given
    sampler_logprobs: torch.Tensor | None = None  # [N, T] float: the engine's log-prob of each attempt token, else 0


def stop_token_ids(generation_config, tokenizer, prompts: PromptConfig) -> list[int]:
    """Tokens that end an attempt: the template's end of turn, the tokenizer's eos and the model's eos ids."""
    ids = [end_of_turn_id(tokenizer, prompts), tokenizer.eos_token_id]
    model_eos = getattr(generation_config, "eos_token_id", None)
    ids += model_eos if isinstance(model_eos, list) else [model_eos]
    return sorted({i for i in ids if i is not None})


def generate_rollouts(
    engine: Engine | torch.nn.Module,
    tokenizer,
    problems: list[Problem],
    rollout_cfg: RolloutConfig,
    prompt_cfg: PromptConfig,
    attempts: int = 2,
    samples_per_prompt: int = 1,
    greedy: bool = False,
    temperature: float | None = None,
    max_new_tokens: int | None = None,
    reward_fn: RewardFn | None = None,
    batch_size: int | None = None,
) -> Rollout:
    """Sample `samples_per_prompt` conversations of `attempts` attempts for every problem.

    engine: an Engine (score/engines/), or a model, which is sampled with the HF engine (padded generate).
    temperature, max_new_tokens and batch_size default to rollout_cfg's temperature, max_new_tokens and
    generation_batch_size; top_p always comes from rollout_cfg. greedy (or temperature 0) decodes greedily.
    Attempt k sees the problem, every earlier attempt and the correction instruction after each.
    reward_fn(texts, problems) scores one attempt of every row (problems[i] belongs to texts[i]); by default the
    reward of each problem's domain scores it (score/domains.py: the answer checker, or the code sandbox).
    """
    if not problems or attempts < 1 or samples_per_prompt < 1:
        raise ValueError(f"need problems, attempts >= 1, samples_per_prompt >= 1: {len(problems)}, {attempts}")
    if not isinstance(engine, Engine):
        engine = HFEngine(engine, resolve_hf_compile(rollout_cfg.hf_compile, engine.device))
    temperature = rollout_cfg.temperature if temperature is None else temperature
    stop_ids = stop_token_ids(engine.generation_config, tokenizer, prompt_cfg)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else stop_ids[0]
    sampling = Sampling(
        max_new_tokens=max_new_tokens or rollout_cfg.max_new_tokens,
        stop_ids=stop_ids,
        pad_id=pad_id,
        greedy=greedy or temperature == 0,
        temperature=temperature,
        top_p=rollout_cfg.top_p,
    )
    batch_size = batch_size or rollout_cfg.generation_batch_size
    stop_set = set(stop_ids)

    pieces = [conversation_pieces(tokenizer, p.problem, prompt_cfg, attempts) for p in problems]
    index = [i for i in range(len(problems)) for _ in range(samples_per_prompt)]
    seqs = [list(pieces[i].prompt) for i in index]
    masks = [[0] * len(seq) for seq in seqs]
    logprobs = [[0.0] * len(seq) for seq in seqs]
    sampled: list[list[list[int]]] = [[] for _ in index]  # [N][K] ids of each attempt
    truncated: list[list[bool]] = [[] for _ in index]
    with_logprobs = True
    others = torch.distributed.is_initialized() and torch.distributed.get_rank() > 0  # one process reports
    bar = inner_progress(total=len(index) * attempts, desc="generate", unit="attempt", disable=others)

    for start in range(0, len(index), batch_size):
        rows = range(start, min(start + batch_size, len(index)))
        for k in range(1, attempts + 1):
            out = engine.sample([seqs[r] for r in rows], sampling)
            bar.update(len(rows))
            with_logprobs = with_logprobs and out.logprobs is not None
            for i, (r, ids) in enumerate(zip(rows, out.ids, strict=True)):
                sampled[r].append(ids)
                truncated[r].append(not ids or ids[-1] not in stop_set)
                seqs[r] += ids
                masks[r] += [k] * len(ids)
                logprobs[r] += out.logprobs[i] if out.logprobs is not None else [0.0] * len(ids)
                if k < attempts:
                    tail = splice(pieces[index[r]].between[k - 1], ids, stop_set)
                    seqs[r] += tail
                    masks[r] += [0] * len(tail)
                    logprobs[r] += [0.0] * len(tail)
    bar.close()

    rows_problems = [problems[i] for i in index]
    texts_by_attempt = []
    scores = []
    for k in range(attempts):
        content = [ids[k][: len(ids[k]) - (not truncated[r][k])] for r, ids in enumerate(sampled)]
        texts = tokenizer.batch_decode(content, skip_special_tokens=True)
        if reward_fn is None:
            values = problem_rewards(texts, rows_problems, GraderConfig())
        else:
            values = reward_fn(texts, rows_problems)
        if len(values) != len(texts):
            raise ValueError(f"reward_fn returned {len(values)} rewards for {len(texts)} attempts")
        texts_by_attempt.append(texts)
        scores.append(values)

    width = max(map(len, seqs))
    input_ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(seqs), width), dtype=torch.long)
    attempt_mask = torch.zeros((len(seqs), width), dtype=torch.long)
    sampler_logprobs = torch.zeros((len(seqs), width), dtype=torch.float32)
    for r, (seq, mask) in enumerate(zip(seqs, masks, strict=True)):
        input_ids[r, : len(seq)] = torch.tensor(seq, dtype=torch.long)
        attention_mask[r, : len(seq)] = 1
        attempt_mask[r, : len(seq)] = torch.tensor(mask, dtype=torch.long)
        sampler_logprobs[r, : len(seq)] = torch.tensor(logprobs[r], dtype=torch.float32)
    return Rollout(
        input_ids=input_ids,
        attention_mask=attention_mask,
        attempt_mask=attempt_mask,
        rewards=torch.tensor(scores, dtype=torch.float32).T.contiguous(),
        truncated=torch.tensor(truncated, dtype=torch.bool),
        lengths=torch.tensor([[len(ids) for ids in row] for row in sampled], dtype=torch.long),
        texts=[list(row) for row in zip(*texts_by_attempt, strict=True)],
        problem_index=torch.tensor(index, dtype=torch.long),
        sampler_logprobs=sampler_logprobs if with_logprobs else None,
    )
