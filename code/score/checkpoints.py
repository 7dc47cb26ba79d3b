"""What a run writes to disk: its folder layout, atomic saves of models and checkpoints, resume trimming."""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

from accelerate import Accelerator


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

    def latest_checkpoint(self) -> Path | None:
        steps = sorted(self.checkpoints.glob("step_*"), key=lambda p: int(p.name.split("_")[1]))
        return steps[-1] if steps else None


def save_atomically(target: Path, write) -> None:
    """write(tmp_dir) then rename: a crash never leaves a half-written folder at `target`."""
    tmp = target.with_name(target.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    write(tmp)
    old = target.with_name(target.name + ".old")
    if target.exists():
        target.rename(old)
    tmp.rename(target)
    shutil.rmtree(old, ignore_errors=True)


def save_model(accelerator: Accelerator, policy, tokenizer, target: Path) -> None:
    state = accelerator.get_state_dict(policy)  # every process joins (sharded setups gather here)
    if accelerator.is_main_process:
        model = accelerator.unwrap_model(policy)

        def write(tmp: Path) -> None:
            model.save_pretrained(tmp, state_dict=state, safe_serialization=True)
            tokenizer.save_pretrained(tmp)

        save_atomically(target, write)
    accelerator.wait_for_everyone()


def save_checkpoint(accelerator: Accelerator, files: RunFiles, step: int, stage: int, keep: int) -> None:
    target = files.checkpoints / f"step_{step}"
    tmp = target.with_name(target.name + ".tmp")
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp))  # model, optimizer, scheduler, RNG states of every process
    if accelerator.is_main_process:
        state = {"step": step, "stage": stage, "data_position": step}
        (tmp / "trainer_state.json").write_text(json.dumps(state))
        tmp.rename(target)
        for old in sorted(files.checkpoints.glob("step_*"), key=lambda p: int(p.name.split("_")[1]))[:-keep]:
            shutil.rmtree(old)
    accelerator.wait_for_everyone()


def keep_logged_steps(files: RunFiles, upto: int) -> None:
    """On resume, drop log lines of steps after the checkpoint: they will be run again."""
    for path in (files.metrics, files.samples):
        if path.exists():
            lines = [line for line in path.read_text().splitlines() if json.loads(line)["step"] <= upto]
            path.write_text("".join(line + "\n" for line in lines))
