"""The sympy bridge: parsed trees to sympy and back to a verdict, run in a helper process that is killed
when the time is up, so that every call returns in time from any thread.

Only parsed trees reach sympy (never model text). The helper runs a `judge(a, b)` on normalised strings:
the comparison of compare.py with sympy allowed, which calls sympy_equal / sympy_proportional here.
"""

from __future__ import annotations

import multiprocessing as mp
import signal
import threading
import time
from collections.abc import Callable
from fractions import Fraction

import sympy

from score.grader.limits import MAX_BITS, MAX_FACTORIAL, Reject

_SYMPY_FUNCS = {"sin": sympy.sin, "cos": sympy.cos, "tan": sympy.tan, "cot": sympy.cot, "sec": sympy.sec,
                "csc": sympy.csc, "arcsin": sympy.asin, "arccos": sympy.acos, "arctan": sympy.atan,
                "sinh": sympy.sinh, "cosh": sympy.cosh, "tanh": sympy.tanh, "log": sympy.log, "ln": sympy.log,
                "exp": sympy.exp}  # fmt: skip
# Generic points (mixed signs, unlike denominators) at which expressions in variables are compared.
_POINTS = [(Fraction(137, 100), Fraction(-71, 113), Fraction(29, 10)), (Fraction(-53, 37), Fraction(41, 17)),
           (Fraction(23, 29), Fraction(103, 61), Fraction(-7, 3))]  # fmt: skip
_TOLERANCE = sympy.Float("1e-40", 60)


def _to_sympy(node: tuple) -> sympy.Expr:
    kind = node[0]
    if kind == "num":
        return sympy.Rational(node[1].numerator, node[1].denominator)
    if kind == "sym":
        return sympy.Symbol(node[1])
    if kind in ("pi", "e", "i", "inf"):
        return {"pi": sympy.pi, "e": sympy.E, "i": sympy.I, "inf": sympy.oo}[kind]
    args = [_to_sympy(a) if isinstance(a, tuple) else a for a in node[1:]]
    if kind == "add":
        return args[0] + args[1]
    if kind == "neg":
        return -args[0]
    if kind == "mul":
        return args[0] * args[1]
    if kind == "div":
        return args[0] / args[1]
    if kind == "pow":
        base, exp = args
        if exp.is_Rational and abs(exp) > 1000:
            # Only rationals small enough to write down may be raised this high; 2^(9^8) is never built.
            small = base.is_Rational and (
                abs(base) == 1 or max(base.p.bit_length(), base.q.bit_length()) * abs(exp) <= MAX_BITS
            )
            if not small:
                raise Reject
        return sympy.Pow(base, exp)
    if kind == "root":
        x, n = args
        if n.is_Integer and n % 2 == 1 and x.is_negative:
            return -sympy.root(-x, n)
        return sympy.root(x, n)
    if kind == "fact":
        if args[0].is_Integer and args[0] > MAX_FACTORIAL:
            raise Reject
        return sympy.factorial(args[0])
    if kind == "binom":
        return sympy.binomial(args[0], args[1])
    if kind in ("abs", "floor", "ceil"):
        return {"abs": sympy.Abs, "floor": sympy.floor, "ceil": sympy.ceiling}[kind](args[0])
    if kind == "func":
        name, x = args
        if name not in ("log", "ln", "exp") and x.is_number and abs(complex(x.evalf(15))) > 1e6:
            raise Reject  # sin(e^(e^100)) would need that many digits of pi
        return _SYMPY_FUNCS[name](x)
    if kind == "log":
        return sympy.log(args[1], args[0])
    raise Reject


def _numbers_close(x: sympy.Expr, y: sympy.Expr) -> bool:
    """Relative comparison at 60 digits: tiny values differ when they differ (no absolute tolerance)."""
    vx, vy = sympy.N(x, 60), sympy.N(y, 60)
    if not (vx.is_number and vy.is_number) or vx.has(sympy.nan, sympy.zoo) or vy.has(sympy.nan, sympy.zoo):
        return False
    diff = abs(sympy.N(vx - vy, 60))
    scale = max(abs(vx), abs(vy))
    return bool(diff == 0 or diff <= scale * _TOLERANCE)


def _tower(node: tuple) -> int:
    """Height of the tallest power tower: a^(b^(c^d)) evaluates to numbers with astronomically many digits."""
    children = [_tower(c) for c in node[1:] if isinstance(c, tuple)]
    if node[0] == "pow":
        return max(_tower(node[1]), 1 + _tower(node[2]))
    return max(children, default=0)


def _sympy_pair(a: tuple, b: tuple) -> tuple[sympy.Expr, sympy.Expr, list[dict]]:
    """Both sides in sympy, and the points to compare them at (one empty point when there are no variables)."""
    if _tower(a) > 2 or _tower(b) > 2:
        raise Reject
    x, y = _to_sympy(a), _to_sympy(b)
    symbols = sorted(x.free_symbols | y.free_symbols, key=str)
    if not symbols:
        return x, y, [{}]
    points = [{s: sympy.Rational(p[k % len(p)] + k) for k, s in enumerate(symbols)} for p in _POINTS]
    return x, y, points


def sympy_equal(a: tuple, b: tuple) -> bool:
    x, y, points = _sympy_pair(a, b)
    if x == y:
        return True
    if any(v.has(sympy.oo, -sympy.oo, sympy.zoo, sympy.nan) for v in (x, y)):
        return False
    # Exact sympy forms that differ can still be equal (sqrt(3+2sqrt2) = 1+sqrt2, identities in x):
    # 60-digit values at generic points decide, relative to their size.
    return all(_numbers_close(x.subs(p), y.subs(p)) for p in points)


def sympy_proportional(a: tuple, b: tuple) -> bool:
    x, y, points = _sympy_pair(a, b)
    first_y = sympy.N(y.subs(points[0]), 60)
    if not first_y.is_number or first_y == 0:
        return False
    k = sympy.N(x.subs(points[0]), 60) / first_y
    return k != 0 and all(_numbers_close(x.subs(p), k * y.subs(p)) for p in points)


def sympy_within(node: tuple, target: Fraction, tolerance: Fraction) -> bool:
    """Whether a parsed constant's real value lies within `tolerance` of `target` (at 60 digits)."""
    if _tower(node) > 2:
        raise Reject
    value = sympy.N(_to_sympy(node), 60)
    if not (value.is_number and value.is_real):
        return False
    return bool(
        abs(value - sympy.Rational(target.numerator, target.denominator))
        <= sympy.Rational(tolerance.numerator, tolerance.denominator)
    )


# ---------------------------------------------------------------------------------------------
# The helper process


Judge = Callable[[str, str], bool]  # normalised answers -> verdict, sympy allowed


def _helper_main(conn, judge: Judge) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is for the parent; it closes the pipe
    while True:
        try:
            a, b = conn.recv()
        except (EOFError, OSError):
            return
        try:
            verdict = judge(a, b)
        except Exception:  # whatever hostile input breaks in sympy counts as not equivalent
            verdict = False
        try:
            conn.send(verdict)
        except OSError:
            return


class _Helper:
    def __init__(self, judge: Judge):
        # fork starts in milliseconds with sympy already imported; spawn is the fallback elsewhere.
        ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
        self.conn, child = ctx.Pipe()
        self.process = ctx.Process(target=_helper_main, args=(child, judge), daemon=True)
        self.process.start()
        child.close()

    def ask(self, a: str, b: str, timeout: float) -> bool | None:
        """The verdict, or None when the helper ran out of time or died."""
        try:
            self.conn.send((a, b))
            if self.conn.poll(max(timeout, 0.0)):
                return bool(self.conn.recv())
        except (EOFError, OSError):
            pass
        return None

    def close(self) -> None:
        self.process.kill()
        self.process.join()
        self.conn.close()


_KILL_MARGIN = 0.1  # seconds kept back to kill a helper that ran out of time and reap it
_IDLE: list[_Helper] = []
_LOCK = threading.Lock()
_VERDICTS: dict[tuple[str, str], bool] = {}


class _Timeout(BaseException):
    """Raised by SIGALRM; a BaseException so that no `except Exception` inside sympy swallows it."""


def _in_process_verdict(a: str, b: str, deadline: float, judge: Judge) -> bool:
    """Inside a daemonic multiprocessing worker, which may not start a helper: SIGALRM bounds the time
    there (such workers run their tasks on the main thread); elsewhere only the guards do."""
    if threading.current_thread() is not threading.main_thread():
        return judge(a, b)

    def alarm(signum, frame):
        raise _Timeout

    previous = signal.signal(signal.SIGALRM, alarm)
    try:
        try:
            signal.setitimer(signal.ITIMER_REAL, max(deadline - time.monotonic(), 0.001))
            return judge(a, b)
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
    except _Timeout:  # also when the alarm lands between the answer and disarming the timer
        return False
    finally:
        signal.signal(signal.SIGALRM, previous)


def sympy_verdict(a: str, b: str, deadline: float, judge: Judge) -> bool:
    """judge(a, b) in an idle helper (one per concurrent caller); on timeout the helper is killed, so the
    caller returns in time. Every caller passes the same judge, so idle helpers are interchangeable."""
    key = (a, b)
    if key in _VERDICTS:
        return _VERDICTS[key]
    with _LOCK:
        helper = _IDLE.pop() if _IDLE else None
    if helper is None or not helper.process.is_alive():
        if mp.current_process().daemon:
            return _in_process_verdict(a, b, deadline, judge)
        helper = _Helper(judge)
    verdict = helper.ask(a, b, deadline - time.monotonic() - _KILL_MARGIN)
    if verdict is None:
        helper.close()
        return False
    with _LOCK:
        _IDLE.append(helper)
        if len(_VERDICTS) > 8192:
            _VERDICTS.clear()
        _VERDICTS[key] = verdict
    return verdict


def close_helpers() -> None:
    """Kill the idle helpers and forget cached verdicts (tests and benchmarks start cold with this)."""
    with _LOCK:
        while _IDLE:
            _IDLE.pop().close()
        _VERDICTS.clear()
