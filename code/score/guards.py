"""Checks made before training or evaluation starts, so that a run that cannot be right fails at once with one clear
error."""

from __future__ import annotations

import os

from score.config import Config, ScoreError
from score.data import Problem
from score.prompts import conversation_pieces

LONGEST_CHECKED = 8  # problems (the longest by token count) whose whole conversation is measured exactly


def check_sampling(cfg: Config) -> None:
    """The loss scores every token under softmax(logits / rollout.temperature), the distribution that sampled it."""
    rollout = cfg.rollout
    if rollout.temperature <= 0:
        raise ScoreError("rollout.temperature=0: training needs sampled attempts (the paper samples at 1.0)")
    if rollout.top_p < 1:
        raise ScoreError(
            f"rollout.top_p={rollout.top_p}: training scores tokens under the whole tempered distribution, so "
            "nucleus sampling would make the attempts off-policy; use rollout.top_p=1 for training"
        )


def longest_conversation(tokenizer, problems: list[Problem], cfg: Config, attempts: int, max_new_tokens: int) -> int:
    """Upper bound on the tokens of a conversation: prompt + instructions + attempts x max_new_tokens, for the
    longest problems by token count (the template adds the same text around every problem)."""
    counts = [len(ids) for ids in tokenizer([p.problem for p in problems], add_special_tokens=False)["input_ids"]]
    longest = sorted(range(len(problems)), key=counts.__getitem__)[-LONGEST_CHECKED:]
    fixed = max(
        len(pieces.prompt) + sum(map(len, pieces.between))
        for pieces in (conversation_pieces(tokenizer, problems[i].problem, cfg.prompts, attempts) for i in longest)
    )
    return fixed + attempts * max_new_tokens


def check_context(
    tokenizer, model_config, problems: list[Problem], cfg: Config, evaluating: bool, training: bool = True
) -> None:
    """Prompt + attempts must fit the model's context (max_position_embeddings): the rollout.* budget when training,
    the eval.* budget when evaluating (held-out evaluation during training, --task evaluate)."""
    context = getattr(model_config, "max_position_embeddings", None)
    if not context or not problems:
        return
    budgets = [("rollout.max_new_tokens", cfg.train.attempts, cfg.rollout.max_new_tokens)] if training else []
    if evaluating:
        budgets.append(("eval.max_new_tokens", cfg.eval.attempts, cfg.eval.max_new_tokens))
    for name, attempts, max_new_tokens in budgets:
        need = longest_conversation(tokenizer, problems, cfg, attempts, max_new_tokens)
        if need > context:
            raise ScoreError(
                f"conversations may need {need} tokens ({attempts} attempts x {name}={max_new_tokens} plus the "
                f"longest prompt and instructions, {need - attempts * max_new_tokens}) but the model's context is "
                f"{context} tokens; lower {name} or filter long problems"
            )


def machine_memory() -> int:
    """Bytes of memory this machine has."""
    return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def check_step_size(tokenizer, problems: list[Problem], cfg: Config) -> None:
    """A step's conversations (train.batch_size x rollout.samples_per_prompt) must fit in memory: their token ids
    alone (int64, each as long as the longest conversation) are a floor on what a step holds, so sizes past it are
    refused now rather than by the out-of-memory killer minutes later."""
    conversations = cfg.train.batch_size * cfg.rollout.samples_per_prompt
    tokens = longest_conversation(tokenizer, problems, cfg, cfg.train.attempts, cfg.rollout.max_new_tokens)
    need, have = 8 * conversations * tokens, machine_memory()
    if need > have:
        raise ScoreError(
            f"train.batch_size={cfg.train.batch_size} x rollout.samples_per_prompt={cfg.rollout.samples_per_prompt} "
            f"= {conversations} conversations of up to {tokens} tokens: their token ids alone need "
            f"{need / 2**30:.3g} GiB, more than this machine's {have / 2**30:.3g} GiB; lower one of them"
        )
