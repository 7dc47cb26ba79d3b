"""The verdict, decided outside the program: the tests run here, and the program's functions are proxies.

The program runs in its own interpreter in the jail (jail.py, server.py). Here, in a trusted process that the
program never runs in, the preamble (HumanEval's prompt: imports and helpers) and the tests (MBPP's setup and
asserts, HumanEval's check) run with the real builtins. Each name the tests take from the program (entry_points)
is a Remote: calling it sends the arguments to the program as plain data and gets back the return value as plain
data (wire.py), so `==`, `in`, `sorted` and every helper the tests use are this side's own, and the expected
values never leave this process. An object of no plain type that the program returns stays there and is a Remote
here too: it can be called, its attributes read and set, its truth value asked, and it equals only itself.
Whatever the program does, it can at most claim return values.
"""

from __future__ import annotations

import ast
import builtins
import os
import select
import signal
import subprocess
from dataclasses import dataclass

from score.code import jail, wire

MAX_REPLY_BYTES = 8 * 1024 * 1024
BUILTIN_ERRORS = {
    name: value for name, value in vars(builtins).items() if isinstance(value, type) and issubclass(value, Exception)
}


@dataclass(frozen=True)
class Outcome:
    passed: bool
    status: str  # passed | failed (why) | timeout | error (program: why) | error (tests: why) | error (judge: why)
    output: str  # the program's stdout and stderr, cut at Limits.output_bytes


class ProgramError(Exception):
    """The program raised something that is not a built-in Exception (its own class, SystemExit, ...)."""


class ProgramGone(Exception):
    """The program's interpreter ended or broke the protocol (it exited, was killed, or wrote a bad reply)."""


def entry_points(tests: ast.Module, preamble: ast.Module) -> list[str]:
    """The names the tests take from the program: those they read but neither bind themselves nor find among the
    builtins or the preamble's names, and the preamble's stubs (functions whose body is only a docstring, `pass`,
    `...` or imports), which the program is asked to write. A helper the preamble defines stays the preamble's."""
    bound, read = set(), set()
    for node in ast.walk(tests):
        if isinstance(node, ast.Name):
            (read if isinstance(node.ctx, ast.Load) else bound).add(node.id)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            bound.add(node.name)
        elif isinstance(node, ast.arg):
            bound.add(node.arg)
        elif isinstance(node, ast.alias):
            bound.add((node.asname or node.name).partition(".")[0])
        elif isinstance(node, ast.ExceptHandler) and node.name:
            bound.add(node.name)
    stubs, helpers = set(), set()
    for node in preamble.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and all(_empty(s) for s in node.body):
            stubs.add(node.name)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            helpers.add(node.name)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            helpers.update((a.asname or a.name).partition(".")[0] for a in node.names)
        else:
            helpers.update(n.id for n in ast.walk(node) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store))
    free = read - bound - set(dir(builtins)) - helpers
    return sorted(free | stubs)


def _empty(statement: ast.stmt) -> bool:
    """A statement of a stub: pass, a docstring or `...`, or an import (HumanEval 115's stub imports math)."""
    if isinstance(statement, (ast.Pass, ast.Import, ast.ImportFrom)):
        return True
    return isinstance(statement, ast.Expr) and isinstance(statement.value, ast.Constant)


class Program:
    """The program's interpreter and the one conversation with it: one request, one reply line. Between a reply
    and the next request the program is paused (SIGSTOP), so while the tests run here it uses no CPU: a job is
    one busy process at a time, whatever the program does."""

    def __init__(self, started: tuple[subprocess.Popen, int], output_bytes: int) -> None:
        (self.process, self.pid), self.output_bytes = started, output_bytes
        self.output, self.buffer = b"", b""

    def _signal(self, number: int) -> None:
        try:
            os.kill(self.pid, number)
        except ProcessLookupError:  # it ended; reading its reply will say so
            pass

    def _read_line(self) -> bytes:
        """The next reply line, reading the program's output beside it (so a chatty program does not block)."""
        replies, output = self.process.stdout.fileno(), self.process.stderr.fileno()
        streams = [replies, output]
        while b"\n" not in self.buffer:
            ready, _, _ = select.select(streams, [], [])
            for fd in ready:
                data = os.read(fd, 1 << 16)
                if fd == output:
                    if not data:
                        streams.remove(output)
                    self.output += data[: max(0, self.output_bytes - len(self.output))]
                elif not data:
                    raise ProgramGone("the program ended or closed its replies")
                else:
                    self.buffer += data
                    if len(self.buffer) > MAX_REPLY_BYTES:
                        raise ProgramGone(f"a reply of over {MAX_REPLY_BYTES} bytes")
        line, _, self.buffer = self.buffer.partition(b"\n")
        return line

    def ask(self, request: dict, args: tuple = (), kwargs: dict | None = None) -> object:
        """Send `request`; the decoded value of the reply, or raise what the program raised. `args` and `kwargs`
        are the test's own arguments of a call, updated with what the call left in them."""
        try:
            self._signal(signal.SIGCONT)
            self.process.stdin.write(wire.dumps(request))
            self.process.stdin.flush()
        except OSError as e:
            raise ProgramGone(f"the program stopped reading ({e.strerror})") from None
        try:
            line = self._read_line()
            self._signal(signal.SIGSTOP)
            reply = wire.loads(line)
            if "raised" in reply:
                name, message = str(reply["raised"])[:100], str(reply.get("message", ""))[:500]
                error = BUILTIN_ERRORS.get(name)
                raise error(message) if error else ProgramError(f"{name}: {message}")
            value = wire.decode(reply.get("value"), self.remote)
            self._update(args, kwargs or {}, reply.get("after", []))
        except wire.WireError as e:
            raise ProgramGone(f"a reply that is not plain data ({e})") from None
        return value

    def _update(self, args: tuple, kwargs: dict, after: object) -> None:
        """Give the test's own list, dict and set arguments the contents the call left them with."""
        if type(after) is not list:
            raise wire.WireError("'after' is not a list")
        for entry in after:
            if type(entry) is not list or len(entry) != 2:
                raise wire.WireError("an 'after' entry is not a pair")
            key, data = entry
            if type(key) is int and 0 <= key < len(args):
                original = args[key]
            elif type(key) is str and key in kwargs:
                original = kwargs[key]
            else:
                raise wire.WireError("an 'after' entry names no argument")
            new = wire.decode(data, self.remote)
            if type(new) is not type(original):
                raise wire.WireError("an argument changed its type")
            if type(original) is list:
                original[:] = new
            else:
                original.clear()
                original.update(new)

    def ref(self, value: object) -> list:
        if type(value) is Remote and value._program is self:
            return value._ref
        raise TypeError(f"a {type(value).__name__} cannot be sent to the program (plain data only)")

    def remote(self, ref: list) -> Remote:
        if len(ref) != 2 or type(ref[1]) not in (int, str):
            raise wire.WireError("a bad handle")
        return Remote(self, ref)

    def call(self, ref: list, args: tuple, kwargs: dict) -> object:
        request = {
            "op": "call",
            "target": ref,
            "args": [wire.encode(a, self.ref) for a in args],
            "kwargs": [[k, wire.encode(v, self.ref)] for k, v in kwargs.items()],
        }
        return self.ask(request, args, kwargs)

    def close(self) -> None:
        """End the program: the end of its requests makes it exit (its jail then ends in order); what it printed
        is in the pipe already (it flushes before each reply) and is kept."""
        self._signal(signal.SIGCONT)
        try:
            self.process.stdin.close()
        except OSError:  # its buffer could not be flushed into a pipe the program no longer reads
            pass
        try:
            self.process.wait(timeout=1.0)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        output = self.process.stderr.fileno()
        while select.select([output], [], [], 0)[0] and (data := os.read(output, 1 << 16)):
            self.output += data[: max(0, self.output_bytes - len(self.output))]
        self.process.stdout.close()
        self.process.stderr.close()


class Remote:
    """A name or an object of the program, seen from the tests: calls, attributes and truth go to the program."""

    __slots__ = ("_program", "_ref")

    def __init__(self, program: Program, ref: list) -> None:
        object.__setattr__(self, "_program", program)
        object.__setattr__(self, "_ref", ref)

    def __call__(self, *args, **kwargs):
        return self._program.call(self._ref, args, kwargs)

    def __getattr__(self, name: str):
        if name.startswith("__"):
            raise AttributeError(name)
        return self._program.ask({"op": "getattr", "target": self._ref, "name": name})

    def __setattr__(self, name: str, value) -> None:
        encoded = wire.encode(value, self._program.ref)
        self._program.ask({"op": "setattr", "target": self._ref, "name": name, "value": encoded})

    def __bool__(self) -> bool:
        value = self._program.ask({"op": "bool", "target": self._ref})
        if type(value) is not bool:
            raise ProgramGone("a truth value that is not a bool")
        return value

    def __eq__(self, other: object) -> bool:
        return type(other) is Remote and other._program is self._program and other._ref == self._ref

    def __hash__(self) -> int:
        return hash((id(self._program), *self._ref))

    def __repr__(self) -> str:
        return f"<the program's {self._ref[1] if self._ref[0] == 'g' else f'object #{self._ref[1]}'}>"


def judge(program: str, tests: str, preamble: str, timeout: float, limits: jail.Limits, bwrap: str | None,
          folder: str | None = None) -> Outcome:  # fmt: skip
    """Run `tests` against `program` (the preamble runs before both): passed only when the tests ran to their end.
    The program runs in the jail of `bwrap`, or unjailed in `folder` when bwrap is None."""
    try:
        tests_tree, preamble_tree = ast.parse(tests), ast.parse(preamble)
        tests_code = compile(tests_tree, "<tests>", "exec")
        preamble_code = compile(preamble_tree, "<preamble>", "exec")
    except (SyntaxError, ValueError) as e:
        return Outcome(False, f"error (tests: {type(e).__name__}: {e})", "")
    remote = Program(jail.start(bwrap, timeout, limits, folder), limits.output_bytes)
    try:
        status = _run(
            remote, f"{preamble}\n{program}", preamble_code, tests_code, entry_points(tests_tree, preamble_tree)
        )
    finally:
        remote.close()
    return Outcome(status == "passed", status, remote.output.decode(errors="replace"))


def _run(remote: Program, source: str, preamble_code, tests_code, names: list[str]) -> str:
    try:
        remote.ask({"program": source})
    except ProgramGone as e:
        return f"error (program: {e})"
    except Exception as e:
        return f"error (program: {type(e).__name__} while loading: {str(e)[:200]})"
    namespace = {"__name__": "__main__", "__builtins__": builtins}
    try:
        exec(preamble_code, namespace)
    except Exception as e:
        return f"error (tests: the preamble raised {type(e).__name__}: {str(e)[:200]})"
    namespace.update({name: Remote(remote, ["g", name]) for name in names})
    try:
        exec(tests_code, namespace)
    except ProgramGone as e:
        return f"error (program: {e})"
    except Exception as e:
        return f"failed ({type(e).__name__}{f': {str(e)[:200]}' if str(e) else ''}{_tests_line(e)})"
    return "passed"


def _tests_line(error: BaseException) -> str:
    """' at tests line N': the tests' last line the error passed through."""
    line, frame = None, error.__traceback__
    while frame is not None:
        if frame.tb_frame.f_code.co_filename == "<tests>":
            line = frame.tb_lineno
        frame = frame.tb_next
    return f" at tests line {line}" if line else ""
