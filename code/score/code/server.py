"""The tested program's side: a fresh interpreter inside the jail that loads the program and answers the judge.

Run by jail.py as `python -E -s -S -B server.py LIMITS FILTER` with wire.py beside it; it imports nothing of the
project. It puts the limits and the PROGRAM seccomp filter (seccomp.py, passed in as hex) on itself, reads the
program from the judge, runs it, then serves requests until the judge closes the pipe: call a global of the
program or an object it returned, read or set an attribute, take a truth value. Each reply is plain data
(wire.py): the return value (an object of no plain type stays here and goes out as a handle), the new contents
of list, dict and set arguments the call changed, or the name and message of what it raised.

Nothing here is trusted: the program runs in this process and may replace any of it. What it can do is bounded
by the jail and the judge: it can claim return values, and nothing else reaches the tests.
"""

import ctypes
import json
import os
import resource
import sys

import wire

PR_SET_NO_NEW_PRIVS, PR_SET_SECCOMP, SECCOMP_MODE_FILTER = 38, 22, 2
MUTABLE = (list, dict, set)
# A subclass of a plain type goes out as its plain value (Counter and defaultdict as a dict, a namedtuple as a
# tuple), as it would compare in plain Python; bool is an int subclass and goes out as itself before this is asked.
PLAIN_BASES = (dict, list, tuple, set, frozenset, str, bytes, int, float, complex)


class _Program:
    def __init__(self) -> None:
        self.namespace: dict = {"__name__": "__main__"}
        self.objects: list = []  # what handles point to, kept alive for the program's life

    def other(self, value: object) -> object:
        """A plain type's subclass as its plain value, an iterator's items, or a handle to an object that stays."""
        base = next((b for b in PLAIN_BASES if isinstance(value, b)), None)
        if base is not None:
            return wire.encode(base(value), self.other, 1)
        if hasattr(type(value), "__next__"):
            return ["it", *(wire.encode(item, self.other, 1) for item in wire.items(value))]
        self.objects.append(value)
        return ["h", len(self.objects) - 1]

    def remote(self, ref: list) -> object:
        if ref[0] == "h" and type(ref[1]) is int and 0 <= ref[1] < len(self.objects):
            return self.objects[ref[1]]
        if ref[0] == "g" and ref[1:] and ref[1] in self.namespace:
            return self.namespace[ref[1]]
        raise NameError(f"the program defines no {str(ref[1:])[:60]}")

    def encode(self, value: object) -> object:
        return wire.encode(value, self.other)

    def answer(self, request: dict) -> dict:
        target = wire.decode(request.get("target"), self.remote)
        op = request.get("op")
        if op == "call":
            args = [wire.decode(a, self.remote) for a in request["args"]]
            kwargs = {k: wire.decode(v, self.remote) for k, v in request["kwargs"]}
            value = target(*args, **kwargs)
            after = [[i, self.encode(a)] for i, a in enumerate(args) if type(a) in MUTABLE]
            after += [[k, self.encode(v)] for k, v in kwargs.items() if type(v) in MUTABLE]
            return {"value": self.encode(value), "after": after}
        if op == "getattr":
            return {"value": self.encode(getattr(target, request["name"]))}
        if op == "setattr":
            setattr(target, request["name"], wire.decode(request["value"], self.remote))
            return {"value": None}
        if op == "bool":
            return {"value": bool(target)}
        raise ValueError(f"unknown request {str(op)[:40]!r}")


def _raised(error: BaseException) -> dict:
    try:
        message = str(error)[:500]
    except BaseException:  # noqa: B036 - a program's exception whose __str__ fails still gets its name reported
        message = ""
    return {"raised": type(error).__name__, "message": message}


def _limit(limits: dict) -> None:
    mib = 1024 * 1024
    for kind, value in (
        (resource.RLIMIT_CPU, limits["cpu_seconds"]),
        (resource.RLIMIT_AS, limits["memory_mb"] * mib),
        (resource.RLIMIT_FSIZE, limits["file_mb"] * mib),
        (resource.RLIMIT_NOFILE, limits["open_files"]),
        (resource.RLIMIT_CORE, 0),
        (resource.RLIMIT_SIGPENDING, 64),  # queued signals and message-queue bytes count per user on the host
        (resource.RLIMIT_MSGQUEUE, 0),
    ):
        resource.setrlimit(kind, (value, value))


def _filter(program: bytes) -> None:
    """Install the seccomp filter `program` (sock_filter array bytes) on this process, after no_new_privs."""
    libc = ctypes.CDLL(None, use_errno=True)
    buffer = ctypes.create_string_buffer(program, len(program))

    class Fprog(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]

    fprog = Fprog(len(program) // 8, ctypes.addressof(buffer))
    if libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 or libc.prctl(
        PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.byref(fprog), 0, 0
    ):
        raise OSError(ctypes.get_errno(), "the seccomp filter could not be installed")


def main() -> None:
    requests = os.fdopen(os.dup(0), "rb")
    replies = os.fdopen(os.dup(1), "wb")
    os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
    os.dup2(2, 1)  # the program's prints join its errors: the output the judge keeps, apart from the replies
    _limit(json.loads(sys.argv[1]))
    _filter(bytes.fromhex(sys.argv[2]))
    program = _Program()
    receive = requests.readline

    def send(message: dict) -> None:
        for stream in (sys.stdout, sys.stderr):  # the program's prints reach the judge before the reply does
            try:
                stream.flush()
            except BaseException:  # noqa: B036 - a stream the program closed or replaced
                pass
        replies.write(wire.dumps(message))
        replies.flush()

    try:
        source = wire.loads(receive())["program"]
        exec(compile(source, "<program>", "exec"), program.namespace)
        reply = {"value": None}
    except BaseException as error:  # noqa: B036 - SystemExit and KeyboardInterrupt are the program's answer too
        reply = _raised(error)
    send(reply)
    for line in iter(receive, b""):
        try:
            reply = program.answer(wire.loads(line))
        except BaseException as error:  # noqa: B036
            reply = _raised(error)
        try:
            send(reply)
        except BaseException as error:  # noqa: B036 - a reply that cannot be written (too deep, too large)
            send(_raised(error))
    os._exit(0)  # the judge closed the pipe: done, and nothing of the program's runs at exit


if __name__ == "__main__":
    main()
