"""Training logs: one metrics.jsonl line per step (also to TensorBoard) and sample conversations."""

from __future__ import annotations

import json

import torch

from score.checkpoints import RunFiles, writing
from score.data import Problem
from score.diagnostics import edit_distance, same_answer
from score.grader import extract_answer
from score.rollout import Rollout

SAMPLES_LOGGED = 4  # conversations written to samples.jsonl each time
TEXT_DIAGNOSTIC_ROWS = 64  # conversations per process whose attempts are compared as texts each step


def transition_rates(rewards: torch.Tensor) -> tuple[float, float]:
    """Among conversations: fraction wrong at t1 and right at t2 (i->c), right then wrong (c->i)."""
    if rewards.shape[1] < 2:
        return 0.0, 0.0
    right1, right2 = rewards[:, 0] > 0.5, rewards[:, 1] > 0.5
    return (~right1 & right2).float().mean().item(), (right1 & ~right2).float().mean().item()


def conditional_rates(rewards: torch.Tensor) -> tuple[float | None, float | None]:
    """P(right at t2 | wrong at t1) and P(wrong at t2 | right at t1); None where no conversation is in the condition."""
    right1, right2 = rewards[:, 0] > 0.5, rewards[:, 1] > 0.5
    fixed = (~right1 & right2).sum().item() / (~right1).sum().item() if (~right1).any() else None
    broken = (right1 & ~right2).sum().item() / right1.sum().item() if right1.any() else None
    return fixed, broken


def text_diagnostics(texts: list[list[str]]) -> torch.Tensor:
    """[second attempts whose final answer differs from the first, sum of edit distances, conversations] over at
    most TEXT_DIAGNOSTIC_ROWS conversations (bounded cost per step); sums, to be added up over processes."""
    rows = texts[:TEXT_DIAGNOSTIC_ROWS]
    changed = sum(not same_answer(extract_answer(first), extract_answer(second)) for first, second, *_ in rows)
    edits = sum(edit_distance(first, second) for first, second, *_ in rows)
    return torch.tensor([changed, edits, len(rows)], dtype=torch.float64)


def step_record(accelerator, rollout, summed, times, step, stage, scheduler, grad_norm) -> dict:
    """One metrics.jsonl line, with every quantity averaged over all processes' conversations.

    summed: loss, entropy sum and KL sum per attempt, already summed over processes."""
    device = accelerator.device
    rewards = accelerator.gather(rollout.rewards.to(device)).cpu()
    lengths = accelerator.gather(rollout.lengths.to(device)).float().cpu()
    truncated = accelerator.gather(rollout.truncated.to(device)).float().cpu()
    attempts = rewards.shape[1]
    counts = torch.stack([(rollout.attempt_mask == k).sum() for k in range(1, attempts + 1)]).to(device)
    token_counts = accelerator.reduce(counts, reduction="sum").cpu()
    record = {"step": step + 1, "stage": stage, "loss": summed[0].item()}
    for k in range(attempts):
        record[f"reward_t{k + 1}"] = rewards[:, k].mean().item()
    record["i_to_c"], record["c_to_i"] = transition_rates(rewards)
    if attempts >= 2:
        record["p_t2_right_given_t1_wrong"], record["p_t2_wrong_given_t1_right"] = conditional_rates(rewards)
        changed, edits, compared = accelerator.reduce(text_diagnostics(rollout.texts).to(device), "sum").cpu()
        record["answer_changed"] = (changed / compared.clamp(min=1)).item()
        record["edit_distance"] = (edits / compared.clamp(min=1)).item()
    for k in range(attempts):
        record[f"kl_t{k + 1}"] = (summed[2 + k] / token_counts[k].clamp(min=1)).item()
    record["entropy"] = (summed[1] / token_counts.sum().clamp(min=1)).item()
    for k in range(attempts):
        record[f"length_t{k + 1}"] = lengths[:, k].mean().item()
        record[f"truncated_t{k + 1}"] = truncated[:, k].mean().item()
    record["lr"] = scheduler.get_last_lr()[0]
    if grad_norm is not None:
        record["grad_norm"] = float(grad_norm)
    record.update({f"seconds_{name}": value for name, value in times.items()})
    return record


class MetricsLogger:
    """metrics.jsonl, samples.jsonl and TensorBoard, written by the main process only. A resumed run passes the
    first step it logs again as purge_step: TensorBoard then drops the older events from that step on."""

    def __init__(self, files: RunFiles, enabled: bool, purge_step: int | None = None):
        self.files, self.enabled = files, enabled
        self.writer = None
        if enabled:
            from torch.utils.tensorboard import SummaryWriter

            with writing(files.root):
                self.writer = SummaryWriter(str(files.root / "tensorboard"), purge_step=purge_step)

    def log(self, record: dict) -> None:
        if not self.enabled:
            return
        with writing(self.files.root):
            with self.files.metrics.open("a") as f:
                f.write(json.dumps(record) + "\n")
            for key, value in record.items():
                if key != "step" and isinstance(value, (int, float)):
                    tag = key.replace("heldout_", "heldout/", 1) if key.startswith("heldout_") else f"train/{key}"
                    self.writer.add_scalar(tag, value, record["step"])
            self.writer.flush()

    def samples(self, step: int, stage: int, batch: list[Problem], rollout: Rollout) -> None:
        if not self.enabled:
            return
        with writing(self.files.root), self.files.samples.open("a") as f:
            for row in range(min(SAMPLES_LOGGED, len(rollout.texts))):
                problem = batch[int(rollout.problem_index[row])]
                entry = {
                    "step": step,
                    "stage": stage,
                    "id": problem.id,
                    "problem": problem.problem,
                    "answer": problem.answer,
                    "attempts": rollout.texts[row],
                    "rewards": rollout.rewards[row].tolist(),
                }
                f.write(json.dumps(entry) + "\n")

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
