"""A warm worker that runs one untrusted program and its tests at a time, each in a fresh sandboxed process.

The worker is a pre-started interpreter (started by pool.py, one per core) that has imported everything once. For
each job it forks a child that calls setsid (its own process group) and enters a new PID namespace; the child forks
the judged process, which is PID 1 of that namespace, so when it dies the kernel kills everything it forked or
daemonised. The judged process gets its own empty temporary folder as working directory, a clean environment,
stdin on /dev/null, stdout and stderr into a pipe the worker reads up to a cap, resource limits (CPU time, address
space, file size, open files, and processes once it runs as an unprivileged uid), and the audit hook of harness.py.
The worker itself runs in its own network namespace (no interfaces up). At the deadline the worker SIGKILLs the
child's process group, then, as a child subreaper, every process left below it, so each job returns within its
timeout plus a small constant. The verdict is the random token the harness writes to a pipe only the worker reads.
"""

from __future__ import annotations

import ctypes
import json
import math
import os
import resource
import secrets
import select
import shutil
import signal
import sys
import tempfile
import time
from dataclasses import asdict, dataclass

from score.code.harness import judge

CLONE_NEWNET, CLONE_NEWPID, CLONE_NEWUSER = 0x40000000, 0x20000000, 0x10000000
PR_SET_PDEATHSIG, PR_SET_KEEPCAPS, PR_SET_CHILD_SUBREAPER = 1, 8, 36
CAPABILITY_VERSION_3, CAP_DAC_READ_SEARCH = 0x20080522, 2
SANDBOX_UID = 65534  # nobody: owns nothing, so writes outside its folder fail and its process count is its own
PRELOAD = ("collections", "functools", "heapq", "itertools", "math", "random", "re", "statistics", "string", "typing")
KILL_GRACE = 0.5  # seconds after the deadline for the kill and the reaping
_LIBC = ctypes.CDLL(None, use_errno=True)
ROOT = os.geteuid() == 0  # on the host, before any user namespace
DROP_UID = ROOT  # programs run as SANDBOX_UID; isolate_worker turns it off where switching fails


@dataclass(frozen=True)
class Limits:
    """What one program may use."""

    memory_mb: int = 2048  # address space
    output_bytes: int = 64 * 1024  # stdout and stderr kept; the rest is read and dropped
    file_mb: int = 16  # largest file it may write
    open_files: int = 64
    processes: int = 64  # processes and threads of the sandbox uid (root only: it needs a uid of its own)


@dataclass(frozen=True)
class Outcome:
    passed: bool
    status: str  # passed | failed | timeout | error (and why)
    output: str  # stdout and stderr, cut at Limits.output_bytes


def _unshare(flags: int) -> bool:
    return _LIBC.unshare(flags) == 0


def _prctl(option: int, value: int) -> None:
    _LIBC.prctl(option, value, 0, 0, 0)


def _keep_only_read_capability() -> None:
    """After setuid with PR_SET_KEEPCAPS: keep CAP_DAC_READ_SEARCH alone, so the sandbox uid can still read the
    interpreter's files where they live under a private home (as /root/.pyenv here), and nothing else."""
    header = (ctypes.c_uint32 * 2)(CAPABILITY_VERSION_3, 0)
    data = (ctypes.c_uint32 * 6)(1 << CAP_DAC_READ_SEARCH, 1 << CAP_DAC_READ_SEARCH, 0, 0, 0, 0)
    if _LIBC.capset(header, data) != 0:
        raise OSError(ctypes.get_errno(), "capset failed")


def _drop_to_sandbox_uid(processes: int) -> None:
    _prctl(PR_SET_KEEPCAPS, 1)
    os.setgroups([])
    os.setgid(SANDBOX_UID)
    os.setuid(SANDBOX_UID)
    _keep_only_read_capability()
    resource.setrlimit(resource.RLIMIT_NPROC, (processes, processes))


def _works_in_a_child(action) -> bool:
    """Whether `action()` runs without error in a forked child (which then exits)."""
    child = os.fork()
    if child == 0:
        try:
            action()
            os._exit(0)
        finally:
            os._exit(1)
    return os.waitstatus_to_exitcode(os.waitpid(child, 0)[1]) == 0


def _probe_sandbox_uid() -> None:
    _drop_to_sandbox_uid(Limits().processes)
    with open(os.__file__, "rb"):
        pass


def _probe_pid_namespace() -> None:
    if not _unshare(CLONE_NEWPID):
        raise OSError(ctypes.get_errno(), "unshare(CLONE_NEWPID) failed")


def isolate_worker() -> list[str]:
    """Enter a network namespace (with a user namespace when not root); what is not enforced, as phrases."""
    global DROP_UID
    gaps = []
    if ROOT:
        ok = _unshare(CLONE_NEWNET)
    else:
        uid, gid = os.getuid(), os.getgid()
        ok = _unshare(CLONE_NEWUSER | CLONE_NEWNET)
        if ok:
            for name, text in (("setgroups", "deny"), ("uid_map", f"0 {uid} 1"), ("gid_map", f"0 {gid} 1")):
                with open(f"/proc/self/{name}", "w") as f:
                    f.write(text)
        gaps.append("an own uid and a process count (not root: writes are checked by the audit hook only)")
    if not ok:
        gaps.append("network isolation (no network namespace: sockets are refused by the audit hook only)")
    if ROOT and not _works_in_a_child(_probe_sandbox_uid):
        DROP_UID = False
        gaps.append("an own uid and a process count (uid 65534 cannot be used or cannot read the interpreter)")
    if not _works_in_a_child(_probe_pid_namespace):
        gaps.append("a PID namespace per program (forked children are killed through the process group only)")
    return gaps


def _enter_sandbox(folder: str, out_fd: int, verdict_fd: int, timeout: float, limits: Limits) -> int:
    """In the judged process: descriptors, folder, environment, limits, uid. Returns the verdict descriptor."""
    null = os.open(os.devnull, os.O_RDONLY)
    for target, fd in ((0, null), (1, out_fd), (2, out_fd), (3, verdict_fd)):
        if fd != target:
            os.dup2(fd, target)
    os.closerange(4, resource.getrlimit(resource.RLIMIT_NOFILE)[0])
    os.chdir(folder)
    os.environ.clear()
    os.environ.update({"PATH": "/usr/bin:/bin", "HOME": folder, "TMPDIR": folder, "LANG": "C.UTF-8"})
    mib = 1024 * 1024
    for kind, value in (
        (resource.RLIMIT_CPU, math.ceil(timeout) + 1),
        (resource.RLIMIT_AS, limits.memory_mb * mib),
        (resource.RLIMIT_FSIZE, limits.file_mb * mib),
        (resource.RLIMIT_NOFILE, limits.open_files),
        (resource.RLIMIT_CORE, 0),
    ):
        resource.setrlimit(kind, (value, value))
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # too large a file: an error to the program, not a kill
    if DROP_UID:
        _drop_to_sandbox_uid(limits.processes)
    _prctl(PR_SET_PDEATHSIG, signal.SIGKILL)  # after setuid, which clears it: the child's death kills this one
    return 3


def _child(program: str, tests: str, token: str, folder: str, pipes: tuple[int, int], timeout: float, limits: Limits):
    """The forked child: own process group, own PID namespace, then the judged process as PID 1 in it."""
    os.setsid()
    _unshare(CLONE_NEWPID)  # without it (see isolate_worker) the judged process is a plain child
    out_fd, verdict_fd = pipes
    judged = os.fork()
    if judged:
        os.close(out_fd)
        os.close(verdict_fd)
        code = os.waitstatus_to_exitcode(os.waitpid(judged, 0)[1])
        os._exit(code if code >= 0 else 128 - code)
    fd = _enter_sandbox(folder, out_fd, verdict_fd, timeout, limits)
    judge(program, tests, folder, fd, token)


def _descendants() -> list[int]:
    pids = []
    for task in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{task}/children") as f:
                pids += [int(p) for p in f.read().split()]
        except OSError:
            continue
    return pids


def _kill_all(group: int) -> None:
    """SIGKILL the job's process group, then every process left below this subreaper, and reap them."""
    try:
        os.killpg(group, signal.SIGKILL)
    except ProcessLookupError:
        pass
    for _ in range(100):
        pids = _descendants()
        if not pids:
            return
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
            except (ProcessLookupError, ChildProcessError):
                pass


def run_job(program: str, tests: str, timeout: float, limits: Limits) -> Outcome:
    """Judge one program in a fresh sandboxed process; returns within timeout + KILL_GRACE."""
    deadline = time.monotonic() + timeout
    folder = tempfile.mkdtemp(prefix="score-code-")
    if DROP_UID:
        os.chown(folder, SANDBOX_UID, SANDBOX_UID)
    out_r, out_w = os.pipe()
    verdict_r, verdict_w = os.pipe()
    token = secrets.token_hex(16)  # a local only: frames are out of the program's reach, module globals are not
    child = os.fork()
    if child == 0:
        try:
            os.close(out_r)
            os.close(verdict_r)
            _child(program, tests, token, folder, (out_w, verdict_w), timeout, limits)
        finally:
            os._exit(4)
    os.close(out_w)
    os.close(verdict_w)
    output, verdict, open_fds = b"", b"", {out_r, verdict_r}
    while verdict_r in open_fds and time.monotonic() < deadline:
        ready, _, _ = select.select(list(open_fds), [], [], max(0.0, deadline - time.monotonic()))
        for fd in ready:
            data = os.read(fd, 65536)
            if not data:
                open_fds.discard(fd)
            elif fd == out_r:
                output += data[: max(0, limits.output_bytes - len(output))]
            else:
                verdict += data[:128]
    timed_out = verdict_r in open_fds
    _kill_all(child)
    os.close(out_r)
    os.close(verdict_r)
    shutil.rmtree(folder, ignore_errors=True)
    text = output.decode(errors="replace")
    if verdict == (token + "\n").encode():
        return Outcome(True, "passed", text)
    return Outcome(False, "timeout" if timed_out else "failed", text)


def serve() -> None:
    """The worker loop: one JSON job per line on stdin ({program, tests, timeout, limits}), one JSON outcome per
    line on stdout; the first line out lists what this machine does not enforce ({"gaps": [...]})."""
    for number in (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1):
        signal.signal(number, signal.SIG_IGN)  # the training process handles these; it still needs this worker
    _prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    _prctl(PR_SET_CHILD_SUBREAPER, 1)
    for name in PRELOAD:
        __import__(name)
    channel = os.fdopen(os.dup(1), "w")
    os.dup2(os.open(os.devnull, os.O_WRONLY), 1)  # stray prints of a forked child never reach the channel
    channel.write(json.dumps({"gaps": isolate_worker()}) + "\n")
    channel.flush()
    for line in sys.stdin:
        job = json.loads(line)
        outcome = run_job(job["program"], job["tests"], job["timeout"], Limits(**job["limits"]))
        channel.write(json.dumps(asdict(outcome)) + "\n")
        channel.flush()


if __name__ == "__main__":
    serve()
