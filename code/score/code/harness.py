"""What runs inside the sandboxed process: the guard, the program, then its tests with strict checks.

A program can only fake a pass by reaching what the harness alone holds: the verdict token (a local of the
sandbox's frames, written to the verdict pipe after the last test) and the check functions the rewritten tests
call (locals too, in a namespace the program never sees). The audit hook refuses every Python route to another
frame or to raw memory (sys._getframe, tracebacks' and generators' frames, gc, settrace, signal handlers, ctypes,
/proc), so those stay out of reach. Each `assert` of the tests is rewritten so that every comparison, `not` and
truth test goes through a check that first requires plain data of exact built-in types: an object whose __eq__
always says True, an int subclass included, fails there.
"""

from __future__ import annotations

import ast
import builtins
import importlib
import operator
import os
import sys
import types
from collections.abc import Callable

COMPARE_OPS = {
    "Eq": operator.eq,
    "NotEq": operator.ne,
    "Lt": operator.lt,
    "LtE": operator.le,
    "Gt": operator.gt,
    "GtE": operator.ge,
    "Is": operator.is_,
    "IsNot": operator.is_not,
    "In": lambda a, b: a in b,
    "NotIn": lambda a, b: a not in b,
}
# Audit events a tested program may not raise: new programs, network, another frame, raw memory, hooks.
BLOCKED_EVENTS = frozenset(
    {
        "os.system", "os.exec", "os.posix_spawn", "os.spawn", "os.fork", "os.forkpty", "os.kill", "os.killpg",
        "subprocess.Popen", "pty.spawn", "os.startfile", "os.chdir", "os.chroot",
        "socket.__new__", "socket.connect", "socket.bind", "socket.getaddrinfo", "socket.sendto",
        "sys._getframe", "sys._current_frames", "sys._current_exceptions", "sys.settrace", "sys.setprofile",
        "sys.addaudithook", "gc.get_objects", "gc.get_referrers", "gc.get_referents", "signal.pthread_kill",
    }
)  # fmt: skip
BLOCKED_ATTRIBUTES = frozenset({"tb_frame", "gi_frame", "cr_frame", "ag_frame"})  # the audited routes to a frame
BLOCKED_MODULES = frozenset({"ctypes", "_ctypes", "_signal", "signal", "_posixsubprocess"})
# Path events whose first argument (and, for renames and links, second) must lie inside the folder.
PATH_EVENTS = {
    "os.remove": 1, "os.rename": 2, "os.rmdir": 1, "os.mkdir": 1, "os.chmod": 1, "os.chown": 1, "os.link": 2,
    "os.symlink": 2, "os.truncate": 1, "os.utime": 1, "os.setxattr": 1, "os.removexattr": 1, "shutil.rmtree": 1,
    "shutil.copyfile": 2, "shutil.move": 2,
}  # fmt: skip
WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND


class _AssertRewriter(ast.NodeTransformer):
    """Inside an assert: comparisons -> __score_compare__, `not x` -> __score_not__, and/or operands ->
    __score_truth__, the whole test -> __score_assert__, so every value the outcome depends on is checked plain."""

    def visit_Assert(self, node: ast.Assert) -> ast.Assert:
        node.test = _call("__score_assert__", [_StrictExpr().visit(node.test)])
        return node


class _StrictExpr(ast.NodeTransformer):
    def visit_Compare(self, node: ast.Compare) -> ast.expr:
        self.generic_visit(node)
        ops = ast.Tuple([ast.Constant(type(op).__name__) for op in node.ops], ast.Load())
        return _call("__score_compare__", [ops, node.left, *node.comparators])

    def visit_UnaryOp(self, node: ast.UnaryOp) -> ast.expr:
        self.generic_visit(node)
        return _call("__score_not__", [node.operand]) if isinstance(node.op, ast.Not) else node

    def visit_BoolOp(self, node: ast.BoolOp) -> ast.expr:
        self.generic_visit(node)
        node.values = [_call("__score_truth__", [v]) for v in node.values]
        return node


def _call(name: str, args: list[ast.expr]) -> ast.Call:
    return ast.Call(ast.Name(name, ast.Load()), args, [])


def rewrite_tests(tests: str) -> ast.Module:
    """The tests' source with every assert routed through the strict checks (SyntaxError for bad source)."""
    tree = _AssertRewriter().visit(ast.parse(tests))
    return ast.fix_missing_locations(tree)


def make_checks() -> tuple[dict[str, Callable], list[int]]:
    """Fresh check functions for one run and their failure counter [failed asserts]. They hold every builtin they
    use in their closures, so a program that rebinds builtins or module attributes does not change them."""
    exact_type, plain_scalars = type, (int, float, complex, bool, str, bytes, type(None))
    containers, ops, to_bool, extend, every, pairs = (
        (list, tuple, set, frozenset),
        dict(COMPARE_OPS),
        bool,
        list.extend,
        all,
        zip,
    )
    failures = [0]

    def plain(value) -> bool:
        stack, seen = [value], 0
        while stack and seen < 1_000_000:
            item = stack.pop()
            seen += 1
            kind = exact_type(item)
            if kind in containers:
                extend(stack, item)
            elif kind is dict:
                extend(stack, item.keys())
                extend(stack, item.values())
            elif kind not in plain_scalars:
                return False
        return not stack

    def strict(value):
        if not plain(value):
            raise AssertionError("a tested value is not plain data")
        return value

    def truth(value) -> bool:
        return to_bool(strict(value))

    def negate(value) -> bool:
        return not to_bool(strict(value))

    def compare(names: tuple, *operands) -> bool:
        for item in operands:
            strict(item)
        return every(to_bool(ops[name](a, b)) for name, a, b in pairs(names, operands[:-1], operands[1:], strict=True))

    def check(value) -> bool:
        if not truth(value):
            failures[0] += 1  # counted too, in case the tests catch the AssertionError themselves
            return False
        return True

    checks = {"__score_assert__": check, "__score_truth__": truth, "__score_not__": negate}
    checks["__score_compare__"] = compare
    return checks, failures


def imported_modules(tree: ast.Module) -> list[str]:
    """Top-level names of the modules the tests import (`import math`, `from collections import Counter`)."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.partition(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module.partition(".")[0])
    return sorted(names)


def module_copies(names: list[str]) -> dict[str, types.ModuleType]:
    """Copies of the modules `names`, taken before the program runs: a program that rebinds math.isclose changes
    the module, not the copy the tests import."""
    copies = {}
    for name in names:
        try:
            module = importlib.import_module(name)
        except Exception:  # a module that does not import here: the tests' own import will fail and say so
            continue
        copy = types.ModuleType(name)
        copy.__dict__.update(module.__dict__)
        copies[name] = copy
    return copies


def tests_import(copies: dict[str, types.ModuleType], real_import: Callable) -> Callable:
    """The tests' __import__: the copies for the modules in `copies`, the real import for the rest."""

    def load(name, globals=None, locals=None, fromlist=(), level=0):
        if not level and name in copies:
            return copies[name]
        return real_import(name, globals, locals, fromlist, level)

    return load


def make_guard(folder: str) -> Callable[[str, tuple], None]:
    """The audit hook: refuse BLOCKED_EVENTS, frame attributes, blocked imports, /proc and /sys, and writes, deletes
    and renames outside `folder`. What it calls is bound here; realpath still reads os.lstat at call time, so a
    program that rebinds that can get past the write check, and the unprivileged uid is the second line."""
    realpath, join, fsdecode, startswith, anything = os.path.realpath, os.path.join, os.fsdecode, str.startswith, any
    root, blocked, attributes, modules = realpath(folder) + os.sep, BLOCKED_EVENTS, BLOCKED_ATTRIBUTES, BLOCKED_MODULES
    path_events, write_flags, is_instance = dict(PATH_EVENTS), WRITE_FLAGS, isinstance

    def resolved(path) -> str | None:
        """The absolute real path, or None for a file descriptor (a file already open)."""
        return None if path is None or is_instance(path, int) else realpath(join(root, fsdecode(path)))

    def outside(path) -> bool:
        target = resolved(path)
        return target is not None and not startswith(target + os.sep, root)

    def hook(event: str, args: tuple) -> None:
        if event in blocked or startswith(event, "ctypes."):
            raise PermissionError(f"sandbox: {event} is not allowed")
        if event == "object.__getattr__" and args[1] in attributes:
            raise PermissionError(f"sandbox: reading {args[1]} is not allowed")
        if event == "import" and args[0].partition(".")[0] in modules:
            raise PermissionError(f"sandbox: importing {args[0]} is not allowed")
        if event == "open":
            path, mode, flags = args
            target = resolved(path) or ""
            if startswith(target, "/proc") or startswith(target, "/sys"):
                raise PermissionError(f"sandbox: opening {target} is not allowed")
            writes = (mode is not None and anything(c in mode for c in "wax+")) or (flags or 0) & write_flags
            if writes and outside(path):
                raise PermissionError(f"sandbox: writing {target} is not allowed")
        elif event in path_events and anything(outside(path) for path in args[: path_events[event]]):
            raise PermissionError(f"sandbox: {event} outside the folder is not allowed")

    return hook


def seal() -> None:
    """Take away the frame-giving calls a program may use without meaning harm: sys._getframe (namedtuple, enum,
    typing and logging ask it for their caller's module name) answers with a stand-in frame of the program's
    module, and signal handlers, which receive the interrupted frame, cannot be installed (the guard blocks
    importing those modules again)."""
    import _signal

    code = types.SimpleNamespace(co_filename="<program>", co_name="<module>", co_firstlineno=1)
    stand_in = types.SimpleNamespace(f_globals={"__name__": "__main__"}, f_locals={}, f_back=None, f_lineno=1)
    stand_in.f_code = code
    sys._getframe = lambda depth=0: stand_in

    def refused(*args, **kwargs):
        raise PermissionError("sandbox: signal handlers are not allowed")

    for name in ("signal", "setitimer", "set_wakeup_fd", "siginterrupt"):
        setattr(_signal, name, refused)
        if "signal" in sys.modules:
            setattr(sys.modules["signal"], name, refused)


def judge(program: str, tests: str, folder: str, verdict_fd: int, token: str) -> None:
    """Run `program`, then `tests`, in this (sandboxed) process; write `token` to verdict_fd only when the tests
    finished with every check passed. Never returns. Everything used after the program starts is bound first:
    the program may rebind any builtin or module attribute (exec, dict, os._exit) before the tests run."""
    write, exit_now, run, copy, any_error = os.write, os._exit, exec, dict, BaseException

    def explain(error: BaseException) -> None:
        """One line on stderr for the captured output (tracebacks need frames, which the guard refuses)."""
        try:
            write(2, f"{type(error).__name__}: {str(error)[:500]}\n".encode(errors="replace"))
        except any_error:
            pass

    try:
        tree = rewrite_tests(tests)
        program_code = compile(program, "<program>", "exec")
        tests_code = compile(tree, "<tests>", "exec")
    except any_error:  # the program or the tests do not compile
        exit_now(3)
    checks, failures = make_checks()
    tests_builtins = copy(builtins.__dict__)
    tests_builtins["__import__"] = tests_import(module_copies(imported_modules(tree)), builtins.__import__)
    namespace: dict = {"__name__": "__main__", "__builtins__": builtins}
    seal()
    sys.addaudithook(make_guard(folder))
    try:
        run(program_code, namespace)
        scope = copy(namespace)
        scope.update(checks)
        scope["__builtins__"] = tests_builtins
        run(tests_code, scope)
    except any_error as error:  # SystemExit, a failed assert, anything the program raised: not a pass
        explain(error)
        exit_now(1)
    if failures[0] == 0:
        write(verdict_fd, (token + "\n").encode())
    exit_now(0)
