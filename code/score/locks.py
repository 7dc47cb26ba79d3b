"""One writer per folder: a run, an evaluation or an experiment holds an exclusive lock while its process lives.

The lock is fcntl.flock on a lock file in (or beside) the folder, so the OS releases it when the process ends,
however it ends: there are no stale locks to clean up. Under a multi-process launch only the main process takes
it, and every process learns the outcome, so all of them stop together.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from score.config import ScoreError
from score.distributed import gather_objects

_HELD: dict[Path, int] = {}  # lock file -> open descriptor, kept open (locked) until the process exits


def take_lock(lock_file: Path) -> None:
    """Lock `lock_file` (created with its folder) for the rest of this process's life; taking one this process
    holds already is a no-op. Another process holding it: ScoreError naming that process."""
    lock_file = lock_file.resolve()
    if lock_file in _HELD:
        return
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock_file, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.read(fd, 64).decode(errors="replace").strip() or "unknown"
        os.close(fd)
        raise ScoreError(f"{lock_file} is held by another running process (pid {holder})") from None
    try:
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
    except OSError:  # a full disk: let go of the lock with the error
        os.close(fd)
        raise
    _HELD[lock_file] = fd


def let_go_if_alone(lock_file: Path) -> None:
    """Release a lock this process holds and remove it, with its folder, when nothing else was written there: a run
    refused at its start leaves no folder behind. A lock held by another process is never touched."""
    lock_file = lock_file.resolve()
    fd = _HELD.get(lock_file)
    if fd is None or any(path != lock_file for path in lock_file.parent.iterdir()):
        return
    lock_file.unlink()
    lock_file.parent.rmdir()
    os.close(fd)
    del _HELD[lock_file]


def hold_folder(lock_file: Path, what: str, main_process: bool) -> None:
    """take_lock on the main process; every process raises one ScoreError line, naming `what` (the setting that
    chooses another folder), when the lock is held elsewhere."""
    error = None
    if main_process:
        try:
            take_lock(lock_file)
        except ScoreError as e:
            error = str(e)
    errors = [e for e in gather_objects([error]) if e]
    if errors:
        raise ScoreError(f"{errors[0]}: another run is writing there; wait for it to end or choose another {what}")
