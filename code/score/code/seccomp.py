"""Seccomp filters as classic BPF: the system calls a tested program may not make, refused by the kernel.

Two filters come from one builder. JAIL is what bubblewrap installs before it starts the interpreter: the kernel's
rarely needed, often attacked interfaces (mounts, namespaces, keyrings, BPF, io_uring, ptrace, modules, sockets).
PROGRAM adds new programs, processes and threads; the interpreter installs it on itself before it reads the
program (server.py), so each tested program is one process of one thread and cannot start another. A call on
the list fails with EPERM (clone3 with ENOSYS, so the C library falls back to clone, which is refused); a call
from another architecture's ABI (x32, 32-bit ARM) kills the process.
"""

from __future__ import annotations

import platform
import struct

# struct seccomp_data: nr at offset 0, arch at offset 4. BPF opcodes (linux/filter.h, linux/seccomp.h).
LOAD_WORD, JUMP_EQUAL, JUMP_AT_LEAST, RETURN = 0x20, 0x15, 0x35, 0x06
KILL_PROCESS, ALLOW, ERRNO = 0x80000000, 0x7FFF0000, 0x00050000
EPERM, ENOSYS = 1, 38
X32_BIT = 0x40000000  # x86-64 system calls with this bit set are the x32 ABI's

JAIL = (
    "ptrace", "process_vm_readv", "process_vm_writev", "mount", "umount2", "pivot_root", "chroot", "unshare",
    "setns", "bpf", "perf_event_open", "keyctl", "add_key", "request_key", "userfaultfd", "io_uring_setup",
    "io_uring_enter", "io_uring_register", "kexec_load", "kexec_file_load", "init_module", "finit_module",
    "delete_module", "reboot", "swapon", "swapoff", "acct", "quotactl", "syslog", "personality",
    "open_by_handle_at", "name_to_handle_at", "iopl", "ioperm", "mknod", "mknodat", "socket", "socketpair",
    "fsopen", "fsconfig", "fsmount", "fspick", "move_mount", "open_tree", "mount_setattr", "pidfd_getfd",
    "settimeofday", "clock_settime", "adjtimex", "clock_adjtime", "lookup_dcookie", "vhangup", "uselib",
    "memfd_create",
    # counted per user on the whole host, so a program could use up its user's share (inotify, fanotify, POSIX
    # message queues), or read and set which pages of a shared file are cached: a channel to later programs
    "inotify_init", "inotify_init1", "inotify_add_watch", "inotify_rm_watch", "fanotify_init", "fanotify_mark",
    "mq_open", "mq_unlink", "mq_timedsend", "mq_timedreceive", "mq_notify", "mq_getsetattr", "mincore",
    "fadvise64", "readahead", "cachestat",
)  # fmt: skip
PROGRAM = JAIL + ("execve", "execveat", "fork", "vfork", "clone", "clone3")

# System call numbers (asm/unistd_64.h; asm-generic/unistd.h for aarch64, which has no fork, vfork, mknod, iopl,
# ioperm, uselib or inotify_init; cachestat is 451 on both) and the AUDIT_ARCH value the kernel reports for each.
ARCHITECTURES = {
    "x86_64": (0xC000003E, {
        "ptrace": 101, "process_vm_readv": 310, "process_vm_writev": 311, "mount": 165, "umount2": 166,
        "pivot_root": 155, "chroot": 161, "unshare": 272, "setns": 308, "bpf": 321, "perf_event_open": 298,
        "keyctl": 250, "add_key": 248, "request_key": 249, "userfaultfd": 323, "io_uring_setup": 425,
        "io_uring_enter": 426, "io_uring_register": 427, "kexec_load": 246, "kexec_file_load": 320,
        "init_module": 175, "finit_module": 313, "delete_module": 176, "reboot": 169, "swapon": 167, "swapoff": 168,
        "acct": 163, "quotactl": 179, "syslog": 103, "personality": 135, "open_by_handle_at": 304,
        "name_to_handle_at": 303, "iopl": 172, "ioperm": 173, "mknod": 133, "mknodat": 259, "socket": 41,
        "socketpair": 53, "fsopen": 430, "fsconfig": 431, "fsmount": 432, "fspick": 433, "move_mount": 429,
        "open_tree": 428, "mount_setattr": 442, "pidfd_getfd": 438, "settimeofday": 164, "clock_settime": 227,
        "adjtimex": 159, "clock_adjtime": 305, "lookup_dcookie": 212, "vhangup": 153, "uselib": 134,
        "memfd_create": 319, "execve": 59, "execveat": 322, "fork": 57, "vfork": 58, "clone": 56, "clone3": 435,
        "inotify_init": 253, "inotify_init1": 294, "inotify_add_watch": 254, "inotify_rm_watch": 255,
        "fanotify_init": 300, "fanotify_mark": 301, "mq_open": 240, "mq_unlink": 241, "mq_timedsend": 242,
        "mq_timedreceive": 243, "mq_notify": 244, "mq_getsetattr": 245, "mincore": 27, "fadvise64": 221,
        "readahead": 187, "cachestat": 451,
    }),
    "aarch64": (0xC00000B7, {
        "ptrace": 117, "process_vm_readv": 270, "process_vm_writev": 271, "mount": 40, "umount2": 39,
        "pivot_root": 41, "chroot": 51, "unshare": 97, "setns": 268, "bpf": 280, "perf_event_open": 241,
        "keyctl": 219, "add_key": 217, "request_key": 218, "userfaultfd": 282, "io_uring_setup": 425,
        "io_uring_enter": 426, "io_uring_register": 427, "kexec_load": 104, "kexec_file_load": 294,
        "init_module": 105, "finit_module": 273, "delete_module": 106, "reboot": 142, "swapon": 224, "swapoff": 225,
        "acct": 89, "quotactl": 60, "syslog": 116, "personality": 92, "open_by_handle_at": 265,
        "name_to_handle_at": 264, "mknodat": 33, "socket": 198, "socketpair": 199, "fsopen": 430, "fsconfig": 431,
        "fsmount": 432, "fspick": 433, "move_mount": 429, "open_tree": 428, "mount_setattr": 442,
        "pidfd_getfd": 438, "settimeofday": 170, "clock_settime": 112, "adjtimex": 171, "clock_adjtime": 266,
        "lookup_dcookie": 18, "vhangup": 58, "memfd_create": 279, "execve": 221, "execveat": 281, "clone": 220,
        "clone3": 435, "inotify_init1": 26, "inotify_add_watch": 27, "inotify_rm_watch": 28, "fanotify_init": 262,
        "fanotify_mark": 263, "mq_open": 180, "mq_unlink": 181, "mq_timedsend": 182, "mq_timedreceive": 183,
        "mq_notify": 184, "mq_getsetattr": 185, "mincore": 232, "fadvise64": 223, "readahead": 213,
        "cachestat": 451,
    }),
}  # fmt: skip


def _instruction(code: int, k: int, jump_true: int = 0, jump_false: int = 0) -> bytes:
    return struct.pack("=HBBI", code, jump_true, jump_false, k)  # struct sock_filter


def build_filter(denied: tuple[str, ...], machine: str | None = None) -> bytes:
    """The filter refusing `denied` on `machine` (platform.machine() when None), as the bytes of a sock_filter
    array: what bubblewrap's --seccomp reads and prctl(PR_SET_SECCOMP) takes. ValueError on another machine."""
    machine = machine or platform.machine()
    if machine not in ARCHITECTURES:
        raise ValueError(f"no seccomp filter for the {machine} architecture (known: {', '.join(ARCHITECTURES)})")
    arch, numbers = ARCHITECTURES[machine]
    refused = [(numbers[name], ERRNO | (ENOSYS if name == "clone3" else EPERM)) for name in denied if name in numbers]
    program = [_instruction(LOAD_WORD, 4), _instruction(JUMP_EQUAL, arch, 1, 0), _instruction(RETURN, KILL_PROCESS)]
    program.append(_instruction(LOAD_WORD, 0))
    if machine == "x86_64":
        program += [_instruction(JUMP_AT_LEAST, X32_BIT, 0, 1), _instruction(RETURN, KILL_PROCESS)]
    for number, action in refused:
        program += [_instruction(JUMP_EQUAL, number, 0, 1), _instruction(RETURN, action)]
    program.append(_instruction(RETURN, ALLOW))
    return b"".join(program)
