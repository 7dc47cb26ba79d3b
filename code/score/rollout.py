"""Batched multi-attempt generation: conversations x, y1, p, y2, ... as token ids, masks, rewards.

Every attempt is one `model.generate` call per batch of conversations, left padded; the sampled ids are spliced
into the conversation unchanged (see prompts.py), so the training forward pass scores exactly the tokens that were
sampled, in exactly the context they were sampled in.

Sampling uses only the temperature and top-p given here: the model's own generation_config (Qwen ships top_k=20
and repetition_penalty=1.05, for example) is set aside during the call, because the policy gradient assumes the
attempts are samples of the policy being trained.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from transformers import GenerationConfig

from score.config import PromptConfig, RolloutConfig
from score.data import Problem
from score.grader import rewards as grade
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


def stop_token_ids(model, tokenizer, prompts: PromptConfig) -> list[int]:
    """Tokens that end an attempt: the template's end of turn, the tokenizer's eos and the model's eos ids."""
    ids = [end_of_turn_id(tokenizer, prompts), tokenizer.eos_token_id]
    model_eos = getattr(model.generation_config, "eos_token_id", None)
    ids += model_eos if isinstance(model_eos, list) else [model_eos]
    return sorted({i for i in ids if i is not None})


def _left_pad(seqs: list[list[int]], pad_id: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(map(len, seqs))
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for row, seq in enumerate(seqs):
        ids[row, width - len(seq) :] = torch.tensor(seq, dtype=torch.long)
        mask[row, width - len(seq) :] = 1
    return ids.to(device), mask.to(device)


def _sample(model, contexts: list[list[int]], stop: torch.Tensor, pad_id: int) -> tuple[list[list[int]], list[bool]]:
    """One attempt for a batch: the sampled ids up to and including the first stop token, and truncation flags.

    generate pads finished rows with pad_id, which may itself be a stop token (pad == eos), so a row ends at its
    FIRST stop token and everything after it is padding.
    """
    input_ids, attention_mask = _left_pad(contexts, pad_id, model.device)
    out = model.generate(input_ids=input_ids, attention_mask=attention_mask)[:, input_ids.shape[1] :].cpu()
    is_stop = torch.isin(out, stop)
    stopped = is_stop.any(dim=1)
    lengths = torch.where(stopped, is_stop.int().argmax(dim=1) + 1, out.shape[1])
    rows = out.tolist()
    return [row[:n] for row, n in zip(rows, lengths.tolist(), strict=True)], (~stopped).tolist()


def generate_rollouts(
    model,
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

    temperature, max_new_tokens and batch_size default to rollout_cfg's temperature, max_new_tokens and
    generation_batch_size; top_p always comes from rollout_cfg. greedy (or temperature 0) decodes greedily.
    Attempt k sees the problem, every earlier attempt and the correction instruction after each.
    reward_fn(texts, problems) scores one attempt of every row (problems[i] belongs to texts[i]); by default the
    answer checker compares each text's final answer with the problem's answer.
    Runs under no_grad in eval mode; the model's train/eval mode is restored afterwards.
    """
    if not problems or attempts < 1 or samples_per_prompt < 1:
        raise ValueError(f"need problems, attempts >= 1, samples_per_prompt >= 1: {len(problems)}, {attempts}")
    temperature = rollout_cfg.temperature if temperature is None else temperature
    greedy = greedy or temperature == 0
    max_new_tokens = max_new_tokens or rollout_cfg.max_new_tokens
    batch_size = batch_size or rollout_cfg.generation_batch_size

    stop_ids = stop_token_ids(model, tokenizer, prompt_cfg)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else stop_ids[0]
    sampling = {} if greedy else {"temperature": temperature, "top_p": rollout_cfg.top_p, "top_k": 0}
    config = GenerationConfig(
        do_sample=not greedy, max_new_tokens=max_new_tokens, eos_token_id=stop_ids, pad_token_id=pad_id, **sampling
    )
    stop = torch.tensor(stop_ids)
    stop_set = set(stop_ids)

    pieces = [conversation_pieces(tokenizer, p.problem, prompt_cfg, attempts) for p in problems]
    index = [i for i in range(len(problems)) for _ in range(samples_per_prompt)]
    seqs = [list(pieces[i].prompt) for i in index]
    masks = [[0] * len(seq) for seq in seqs]
    sampled: list[list[list[int]]] = [[] for _ in index]  # [N][K] ids of each attempt
    truncated: list[list[bool]] = [[] for _ in index]

    was_training, saved_config = model.training, model.generation_config
    model.eval()
    model.generation_config = config
    try:
        with torch.no_grad():
            for start in range(0, len(index), batch_size):
                rows = range(start, min(start + batch_size, len(index)))
                for k in range(1, attempts + 1):
                    outs, cut = _sample(model, [seqs[r] for r in rows], stop, pad_id)
                    for r, ids, was_cut in zip(rows, outs, cut, strict=True):
                        sampled[r].append(ids)
                        truncated[r].append(was_cut)
                        seqs[r] += ids
                        masks[r] += [k] * len(ids)
                        if k < attempts:
                            tail = splice(pieces[index[r]].between[k - 1], ids, stop_set)
                            seqs[r] += tail
                            masks[r] += [0] * len(tail)
    finally:
        model.generation_config = saved_config
        model.train(was_training)

    rows_problems = [problems[i] for i in index]
    texts_by_attempt = []
    scores = []
    for k in range(attempts):
        content = [ids[k][: len(ids[k]) - (not truncated[r][k])] for r, ids in enumerate(sampled)]
        texts = tokenizer.batch_decode(content, skip_special_tokens=True)
        if reward_fn is None:
            values = grade(texts, [p.answer for p in rows_problems])
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
    for r, (seq, mask) in enumerate(zip(seqs, masks, strict=True)):
        input_ids[r, : len(seq)] = torch.tensor(seq, dtype=torch.long)
        attention_mask[r, : len(seq)] = 1
        attempt_mask[r, : len(seq)] = torch.tensor(mask, dtype=torch.long)
    return Rollout(
        input_ids=input_ids,
        attention_mask=attention_mask,
        attempt_mask=attempt_mask,
        rewards=torch.tensor(scores, dtype=torch.float32).T.contiguous(),
        truncated=torch.tensor(truncated, dtype=torch.bool),
        lengths=torch.tensor([[len(ids) for ids in row] for row in sampled], dtype=torch.long),
        texts=[list(row) for row in zip(*texts_by_attempt, strict=True)],
        problem_index=torch.tensor(index, dtype=torch.long),
    )
