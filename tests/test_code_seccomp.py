"""The seccomp filters, checked instruction by instruction against a hand assembly, and by the kernel."""

import struct

import pytest
from score.code import seccomp


def instructions(program: bytes) -> list[tuple[int, int, int, int]]:
    return [struct.unpack("=HBBI", program[i : i + 8]) for i in range(0, len(program), 8)]


def test_a_filter_by_hand():
    # load arch; if x86-64 skip the kill; load nr; x32 -> kill; ptrace -> EPERM; clone3 -> ENOSYS; allow
    assert instructions(seccomp.build_filter(("ptrace", "clone3", "fork"), "x86_64")) == [
        (0x20, 0, 0, 4),
        (0x15, 1, 0, 0xC000003E),
        (0x06, 0, 0, 0x80000000),
        (0x20, 0, 0, 0),
        (0x35, 0, 1, 0x40000000),
        (0x06, 0, 0, 0x80000000),
        (0x15, 0, 1, 101),
        (0x06, 0, 0, 0x00050001),
        (0x15, 0, 1, 435),
        (0x06, 0, 0, 0x00050026),
        (0x15, 0, 1, 57),
        (0x06, 0, 0, 0x00050001),
        (0x06, 0, 0, 0x7FFF0000),
    ]
    arm = instructions(seccomp.build_filter(("fork", "clone"), "aarch64"))  # aarch64 has no fork: clone only
    assert arm[1] == (0x15, 1, 0, 0xC00000B7) and arm[4:] == [
        (0x15, 0, 1, 220),
        (0x06, 0, 0, 0x50001),
        (6, 0, 0, 0x7FFF0000),
    ]


def test_every_listed_call_has_a_number_on_each_architecture():
    for machine, (_, numbers) in seccomp.ARCHITECTURES.items():
        missing = set(seccomp.PROGRAM) - set(numbers)
        assert missing <= {"fork", "vfork", "mknod", "iopl", "ioperm", "uselib", "inotify_init"}, machine
        assert machine != "x86_64" or not missing
        assert len(set(numbers.values())) == len(numbers)  # no number given to two names


def test_an_unknown_architecture_is_refused():
    with pytest.raises(ValueError, match="no seccomp filter for the riscv64 architecture"):
        seccomp.build_filter(seccomp.JAIL, "riscv64")
