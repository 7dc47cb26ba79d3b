"""What a run writes to disk: its folder layout, the settings it was trained with, atomic saves of models and
checkpoints, and resuming.

A checkpoint is written into step_<n>.tmp by every process (torch.distributed.checkpoint: each process writes
its own shard of a sharded policy and optimizer; replicated tensors are written once), then, after all processes
have finished, the main process adds trainer_state.json and renames the folder to step_<n>. Only folders named
step_<integer> holding trainer_state.json count as checkpoints, so a crash mid-save leaves nothing that resume or
pruning would take for a finished checkpoint.
"""

from __future__ import annotations

import json
import re
import shutil
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed.checkpoint as dcp
import yaml
from accelerate import Accelerator
from torch.distributed.checkpoint.api import CheckpointException
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict, set_state_dict

from score.config import SFT, SUPERVISED_ROWS, TRAIN, Config, ScoreError, load_config
from score.engines import resolve_engine_name
from score.models import full_state_dict, lora_scaling, merge_lora, transformers_model
from score.objectives import stage_schedule
from score.provenance import RECORD, deciding, differences, flat_settings, settings
from score.seeding import random_states, restore_random_states

SCHEDULE = {"train.stage1_steps", "train.stage2_steps", "train.rounds"}
HELDOUT = ("train.eval_every", "train.eval_problems")  # they decide the held-out split (heldout_split)
# Checkpoints hold the trained parameters (a LoRA policy: its adapters, not the frozen base the run loads anew).
# strict=False lets the load skip the frozen ones; the state it loads is the model's own, so nothing else is missed.
TRAINED_ONLY = StateDictOptions(ignore_frozen_params=True, strict=False)


@dataclass
class RunFiles:
    """Everything a run writes, under saved_models/<run_name>/."""

    root: Path

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    @property
    def metrics(self) -> Path:
        return self.root / "metrics.jsonl"

    @property
    def samples(self) -> Path:
        return self.root / "samples.jsonl"

    @property
    def config(self) -> Path:
        return self.root / "config.yaml"

    def finished_checkpoints(self) -> list[Path]:
        """step_<n> folders with their trainer_state.json (written last), oldest first."""
        found = []
        for path in self.checkpoints.glob("step_*"):
            match = re.fullmatch(r"step_(\d+)", path.name)
            if match and (path / "trainer_state.json").is_file():
                found.append((int(match[1]), path))
        return [path for _, path in sorted(found)]


def heldout_split(cfg: Config) -> int:
    """How many training problems are held out (train.eval_every only says when they are evaluated, but 0 holds
    none out): the split decides the problems trained on."""
    return cfg.train.eval_problems if cfg.train.eval_every else 0


def changed_settings(saved: Config, new: Config) -> list[str]:
    """The settings deciding the trained weights (config.TRAIN) that differ, as 'name (old -> new)', the held-out
    split included. A longer or shorter stage schedule is allowed when one schedule starts with the other (more
    steps of the last stage, more rounds) and the learning rate is constant: the shared steps compute the same thing
    (linear and cosine factors depend on the total number of steps)."""
    old, now = settings(saved, TRAIN), settings(new, TRAIN)
    engines = {old.get("rollout.engine"), now.get("rollout.engine")}
    if "auto" in engines and len(engines) == 2 and resolve_engine_name("auto") in engines:
        old["rollout.engine"] = now["rollout.engine"]  # auto is, on this machine, the engine named now (or before)
    if heldout_split(saved) != heldout_split(new):
        old |= {name: flat_settings(saved)[name] for name in HELDOUT}
        now |= {name: flat_settings(new)[name] for name in HELDOUT}
    a, b = stage_schedule(saved), stage_schedule(new)
    extended = a[: len(b)] == b[: len(a)] and len(a) != len(b)
    if a == b or (extended and new.train.lr_schedule == "constant"):
        old, now = ({k: v for k, v in record.items() if k not in SCHEDULE} for record in (old, now))
    changed = differences(old, now)
    if extended and new.train.lr_schedule != "constant":
        changed.append(f"the total steps under train.lr_schedule={new.train.lr_schedule} (only constant extends)")
    return changed


# Settings added after experiments were first recorded, with the value that gives what a record without them ran.
SETTINGS_ADDED = {"sft.dataset": "d_plus", "sft.star_restart": False}


def check_experiment(folder: Path, cfg: Config, main_process: bool) -> None:
    """An experiment folder reuses finished runs and evaluations, so it must hold one set of settings: the first
    run records them in settings.yaml and a later run whose settings deciding any result (provenance.settings)
    differ stops with one line naming them (more seeds or rows are fine; sft.* count only for the rows that
    fine-tune). Each run's own resume and evaluation then compare their model files and data."""
    record = folder / "settings.yaml"
    if record.is_file():
        old, now = settings(load_config(record)), settings(cfg)
        written = yaml.safe_load(record.read_text())
        for name, value in SETTINGS_ADDED.items():
            section, key = name.split(".")
            if key not in (written.get(section) or {}):
                old[name] = value
        if not set(cfg.experiment.rows) & set(SUPERVISED_ROWS):  # sft.* decide only the supervised rows
            old, now = ({k: v for k, v in part.items() if k not in deciding(SFT)} for part in (old, now))
        differ = differences(old, now)
        if differ:
            raise ScoreError(
                f"{folder} holds an experiment run with other settings: {', '.join(differ)}; "
                "restore them or choose another experiment.name"
            )
    elif main_process:
        folder.mkdir(parents=True, exist_ok=True)
        cfg.save(record)


def check_resume(files: RunFiles, cfg: Config, record: dict, main_process: bool) -> Path | None:
    """The checkpoint to resume from (None: start fresh). Refuses, with one line and before anything is written,
    to train into a folder that holds a run without train.resume, to resume a run whose config.yaml is gone (its
    settings cannot be checked), one trained with other settings, from other model files or data (`record`:
    provenance.files_record of the start model and the training problems, against the run's provenance.json), or
    one whose newest checkpoint lies beyond this schedule's last step. A resume with nothing to resume from says so
    and starts fresh (a Slurm job requeued before its first checkpoint must start)."""
    holds_run = files.metrics.exists() or files.checkpoints.exists()
    if not cfg.train.resume:
        if holds_run:
            raise ScoreError(
                f"{files.root} already holds a run; set train.resume=true or choose another train.run_name"
            )
        return None
    if not files.config.is_file():
        if holds_run:
            raise ScoreError(
                f"cannot resume {files.root}: its config.yaml is missing, so the settings it was trained with are "
                "unknown; restore the file or choose another train.run_name"
            )
        if main_process:  # no "train.resume=true, but": an experiment sets it for its runs, unseen by its user
            print(f"nothing to resume: {files.root} holds no run yet; training from scratch")
        return None
    differ = changed_settings(load_config(files.config), cfg) + changed_files(files, record, main_process)
    if differ:
        raise ScoreError(
            f"cannot resume {files.root}: it was trained with other settings: {', '.join(differ)}; "
            "restore them or choose another train.run_name"
        )
    checkpoint = newest_intact_checkpoint(files, main_process)
    if checkpoint is None and main_process:
        print(f"nothing to resume: {files.checkpoints} holds no checkpoint yet; training from scratch")
    steps = len(stage_schedule(cfg))
    if checkpoint is not None and checkpoint_step(checkpoint) > steps:
        raise ScoreError(
            f"cannot resume {files.root}: its newest checkpoint {checkpoint.name} lies beyond the {steps} steps of "
            "this schedule (train.rounds x (stage1_steps + stage2_steps)); restore the schedule or choose another "
            "train.run_name"
        )
    return checkpoint


def changed_files(files: RunFiles, record: dict, main_process: bool) -> list[str]:
    """What differs between the run's provenance.json and `record`; a run from before the record was kept is named
    once and passes (its files cannot be checked)."""
    path = files.root / RECORD
    try:
        saved = json.loads(path.read_text())
    except FileNotFoundError:
        if main_process:
            print(f"note: {files.root} has no {RECORD} (written since): its start model's files and data are unchecked")
        return []
    except (OSError, ValueError):
        raise ScoreError(
            f"cannot resume {files.root}: {path} is damaged; restore it or choose another train.run_name"
        ) from None
    return differences(saved, record)


def checkpoint_step(checkpoint: Path) -> int:
    return json.loads((checkpoint / "trainer_state.json").read_text())["step"]


def checkpoint_damage(checkpoint: Path) -> str | None:
    """What makes a finished checkpoint unusable (a file missing, cut short or unreadable), or None. Every
    process's files are checked, so that all processes choose the same checkpoint."""
    state_file = checkpoint / "trainer_state.json"
    try:
        state = json.loads(state_file.read_text())
        processes = int(state["processes"])
        state["step"], state["scheduler"]
    except (OSError, ValueError, KeyError, TypeError):
        return f"{state_file} is cut short or unreadable"
    try:
        storage = dcp.FileSystemReader(checkpoint).read_metadata().storage_data or {}
    except Exception:  # a missing or cut .metadata ends in any of pickle's errors
        return f"{checkpoint / '.metadata'} is missing or cut short"
    needed: dict[str, int] = {}
    for item in storage.values():
        needed[item.relative_path] = max(needed.get(item.relative_path, 0), item.offset + item.length)
    for name, size in sorted(needed.items()):
        shard = checkpoint / name
        if not shard.is_file() or shard.stat().st_size < size:
            return f"{shard} is missing or cut short"
    for rank in range(processes):
        rng = checkpoint / f"rng_{rank}.pt"
        try:
            torch.load(rng, weights_only=True)
        except Exception:  # missing, cut short or not a torch file
            return f"{rng} is missing or cut short"
    return None


def newest_intact_checkpoint(files: RunFiles, main_process: bool) -> Path | None:
    """The newest finished checkpoint without damage, naming each damaged one passed over in one line; refuses
    when every checkpoint is damaged."""
    damage = []
    for checkpoint in reversed(files.finished_checkpoints()):
        problem = checkpoint_damage(checkpoint)
        if problem is None:
            return checkpoint
        damage.append(problem)
        if main_process:
            print(f"checkpoint {checkpoint.name} is damaged: {problem}; taking the previous checkpoint")
    if damage:
        raise ScoreError(f"cannot resume {files.root}: no complete checkpoint is left ({'; '.join(damage)})")
    return None


def failures(error: BaseException) -> list[BaseException]:
    """What each process raised inside torch.distributed.checkpoint, which wraps it in a CheckpointException."""
    return [failure for failure, _ in error.failures.values()] if isinstance(error, CheckpointException) else [error]


@contextmanager
def writing(folder: Path):
    """An OSError while writing under `folder` (read-only, disk full, a file where a folder belongs), also one
    that torch.distributed.checkpoint wraps, ends the run with one line naming the folder."""
    try:
        yield
    except (OSError, RuntimeError, CheckpointException) as error:
        problem = next(filter(None, map(write_failure, failures(error))), None)
        if problem is None:
            raise
        raise ScoreError(f"cannot write to {folder}: {problem}") from error


# How torch's own file writer (torch.save to a path, torch.distributed.checkpoint) reports a failed write: a
# RuntimeError without an errno, "[enforce fail at inline_container.cc] . unexpected pos 704 vs 598" on a full disk,
# then "basic_ios::clear: iostream error" while it closes the file.
TORCH_WRITE_FAILURES = ("unexpected pos", "file write failed", "iostream error")


def write_failure(error: BaseException | None) -> str | None:
    """What went wrong when `error` (or the error it was raised while handling) is a failed write, else None."""
    if isinstance(error, OSError):
        return error.strerror or str(error)
    if isinstance(error, RuntimeError) and any(text in str(error) for text in TORCH_WRITE_FAILURES):
        return "a file could not be written whole (is the disk full?)"
    return write_failure(error.__context__) if error is not None else None


def save_atomically(target: Path, write) -> None:
    """write(tmp_dir) then rename: a crash never leaves a half-written folder at `target`."""
    tmp = target.with_name(target.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        write(tmp)
    except BaseException:  # a full disk: free what was written
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = target.with_name(target.name + ".old")
    if target.exists():
        target.rename(old)
    tmp.rename(target)
    shutil.rmtree(old, ignore_errors=True)


def save_model(accelerator: Accelerator, policy, tokenizer, target: Path, merged: bool = False) -> None:
    """A Transformers model folder (safetensors + tokenizer) of the full policy; every process joins.

    A LoRA policy saves its adapter as peft does (adapter_config.json, adapter_model.safetensors), loadable onto the
    base model; with `merged` the folder holds the merged weights as a plain model and the adapter goes to
    <target>/adapter/ (beside merged weights it would be applied twice by Transformers' loader)."""
    state = full_state_dict(accelerator, policy, main_only=True)
    if accelerator.is_main_process:
        model = accelerator.unwrap_model(policy)
        scaling = lora_scaling(model)

        def write(tmp: Path) -> None:
            if scaling is not None and merged:
                transformers_model(model).save_pretrained(tmp, state_dict=merge_lora(state, scaling))
                model.save_pretrained(tmp / "adapter", state_dict=state)
            else:
                model.save_pretrained(tmp, state_dict=state, safe_serialization=True)
            tokenizer.save_pretrained(tmp)

        with writing(target.parent):
            save_atomically(target, write)
    accelerator.wait_for_everyone()


@contextmanager
def quiet_single_process():
    """torch.distributed.checkpoint warns on every save and load of a single-process run; that is intended."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="torch.distributed is disabled")
        yield


@contextmanager
def removed_on_error(tmp: Path, main_process: bool):
    """A checkpoint that could not be written whole (a full disk) leaves nothing behind to fill the disk further."""
    try:
        yield
    except BaseException:
        if main_process:
            shutil.rmtree(tmp, ignore_errors=True)
        raise


def save_checkpoint(accelerator: Accelerator, files: RunFiles, policy, optimizer, scheduler, step: int, stage: int,
                    keep: int) -> None:  # fmt: skip
    """step_<step>/: policy and optimizer (sharded as they are held), scheduler, every process's RNG state."""
    target = files.checkpoints / f"step_{step}"
    tmp = target.with_name(target.name + ".tmp")
    with writing(files.checkpoints), removed_on_error(tmp, accelerator.is_main_process):
        if accelerator.is_main_process:
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
        accelerator.wait_for_everyone()
        model_state, optimizer_state = get_state_dict(policy, optimizer, options=TRAINED_ONLY)
        with quiet_single_process():
            dcp.save({"model": model_state, "optimizer": optimizer_state}, checkpoint_id=tmp)
        torch.save(random_states(), tmp / f"rng_{accelerator.process_index}.pt")
        accelerator.wait_for_everyone()  # every process's files are in tmp before it becomes a checkpoint
        if accelerator.is_main_process:
            state = {
                "step": step,
                "stage": stage,
                "data_position": step,
                "processes": accelerator.num_processes,
                "scheduler": scheduler.state_dict(),
            }
            (tmp / "trainer_state.json").write_text(json.dumps(state))
            shutil.rmtree(target, ignore_errors=True)
            tmp.rename(target)
            for old in files.finished_checkpoints()[:-keep]:
                shutil.rmtree(old)
        accelerator.wait_for_everyone()


def load_checkpoint(accelerator: Accelerator, checkpoint: Path, policy, optimizer, scheduler) -> int:
    """Restore what save_checkpoint wrote (any sharding of the same model); returns the step to continue at."""
    state = json.loads((checkpoint / "trainer_state.json").read_text())
    model_state, optimizer_state = get_state_dict(policy, optimizer, options=TRAINED_ONLY)
    loaded = {"model": model_state, "optimizer": optimizer_state}
    try:  # checkpoint_damage found every file whole; their bytes can still be wrong
        with quiet_single_process():
            dcp.load(loaded, checkpoint_id=checkpoint)
    except (Exception, CheckpointException) as error:  # CheckpointException is a BaseException
        reason = "; ".join(f"{type(failure).__name__}: {failure}".splitlines()[0] for failure in failures(error))
        raise ScoreError(
            f"cannot load checkpoint {checkpoint}, it is damaged ({reason}); move it aside to resume from the "
            "previous one"
        ) from error
    set_state_dict(
        policy, optimizer, model_state_dict=loaded["model"], optim_state_dict=loaded["optimizer"], options=TRAINED_ONLY
    )
    scheduler.load_state_dict(state["scheduler"])
    rng = checkpoint / f"rng_{accelerator.process_index}.pt"
    if state["processes"] == accelerator.num_processes and rng.is_file():
        restore_random_states(torch.load(rng, weights_only=True))
    elif accelerator.is_main_process:
        print(
            f"note: {checkpoint} was saved by {state['processes']} processes, resumed on {accelerator.num_processes}:"
            " same weights and data, but sampling will not repeat the uninterrupted run exactly"
        )
    return state["step"]


def keep_logged_steps(files: RunFiles, before: int) -> None:
    """On resume, drop log lines of the steps from `before` on: they will be run again."""
    for path in (files.metrics, files.samples):
        if path.exists():
            kept = []
            for line in path.read_text().splitlines():
                try:
                    step = json.loads(line)["step"]
                except (json.JSONDecodeError, KeyError, TypeError):
                    continue  # a line cut short when the run was killed
                if step < before:
                    kept.append(line)
            path.write_text("".join(line + "\n" for line in kept))
