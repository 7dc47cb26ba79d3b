"""Warm judge workers, one per slot, each fed by a thread that lives as long as the pool.

A worker is a pre-started interpreter (`serve`) that judges one job at a time: it forks a child in a session of
its own, which starts the program's jail and runs the tests (judge.py), and kills that child's whole group when the
job's time is up, so every job returns within its timeout plus START_GRACE. A worker that dies or does not answer
is replaced by its slot's thread, and its job is scored as a failure: later calls work as before. Workers end when
the pool closes or its process dies (end of their stdin, and PR_SET_PDEATHSIG tied to the slot thread, which lives
as long as the pool); they ignore SIGINT and SIGTERM, which the training process handles while it still needs them.
"""

from __future__ import annotations

import ctypes
import json
import math
import os
import queue
import resource
import select
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict
from pathlib import Path

from score.code.jail import Limits
from score.code.judge import Outcome, judge

START_GRACE = 0.5  # seconds beyond a job's timeout for the jail's start and the kill
WORKER_GRACE = 5.0  # seconds beyond that before a worker that has not answered counts as lost
PACKAGE_ROOT = str(Path(__file__).resolve().parents[2])  # the folder holding score/
PR_SET_PDEATHSIG, PR_SET_CHILD_SUBREAPER = 1, 36


def usable_cores() -> int:
    """The CPU cores this process may use: what `workers` 0 means for the answer checker's and the sandbox's pools."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _remove(folder: str) -> None:
    """Remove a folder whatever the program made in it (rm does not recurse on the stack, as rmtree does)."""
    subprocess.run(["rm", "-rf", "--", folder], check=False)


def _reap() -> None:
    """Collect the exit of every process that ended below this worker, a subreaper (a jail's processes whose
    parent was killed at the deadline end up here, not at init, which may never collect them)."""
    try:
        while os.waitpid(-1, os.WNOHANG)[0] > 0:
            pass
    except ChildProcessError:
        pass


def _bound_the_judge(timeout: float, limits: Limits) -> None:
    """In the judge's process: it dies with its worker, at its deadline even if nobody kills it (SIGALRM's default
    action), and within Limits.judge_memory_mb of address space."""
    ctypes.CDLL(None).prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    signal.alarm(math.ceil(timeout + START_GRACE) + 1)
    memory = limits.judge_memory_mb * 1024 * 1024
    resource.setrlimit(resource.RLIMIT_AS, (memory, memory))


def run_job(job: dict, bwrap: str | None) -> Outcome:
    """One job, judged in a forked child that is killed with everything it started when the time is up."""
    timeout, limits = job["timeout"], Limits(**job["limits"])
    folder = None if bwrap else tempfile.mkdtemp(prefix="score-code-")
    read_end, write_end = os.pipe()
    child = os.fork()
    if child == 0:
        try:
            os.setsid()
            os.close(read_end)
            _bound_the_judge(timeout, limits)
            try:
                outcome = judge(job["program"], job["tests"], job["preamble"], timeout, limits, bwrap, folder)
            except BaseException as e:  # noqa: B036 - a broken judge is reported, never taken for a pass
                outcome = Outcome(False, f"error (judge: {type(e).__name__}: {str(e)[:200]})", "")
            with os.fdopen(write_end, "wb") as out:
                out.write(json.dumps(asdict(outcome)).encode())
        finally:
            os._exit(0)
    os.close(write_end)
    deadline, data, ended = time.monotonic() + timeout + START_GRACE, b"", False
    while not ended and (left := deadline - time.monotonic()) > 0:
        if select.select([read_end], [], [], left)[0]:
            chunk = os.read(read_end, 1 << 16)
            data, ended = data + chunk, not chunk
    os.close(read_end)
    if not ended:
        os.killpg(child, signal.SIGKILL)
    os.waitpid(child, 0)
    _reap()
    if folder:
        _remove(folder)
    if not ended:
        return Outcome(False, "timeout", "")
    try:
        return Outcome(**json.loads(data))
    except (ValueError, TypeError):
        return Outcome(False, "error (judge: no outcome)", "")


def serve() -> None:
    """The worker loop: argv[1] is {"bwrap": path or null}; one JSON job per line on stdin ({program, tests,
    preamble, timeout, limits}), one JSON outcome per line on stdout."""
    for number in (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1):
        signal.signal(number, signal.SIG_IGN)
    libc = ctypes.CDLL(None)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    bwrap = json.loads(sys.argv[1])["bwrap"]
    channel = os.fdopen(os.dup(1), "w")
    os.dup2(os.open(os.devnull, os.O_WRONLY), 1)  # stray prints of a forked judge never reach the channel
    while True:
        if not select.select([sys.stdin], [], [], 1.0)[0]:
            _reap()  # what ended below it since the last job (a killed judge's jail ends just after the judge)
            continue
        line = sys.stdin.readline()
        if not line:
            return
        channel.write(json.dumps(asdict(run_job(json.loads(line), bwrap))) + "\n")
        channel.flush()


class Worker:
    """One pre-started interpreter running serve()."""

    def __init__(self, bwrap: str | None) -> None:
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}  # -I: no PYTHON* variables, no user site
        command = [sys.executable, "-I", "-c", f"import sys; sys.path.insert(0, {PACKAGE_ROOT!r}); "
                   "from score.code.pool import serve; serve()", json.dumps({"bwrap": bwrap})]  # fmt: skip
        self.process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env, text=True)

    def run(self, job: dict) -> Outcome | None:
        """The outcome, or None when the worker died or did not answer in time."""
        try:
            self.process.stdin.write(json.dumps(job) + "\n")
            self.process.stdin.flush()
        except OSError:
            return None
        ready, _, _ = select.select([self.process.stdout], [], [], job["timeout"] + START_GRACE + WORKER_GRACE)
        line = self.process.stdout.readline() if ready else ""
        try:
            return Outcome(**json.loads(line))
        except (ValueError, TypeError):
            return None

    def close(self) -> None:
        self.process.kill()
        self.process.wait()
        for stream in (self.process.stdin, self.process.stdout):
            try:
                stream.close()
            except OSError:  # a worker that died idle: its stdin still holds the job it could not take
                pass


class _Batch:
    """The outcomes of one run() call, filled in by the slot threads."""

    def __init__(self, size: int) -> None:
        self.outcomes: list[Outcome | None] = [None] * size
        self.left, self.lock, self.done = size, threading.Lock(), threading.Event()

    def deliver(self, index: int, outcome: Outcome) -> None:
        self.outcomes[index] = outcome
        with self.lock:
            self.left -= 1
            if self.left == 0:
                self.done.set()


class Pool:
    """`workers` slots, each a thread and its warm worker; run() judges a batch of jobs over all of them."""

    def __init__(self, workers: int, bwrap: str | None, limits: Limits | None = None) -> None:
        self.bwrap, self.limits = bwrap, limits or Limits()
        self.tasks: queue.Queue = queue.Queue()
        self.slots = [threading.Thread(target=self._slot, daemon=True) for _ in range(workers)]
        for slot in self.slots:
            slot.start()

    def _slot(self) -> None:
        worker = Worker(self.bwrap)
        while (task := self.tasks.get()) is not None:
            batch, index, job = task
            if worker.process.poll() is not None:  # died while idle: the job has not started, so it loses nothing
                worker = self._replace(worker)
            outcome = worker.run(job)
            if outcome is None:  # lost or hung: replaced from this thread, which lives as long as the pool
                worker = self._replace(worker)
                outcome = Outcome(False, "error (worker lost)", "")
            batch.deliver(index, outcome)
        worker.close()

    def _replace(self, worker: Worker) -> Worker:
        worker.close()
        return Worker(self.bwrap)

    def run(self, jobs: list[tuple[str, str, str]], timeout: float) -> list[Outcome]:
        """Outcomes of (program, tests, preamble) jobs, in order."""
        batch = _Batch(len(jobs))
        limits = asdict(self.limits)
        for index, (program, tests, preamble) in enumerate(jobs):
            job = {"program": program, "tests": tests, "preamble": preamble, "timeout": timeout, "limits": limits}
            self.tasks.put((batch, index, job))
        if jobs:
            batch.done.wait()
        return batch.outcomes  # type: ignore[return-value]

    def close(self) -> None:
        for _ in self.slots:
            self.tasks.put(None)
        for slot in self.slots:
            slot.join()
