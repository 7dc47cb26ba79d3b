"""Stopping training early without losing work: SIGTERM (Slurm's requeue, preemption, scancel, time limit) or
SIGUSR1 (run.slurm's warning before the time limit) lets the current step finish; the trainer then saves a
checkpoint at that step boundary and exits with STOPPED_EXIT_CODE, and `train.resume=true` carries on. The
trainer also stops so by itself when its next step would not end before the run's deadline (`train.time_limit`,
or the Slurm job's end time) with `train.stop_margin` to spare.

Every process must stop after the same step (the checkpoint is a collective), while a signal may reach them at
different moments, or only some of them: the trainer all-reduces the flag once per step.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
from datetime import datetime

STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR1)
STOPPED_EXIT_CODE = 75  # EX_TEMPFAIL ("try again later"): stopped on request, resumable
TIME_UP = 1000  # StopRequests.received when the next step would not fit before the deadline (no signal number)
TIME_UP_REASON = "the time limit"
# run.slurm names a file here; the main process writes the reason into it when it stops before the deadline by
# itself (no signal told the batch script), so that the script requeues the job as it does after USR1.
STOP_NOTE_VARIABLE = "SCORE_STOP_NOTE"


class TrainingStopped(Exception):
    """Raised by every process once the checkpoint of the stop is saved."""


class StopRequests:
    """While active (a `with` block), STOP_SIGNALS set a flag instead of ending the process."""

    def __init__(self) -> None:
        self.received: int | None = None
        self._previous: dict[int, object] = {}

    def __enter__(self) -> StopRequests:
        # Python only lets the main thread install handlers; elsewhere (a training thread) signals stay as they were.
        if threading.current_thread() is threading.main_thread():
            self._previous = {s: signal.signal(s, self._handle) for s in STOP_SIGNALS}
        return self

    def __exit__(self, *exc) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)
        self._previous = {}

    def _handle(self, signum: int, frame) -> None:
        self.received = signum

    def time_up(self) -> None:
        """Stop at the next step boundary: the next step would not end before the deadline."""
        self.received = self.received or TIME_UP

    def agreed(self, accelerator) -> str | None:
        """Why to stop once any process has a reason, the same on every process ("signal SIGUSR1", "the time
        limit"); else None."""
        import torch  # only the trainer calls this; main.py imports this module before torch is needed

        received = torch.tensor([self.received or 0], device=accelerator.device, dtype=torch.int64)
        if accelerator.num_processes > 1:
            torch.distributed.all_reduce(received, op=torch.distributed.ReduceOp.MAX)
        if not received:
            return None
        return TIME_UP_REASON if received == TIME_UP else f"signal {signal.Signals(int(received)).name}"


def next_step_fits(now: float, deadline: float | None, step_seconds: float, margin: float) -> bool:
    """Whether a step as long as `step_seconds` (the longest so far), then `margin` seconds for the checkpoint and
    the exit, end by `deadline` (epoch seconds; None: no deadline)."""
    return deadline is None or now + step_seconds + margin <= deadline


def slurm_job_end() -> float | None:
    """The end of this Slurm job's time limit in epoch seconds: SLURM_JOB_END_TIME (Slurm 23.02 on), else
    `squeue -o %e` (local time); None outside Slurm or when Slurm gives none (no limit, N/A, squeue missing)."""
    if end := os.environ.get("SLURM_JOB_END_TIME"):
        try:
            return float(end)
        except ValueError:
            return None
    job = os.environ.get("SLURM_JOB_ID")
    if not job:
        return None
    try:
        out = subprocess.run(["squeue", "-h", "-j", job, "-o", "%e"], capture_output=True, text=True, timeout=60)
        return datetime.fromisoformat(out.stdout.strip()).timestamp()
    except (OSError, subprocess.SubprocessError, ValueError):
        return None


def run_deadline(started: float, time_limit: float) -> float | None:
    """The earlier of `started` + train.time_limit seconds (0: none) and the Slurm job's end; None: neither."""
    ends = [end for end in (started + time_limit if time_limit else None, slurm_job_end()) if end is not None]
    return min(ends, default=None)


def note_stop(reason: str) -> None:
    """Tell run.slurm (through STOP_NOTE_VARIABLE, when it set one) that training stopped by itself for `reason`."""
    if path := os.environ.get(STOP_NOTE_VARIABLE):
        with open(path, "w") as note:
            note.write(reason + "\n")
