"""Supervised fine-tuning on the conversation layout of rollouts (one implementation for every SFT in the project).

A conversation is prompts.conversation_pieces' prompt, attempt 1's ids, the ids between the attempts (spliced as
rollouts splice them: prompts.splice), attempt 2's ids, ... exactly the sequence a rollout holds, so a model
fine-tuned here is trained on the very token layout it is later sampled and scored in. The loss is the mean
cross-entropy over the tokens of the attempts chosen (the assistant turns), never the prompt or instructions.

Users: the testbed's base model (testbed.sft_base_model), and the STaR and Pair-SFT rows of the experiment
(baselines.py), which fine-tune on conversations they sample.
"""

from __future__ import annotations

import random
from collections.abc import Iterable

import torch

from score.prompts import ConversationPieces, splice
from score.rollout import Rollout

Conversation = tuple[list[int], list[int]]  # token ids, attempt mask (k on attempt k's tokens, 0 elsewhere)


def conversation_ids(pieces: ConversationPieces, attempts: list[list[int]], stop_ids: set[int]) -> Conversation:
    """pieces.prompt + y1 + between + y2 + ...: the rollout layout for attempts given as token ids (each as
    sampled, usually ending in a stop token), with the attempt mask."""
    ids, mask = list(pieces.prompt), [0] * len(pieces.prompt)
    for k, attempt in enumerate(attempts, 1):
        ids += attempt
        mask += [k] * len(attempt)
        if k < len(attempts):
            tail = splice(pieces.between[k - 1], attempt, stop_ids)
            ids += tail
            mask += [0] * len(tail)
    return ids, mask


def rollout_conversations(rollout: Rollout, rows: Iterable[int]) -> list[Conversation]:
    """Rows of a rollout as conversations (padding removed): the layout they were sampled in."""
    out = []
    for r in rows:
        length = int(rollout.attention_mask[r].sum())
        out.append((rollout.input_ids[r, :length].tolist(), rollout.attempt_mask[r, :length].tolist()))
    return out


def attempt_ids(rollout: Rollout, row: int, attempt: int) -> list[int]:
    """The ids sampled in one attempt of a rollout row (its stop token included)."""
    return rollout.input_ids[row][rollout.attempt_mask[row] == attempt].tolist()


def conversation_batch(
    conversations: list[Conversation], pad_id: int, trained: set[int] | None = None
) -> dict[str, torch.Tensor]:
    """A right-padded batch; labels are the ids on the tokens of the attempts in `trained` (all attempts when
    None) and -100 elsewhere, so a causal LM's loss covers exactly those tokens."""
    width = max(len(ids) for ids, _ in conversations)
    input_ids = torch.full((len(conversations), width), pad_id, dtype=torch.long)
    labels = torch.full((len(conversations), width), -100, dtype=torch.long)
    attention_mask = torch.zeros((len(conversations), width), dtype=torch.long)
    for r, (ids, mask) in enumerate(conversations):
        row, turns = torch.tensor(ids), torch.tensor(mask)
        on = turns > 0 if trained is None else torch.isin(turns, torch.tensor(sorted(trained)))
        input_ids[r, : len(ids)] = row
        attention_mask[r, : len(ids)] = 1
        labels[r, : len(ids)] = torch.where(on, row, -100)
    return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}


def supervised_step(
    model, optimizer: torch.optim.Optimizer, batches: list[dict[str, torch.Tensor]], max_grad_norm: float
) -> float:
    """One optimizer step over micro-batches: the mean token cross-entropy over all their labelled tokens (each
    micro-batch weighted by its share of them), clipped, stepped. Returns the loss."""
    total = sum(int((b["labels"][:, 1:] != -100).sum()) for b in batches)
    loss_sum = 0.0
    device = next(model.parameters()).device
    for batch in batches:
        batch = {k: v.to(device) for k, v in batch.items()}
        share = int((batch["labels"][:, 1:] != -100).sum()) / total
        loss = model(**batch).loss
        (loss * share).backward()
        loss_sum += loss.item() * share
    if max_grad_norm > 0:
        torch.nn.utils.clip_grad_norm_(model.parameters(), max_grad_norm)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return loss_sum


def finetune(
    model,
    conversations: list[Conversation],
    pad_id: int,
    optimizer: torch.optim.Optimizer,
    steps: int,
    batch_size: int,
    micro_batch_size: int,
    rng: random.Random,
    trained: set[int] | None = None,
    max_grad_norm: float = 1.0,
    log=None,
) -> list[float]:
    """`steps` supervised steps on `batch_size` conversations each, drawn as seeded shuffled passes over
    `conversations`; log(step, loss) after every step. Returns the losses."""
    order: list[int] = []
    losses = []
    model.train()
    for step in range(1, steps + 1):
        chosen = []
        while len(chosen) < batch_size:
            if not order:
                order = list(range(len(conversations)))
                rng.shuffle(order)
            chosen.append(conversations[order.pop()])
        batches = [
            conversation_batch(chosen[s : s + micro_batch_size], pad_id, trained)
            for s in range(0, batch_size, micro_batch_size)
        ]
        losses.append(supervised_step(model, optimizer, batches, max_grad_norm))
        if log is not None:
            log(step, losses[-1])
    return losses
