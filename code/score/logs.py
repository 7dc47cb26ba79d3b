"""Training logs: one metrics.jsonl line per step, also sent to the experiment trackers of train.report_to
(TensorBoard, W&B, trackio, MLflow through accelerate's trackers), and sample conversations."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from score.checkpoints import RunFiles, writing
from score.config import Config, first_line
from score.data import Problem
from score.diagnostics import edit_distance, same_answer
from score.domains import final_answer
from score.provenance import flat_settings
from score.rollout import Rollout

if TYPE_CHECKING:
    from accelerate.tracking import GeneralTracker

SAMPLES_LOGGED = 4  # conversations written to samples.jsonl each time
TEXT_DIAGNOSTIC_ROWS = 64  # conversations per process whose attempts are compared as texts each step
PROJECT = "score"  # W&B and trackio project, MLflow experiment (WANDB_PROJECT, MLFLOW_EXPERIMENT_NAME override)
TRACKER_RUNS = "trackers.json"  # in the run folder: each tracker's run, which a resumed training run continues
PREFIX = "heldout_"  # of the held-out evaluation's keys in metrics.jsonl (monitor.py writes them)
HELDOUT_TABLE = "heldout/evaluations"  # every held-out evaluation of the run, one row each, sent at the end


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


def text_diagnostics(texts: list[list[str]], problems: list[Problem], extraction: str) -> torch.Tensor:
    """[second attempts whose final answer differs from the first, sum of edit distances, conversations] over at
    most TEXT_DIAGNOSTIC_ROWS conversations (bounded cost per step); sums, to be added up over processes.
    problems[i] is conversation i's: a final answer is what domains.final_answer reads (a code answer's program)."""
    rows = texts[:TEXT_DIAGNOSTIC_ROWS]
    changed = sum(
        not same_answer(final_answer(first, problem, extraction), final_answer(second, problem, extraction))
        for (first, second, *_), problem in zip(rows, problems, strict=False)
    )
    edits = sum(edit_distance(first, second) for first, second, *_ in rows)
    return torch.tensor([changed, edits, len(rows)], dtype=torch.float64)


def step_record(accelerator, rollout, problems, extraction, summed, times, step, stage, scheduler, grad_norm) -> dict:
    """One metrics.jsonl line, with every quantity averaged over all processes' conversations.

    problems: the rollout's (rollout.problem_index points into them); extraction: grader.extraction.
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
        changed, edits, compared = accelerator.reduce(
            text_diagnostics(rollout.texts, [problems[i] for i in rollout.problem_index.tolist()], extraction).to(
                device
            ),
            "sum",
        ).cpu()
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


def tracker_tag(key: str) -> str:
    """A metrics.jsonl key as the trackers show it: heldout_x -> heldout/x, any other x -> train/x."""
    return key.replace(PREFIX, "heldout/", 1) if key.startswith(PREFIX) else f"train/{key}"


def tracker_values(record: dict) -> dict[str, float]:
    """A record's numbers by tag; its text (a skipped step's reason) and empty rates (None) stay in metrics.jsonl."""
    return {tracker_tag(k): v for k, v in record.items() if k != "step" and isinstance(v, (int, float))}


def hyperparameters(cfg: Config) -> dict[str, object]:
    """The config as section.key -> value, lists as text: TensorBoard's hparams and MLflow's params take scalars."""
    return {k: v if isinstance(v, (int, float, str, bool)) else str(v) for k, v in flat_settings(cfg).items()}


def heldout_table(metrics: Path) -> tuple[list[str], list[list]]:
    """The held-out evaluations in metrics.jsonl as (columns, rows): step, then the metrics without their prefix."""
    records = [json.loads(line) for line in metrics.read_text().splitlines()] if metrics.is_file() else []
    records = [r for r in records if any(key.startswith(PREFIX) for key in r)]
    keys = list(dict.fromkeys(key for r in records for key in r if key.startswith(PREFIX)))
    rows = [[r["step"], *(r.get(key) for key in keys)] for r in records]
    return ["step", *(key.removeprefix(PREFIX) for key in keys)], rows


def start_tracker(
    name: str, files: RunFiles, cfg: Config, purge_step: int | None, continued: str | None
) -> GeneralTracker:
    """accelerate's tracker `name`, started: a new tracker run with the config, or the run `continued` (what
    tracker_run gave) with the config it started with (MLflow refuses to change a param)."""
    from accelerate import tracking

    run_name, config = cfg.train.run_name, hyperparameters(cfg)
    if name == "tensorboard":  # one folder; a resumed run drops the events of the steps it runs again
        tracker = tracking.TensorBoardTracker("tensorboard", files.root, purge_step=purge_step)
    elif name == "wandb":
        project, folder = os.environ.get("WANDB_PROJECT", PROJECT), os.environ.get("WANDB_DIR", str(files.root))
        tracker = tracking.WandBTracker(project, name=run_name, id=continued, resume="allow", dir=folder)
    elif name == "trackio":  # by name; accelerate's store_init_configuration does not reach trackio's run store
        resume = "must" if continued else "never"
        new_config = None if continued else config
        tracker = tracking.TrackioTracker(PROJECT, name=continued or run_name, resume=resume, config=new_config)
    else:
        tracker = tracking.MLflowTracker(experiment_name=PROJECT, run_id=continued, run_name=run_name)
    tracker.start()
    if continued is None and name != "trackio":
        tracker.store_init_configuration(config)
    return tracker


def tracker_run(tracker: GeneralTracker) -> str:
    """What names the tracker's run for a resume: W&B's run id, MLflow's run id, trackio's run name, and for
    TensorBoard its folder (purge_step continues it)."""
    if tracker.name == "wandb":
        return tracker.run.id
    if tracker.name == "mlflow":
        return tracker.active_run.info.run_id
    if tracker.name == "trackio":
        return tracker.run.name
    return "tensorboard"


def log_table(tracker: GeneralTracker, name: str, columns: list[str], rows: list[list]) -> None:
    """A table into a tracker: W&B and trackio tables, an MLflow table artifact (<name>.json), TensorBoard text."""
    if tracker.name == "wandb":
        tracker.log_table(name, columns=columns, data=rows)
    elif tracker.name == "trackio":
        import trackio

        tracker.log({name: trackio.Table(columns=columns, data=rows)})
    elif tracker.name == "mlflow":
        import mlflow

        mlflow.log_table({column: [row[i] for row in rows] for i, column in enumerate(columns)}, f"{name}.json")
    else:
        lines = [" | ".join(columns), " | ".join(["---"] * len(columns))]
        tracker.writer.add_text(name, "\n".join([*lines, *(" | ".join(map(str, row)) for row in rows)]))


def tracker_warning(name: str, action: str, error: Exception) -> None:
    """One line: a tracker that fails never fails the run (metrics.jsonl keeps every record)."""
    reason = first_line(error)[:300]
    hint = f"; pip install {name}" if isinstance(error, ImportError) else ""
    if name == "mlflow" and action == "start" and not hint and "MLFLOW_TRACKING_URI" not in os.environ:
        hint = "; set MLFLOW_TRACKING_URI"  # MLflow 3's default store (sqlite) needs the full mlflow package
    print(
        f"warning: train.report_to {name}: {action} failed ({type(error).__name__}: {reason}){hint}; "
        "the run goes on without it",
        file=sys.stderr,
        flush=True,
    )


def tracker_runs(path: Path) -> dict[str, str]:
    """The tracker runs a resumed run continues (TRACKER_RUNS); an unreadable file is one warning line: new runs."""
    try:
        runs = json.loads(path.read_text())
        if isinstance(runs, dict) and all(isinstance(run, str) for run in runs.values()):
            return runs
    except (OSError, ValueError):  # a decoding error is a ValueError too
        pass
    print(f"warning: {path} is unreadable: the trackers start new runs", file=sys.stderr, flush=True)
    return {}


class MetricsLogger:
    """metrics.jsonl, samples.jsonl and the trackers of train.report_to, written by the main process only. A
    resumed run passes the first step it logs again as purge_step: TensorBoard then drops the older events from
    that step on, and every tracker continues the run it started (TRACKER_RUNS). A tracker that fails to start or
    to take a record is one warning line and is dropped."""

    def __init__(self, files: RunFiles, cfg: Config, enabled: bool, purge_step: int | None = None):
        self.files, self.enabled = files, enabled
        self.trackers: dict[str, GeneralTracker] = {}
        if enabled and cfg.train.report_to:
            self.start_trackers(cfg, purge_step)

    def start_trackers(self, cfg: Config, purge_step: int | None) -> None:
        from accelerate import PartialState

        PartialState()  # accelerate's trackers log through its logger, which needs the process state
        runs_file = self.files.root / TRACKER_RUNS
        runs = tracker_runs(runs_file) if purge_step and runs_file.is_file() else {}
        for name in dict.fromkeys(cfg.train.report_to):
            try:
                self.trackers[name] = start_tracker(name, self.files, cfg, purge_step, runs.get(name))
            except Exception as error:  # a tracker's own error, whatever its package raises
                tracker_warning(name, "start", error)
        runs.update({name: tracker_run(tracker) for name, tracker in self.trackers.items()})
        with writing(self.files.root):
            runs_file.write_text(json.dumps(runs))

    def each_tracker(self, action: str, call: Callable[[GeneralTracker], object]) -> None:
        for name, tracker in list(self.trackers.items()):
            try:
                call(tracker)
            except Exception as error:
                tracker_warning(name, action, error)
                del self.trackers[name]

    def log(self, record: dict) -> None:
        if not self.enabled:
            return
        with writing(self.files.root):
            with self.files.metrics.open("a") as f:
                f.write(json.dumps(record) + "\n")
        values = tracker_values(record)
        self.each_tracker("log", lambda tracker: tracker.log(values, step=record["step"]))

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
        """The held-out table (when the run holds problems out) to every tracker, then each tracker's end."""
        if not self.trackers:
            return
        columns, rows = heldout_table(self.files.metrics)
        if rows:
            self.each_tracker("table", lambda tracker: log_table(tracker, HELDOUT_TABLE, columns, rows))
        self.each_tracker("finish", lambda tracker: tracker.finish())
        self.trackers = {}
