"""A pool of warm sandbox workers (sandbox.py), one thread per worker feeding it jobs over a pipe.

A worker that does not answer within the job's timeout plus WORKER_GRACE is killed and replaced, so a call returns
in time even if a worker hangs. What the machine does not enforce is printed once, in one line, when the first pool
starts.
"""

from __future__ import annotations

import json
import os
import queue
import select
import subprocess
import sys
import threading
from dataclasses import asdict
from pathlib import Path

from score.code.sandbox import Limits, Outcome

WORKER_GRACE = 5.0  # seconds beyond a job's timeout before its worker counts as lost
PACKAGE_ROOT = str(Path(__file__).resolve().parents[2])  # the folder holding score/
_WARNED = [False]


class Worker:
    """One pre-started interpreter running sandbox.serve()."""

    def __init__(self) -> None:
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}  # -I: no PYTHON* variables, no user site
        command = [sys.executable, "-I", "-c", f"import sys; sys.path.insert(0, {PACKAGE_ROOT!r}); "
                   "from score.code.sandbox import serve; serve()"]  # fmt: skip
        self.process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env, text=True)
        hello = self._read(60.0)
        if hello is None:
            self.close()
            raise RuntimeError("a code sandbox worker did not start")
        self.gaps: list[str] = json.loads(hello)["gaps"]

    def _read(self, timeout: float) -> str | None:
        ready, _, _ = select.select([self.process.stdout], [], [], timeout)
        line = self.process.stdout.readline() if ready else ""
        return line or None

    def run(self, program: str, tests: str, timeout: float, limits: Limits) -> Outcome | None:
        """The outcome, or None when the worker died or hung (it is then closed)."""
        job = {"program": program, "tests": tests, "timeout": timeout, "limits": asdict(limits)}
        try:
            self.process.stdin.write(json.dumps(job) + "\n")
            self.process.stdin.flush()
        except OSError:
            self.close()
            return None
        line = self._read(timeout + WORKER_GRACE)
        if line is None:
            self.close()
            return None
        return Outcome(**json.loads(line))

    def close(self) -> None:
        self.process.kill()
        self.process.wait()
        for stream in (self.process.stdin, self.process.stdout):
            stream.close()


class Pool:
    """`workers` warm workers; run() judges a batch of (program, tests) over all of them."""

    def __init__(self, workers: int, limits: Limits | None = None) -> None:
        self.limits = limits or Limits()
        self.workers = [Worker() for _ in range(workers)]
        gaps = self.workers[0].gaps
        if gaps and not _WARNED[0]:
            _WARNED[0] = True
            print(f"code sandbox: not enforced on this machine: {'; '.join(gaps)}", file=sys.stderr)

    def run(self, jobs: list[tuple[str, str]], timeout: float) -> list[Outcome]:
        """Outcomes of `jobs`, in order; a lost worker's job fails and the worker is replaced."""
        outcomes: list[Outcome | None] = [None] * len(jobs)
        todo: queue.Queue[int] = queue.Queue()
        for i in range(len(jobs)):
            todo.put(i)

        def feed(slot: int) -> None:
            while True:
                try:
                    i = todo.get_nowait()
                except queue.Empty:
                    return
                outcome = self.workers[slot].run(*jobs[i], timeout, self.limits)
                if outcome is None:
                    outcome = Outcome(False, "error (worker lost)", "")
                    self.workers[slot] = Worker()
                outcomes[i] = outcome

        threads = [threading.Thread(target=feed, args=(slot,)) for slot in range(len(self.workers))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        return outcomes  # type: ignore[return-value]

    def close(self) -> None:
        for worker in self.workers:
            worker.close()
