"""Stopping training early without losing work: SIGTERM (Slurm's requeue, preemption, scancel, time limit) or
SIGUSR1 (run.slurm's warning before the time limit) lets the current step finish; the trainer then saves a
checkpoint at that step boundary and exits with STOPPED_EXIT_CODE, and `train.resume=true` carries on.

Every process must stop after the same step (the checkpoint is a collective), while a signal may reach them at
different moments, or only some of them: the trainer all-reduces the flag once per step.
"""

from __future__ import annotations

import signal
import threading

STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR1)
STOPPED_EXIT_CODE = 75  # EX_TEMPFAIL ("try again later"): stopped on request, resumable


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

    def agreed(self, accelerator) -> str | None:
        """The name of a stop signal once any process has received one, the same on every process; else None."""
        import torch  # only the trainer calls this; main.py imports this module before torch is needed

        received = torch.tensor([self.received or 0], device=accelerator.device, dtype=torch.int64)
        if accelerator.num_processes > 1:
            torch.distributed.all_reduce(received, op=torch.distributed.ReduceOp.MAX)
        return signal.Signals(int(received)).name if received else None
