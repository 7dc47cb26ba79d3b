"""Comparison: whether two normalised answers are the same, from their parsed structures.

Scalars compare by exact arithmetic first; a pair that needs sympy goes to the helper process.
"""

from __future__ import annotations

import re
import time
from fractions import Fraction

from score.grader import symbolic
from score.grader.exact import exact
from score.grader.limits import MAX_CHARS, NeedSympy, NotExact, Reject
from score.grader.normalize import normalize
from score.grader.parse import digits, structure
from score.grader.reals import FLIP, as_reals, inequality, inf_sign, intersection, tidy


def _expand_pm(node: tuple) -> list[tuple]:
    """a \\pm b -> [a + b, a - b], recursively; capped so that a chain of \\pm cannot explode."""
    if node[0] == "pm":
        left, right = _expand_pm(node[1]), _expand_pm(node[2])
        out = [("add", x, y) for x in left for y in right] + [("add", x, ("neg", y)) for x in left for y in right]
    elif node[0] in ("num", "sym", "pi", "e", "i", "inf"):
        return [node]
    elif node[0] == "rel":
        out = [()]
        for item in node[2]:
            out = [o + (x,) for o in out for x in _expand_pm(item)]
        out = [("rel", node[1], o) for o in out]
    else:
        options = [_expand_pm(c) if isinstance(c, tuple) else [c] for c in node[1:]]
        out = [(node[0],)]
        for opts in options:
            out = [o + (c,) for o in out for c in opts]
            if len(out) > 8:
                raise Reject
    if len(out) > 8:
        raise Reject
    return out


def _has_inf(node: tuple) -> bool:
    return node == ("inf",) or any(isinstance(c, tuple) and _has_inf(c) for c in node[1:])


def _scalar_equal(a: tuple, b: tuple, use_sympy: bool) -> bool:
    if a == b:
        return True
    sa, sb = inf_sign(a), inf_sign(b)
    if sa or sb:
        return sa == sb
    if not (_has_inf(a) or _has_inf(b)):
        try:
            return exact(a) == exact(b)
        except (NotExact, ZeroDivisionError, OverflowError):
            pass
    if not use_sympy:
        raise NeedSympy
    return symbolic.sympy_equal(a, b)


def _canonical(node: tuple) -> tuple:
    """Spread \\pm into lists, turn the notations for sets of reals into one, unwrap one-element lists."""
    kind = node[0]
    if kind == "expr":
        reals = inequality(node)
        if reals:
            return tidy(list(reals[1]))
        options = _expand_pm(node[1])
        if len(options) > 1:
            return ("list", tuple(("expr", o) for o in options))
        return node
    if kind == "and":
        parts = [_canonical(p) for p in node[1]]
        if all(p[0] == "reals" for p in parts):
            return intersection(parts) or ("list", tuple(parts))
        return _canonical(("list", tuple(parts)))
    if kind in ("list", "set"):
        items: list[tuple] = []
        for item in node[1]:
            item = _canonical(item)
            items.extend(item[1] if item[0] == "list" else [item])
        if kind == "list" and len(items) == 1:
            return items[0]
        if kind == "list" and all(item[0] == "reals" for item in items):  # x < 0 or x > 3
            return as_reals(("list", tuple(items)))
        return (kind, tuple(items))
    if kind == "seq":
        return ("seq", node[1], node[2], tuple(_canonical(i) for i in node[3]))
    if kind == "union":
        parts = tuple(_canonical(p) for p in node[1])
        if len(parts) == 1:
            return parts[0]
        return as_reals(("union", parts)) or ("union", parts)
    return node


def _reals_equal(a: tuple, b: tuple, use_sympy: bool) -> bool:
    def same(x: tuple, y: tuple) -> bool:
        return (
            x[1] == y[1]
            and x[3] == y[3]
            and _scalar_equal(x[0], y[0], use_sympy)
            and _scalar_equal(x[2], y[2], use_sympy)
        )

    unused = list(b[1])
    if len(a[1]) != len(unused):
        return False
    for x in a[1]:
        match = next((k for k, y in enumerate(unused) if same(x, y)), None)
        if match is None:
            return False
        del unused[match]
    return True


def _unordered_equal(xs: tuple, ys: tuple, use_sympy: bool) -> bool:
    if len(xs) != len(ys):
        return False
    unused = list(ys)
    for x in xs:
        for k, y in enumerate(unused):
            if _equal(x, y, use_sympy):
                del unused[k]
                break
        else:
            return False
    return True


def _ordered_equal(xs: tuple, ys: tuple, use_sympy: bool) -> bool:
    return len(xs) == len(ys) and all(_equal(x, y, use_sympy) for x, y in zip(xs, ys, strict=True))


def _relation_equal(a: tuple, b: tuple, use_sympy: bool) -> bool:
    (_, ops_a, items_a), (_, ops_b, items_b) = a, b
    if len(ops_a) != len(ops_b):
        return False
    if ops_a != ops_b:
        ops_a, items_a = tuple(FLIP[op] for op in reversed(ops_a)), tuple(reversed(items_a))
        if ops_a != ops_b:
            return False
    if len(ops_a) == 1 and ops_a[0] in ("=", "!="):
        if items_a[0] == items_b[0] and items_a[0][0] == "sym":
            return _scalar_equal(items_a[1], items_b[1], use_sympy)
        # The same equation up to moving terms across and scaling: 2x + y = 0 is y = -2x.
        da = ("add", items_a[0], ("neg", items_a[1]))
        db = ("add", items_b[0], ("neg", items_b[1]))
        return _scalar_equal(da, db, use_sympy) or _proportional(da, db, use_sympy)
    return all(_scalar_equal(x, y, use_sympy) for x, y in zip(items_a, items_b, strict=True))


def _proportional(a: tuple, b: tuple, use_sympy: bool) -> bool:
    """Whether a = k * b for a nonzero constant k."""
    try:
        pa, pb = exact(a), exact(b)
    except (NotExact, ZeroDivisionError, OverflowError):
        if not use_sympy:
            raise NeedSympy from None
        return symbolic.sympy_proportional(a, b)
    if not pa or not pb:
        return pa == pb
    mono = next(iter(pb))
    if mono not in pa:
        return False
    k = pa[mono] / pb[mono]
    return pa == {m: c * k for m, c in pb.items()}


def _assigned_value(node: tuple) -> tuple:
    """`x = 3` -> `3`, `f(x) = 2x` -> `2x`: the name before the value is not part of the answer."""
    if node[0] == "expr" and node[1][0] == "rel" and node[1][1] == ("=",):
        lhs = node[1][2][0]
        if lhs[0] == "sym" or lhs[0] == "mul" and lhs[1][0] == "sym" and lhs[2][0] == "sym":
            return ("expr", node[1][2][1])
    return node


def _closed_bound(node: tuple) -> tuple | None:
    """`c \\le 25/8` -> 25/8: the other side of a closed bound on a name, the value that a question asking for c's
    largest (or smallest) value wants; None for anything else (`c < 25/8` never reaches 25/8)."""
    if node[0] != "expr" or node[1][0] != "rel" or node[1][1] not in (("<=",), (">=",)):
        return None
    left, right = node[1][2]
    return right if left[0] == "sym" else left if right[0] == "sym" else None


# A decimal gold this precise stands for an exact value (TheoremQA's 0.78539815 for pi/4); 3.14 and 0.33 do not.
MIN_SIGNIFICANT_DIGITS = 6
_DECIMAL = re.compile(r"-?(\d+)\.(\d{1,50})")
_PLAIN_NUMBER = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)")


def _rounded_by(answer: tuple, written: str, gold: str, use_sympy: bool) -> bool:
    """Whether a decimal gold of MIN_SIGNIFICANT_DIGITS or more rounds an exact answer (`\\pi/4` and `0.78539815`):
    within two units of the gold's last place, since golds are computed from rounded constants (pi = 3.1415926)."""
    decimal = _DECIMAL.fullmatch(gold)
    if not decimal or answer[0] != "expr" or _PLAIN_NUMBER.fullmatch(written):
        return False
    if len((decimal[1] + decimal[2]).lstrip("0")) < MIN_SIGNIFICANT_DIGITS:
        return False
    target, tolerance = Fraction(gold), Fraction(2, 10 ** len(decimal[2]))
    try:
        value = exact(answer[1])
        if set(value) <= {()}:
            return abs(value.get((), Fraction(0)) - target) <= tolerance
        if any(name not in ("\\pi", "\\e") for mono in value for name, _ in mono):
            return False  # variables (or i) have no value to round
    except NotExact:
        pass
    if not use_sympy:
        raise NeedSympy
    return symbolic.sympy_within(answer[1], target, tolerance)


def _equal(a: tuple, b: tuple, use_sympy: bool) -> bool:
    ka, kb = a[0], b[0]
    if "raw" in (ka, kb):
        return False
    if ka in ("text", "choice", "time") or kb in ("text", "choice", "time"):
        return a == b
    if "numeral" in (ka, kb):  # the same digits in the same base (written without its base: compare())
        return a == b
    if "reals" in (ka, kb):
        x, y = as_reals(a), as_reals(b)
        return x is not None and y is not None and _reals_equal(x, y, use_sympy)
    a_rel = ka == "expr" and a[1][0] == "rel"
    b_rel = kb == "expr" and b[1][0] == "rel"
    if a_rel and b_rel:
        return _relation_equal(a[1], b[1], use_sympy)
    if a_rel or b_rel:
        a, b = _assigned_value(a), _assigned_value(b)
        if a[0] == "expr" and a[1][0] == "rel" or b[0] == "expr" and b[1][0] == "rel":
            return False
        return _equal(_canonical(a), _canonical(b), use_sympy)
    if ka == "expr" and kb == "expr":
        return _scalar_equal(a[1], b[1], use_sympy)
    for one, other in ((a, b), (b, a)):
        if one[0] == "set" and len(one[1]) == 1 and other[0] not in ("set", "list"):
            return _equal(one[1][0], other, use_sympy)
    if {ka, kb} <= {"list", "set"} or {ka, kb} == {"union"}:
        return _unordered_equal(a[1], b[1], use_sympy)
    if ka == "seq" and kb == "seq":
        return a[1] == b[1] and a[2] == b[2] and _ordered_equal(a[3], b[3], use_sympy)
    if {ka, kb} == {"list", "seq"}:
        seq = a if ka == "seq" else b
        lst = b if ka == "seq" else a
        return seq[1] == "(" and seq[2] == ")" and _ordered_equal(seq[3], lst[1], use_sympy)
    if ka == "matrix" and kb == "matrix":
        return len(a[1]) == len(b[1]) and all(
            _ordered_equal(tuple(("expr", c) for c in ra), tuple(("expr", c) for c in rb), use_sympy)
            for ra, rb in zip(a[1], b[1], strict=True)
        )
    if {ka, kb} == {"matrix", "seq"}:
        matrix, seq = (a, b) if ka == "matrix" else (b, a)
        cells = tuple(("expr", c) for row in matrix[1] for c in row)
        vector = len(matrix[1]) == 1 or all(len(row) == 1 for row in matrix[1])
        return vector and seq[1] == "(" and _ordered_equal(cells, seq[3], use_sympy)
    return False


def compare(a: str, b: str, use_sympy: bool) -> bool:
    """Equivalence of two normalised answers; NeedSympy escapes when use_sympy is False."""
    try:
        sa, sb = structure(a), structure(b)
        # 212_3 is 212 written without its base, but not 212_4 nor 23 (its value in base ten); A3_{16} is A3.
        if (sa[0] == "numeral") != (sb[0] == "numeral"):
            numeral, written = (sa, b) if sa[0] == "numeral" else (sb, a)
            return digits(written) == numeral[1]
        if _equal(_canonical(sa), _canonical(sb), use_sympy) or _rounded_by(sa, a, b, use_sympy):
            return True
        bound = _closed_bound(sa)  # only the answer's: a gold `c \\le 25/8` asks for the bound, not a number
        return bound is not None and sb[0] == "expr" and sb[1][0] != "rel" and _scalar_equal(bound, sb[1], use_sympy)
    except (Reject, ZeroDivisionError, OverflowError, ValueError, RecursionError):
        return False


def _judge_with_sympy(a: str, b: str) -> bool:
    """What the sympy helper runs."""
    return compare(a, b, use_sympy=True)


def is_equivalent(pred: str, gold: str, timeout: float = 2.0) -> bool:
    """Whether two final answers are mathematically the same; a timeout counts as not equivalent."""
    deadline = time.monotonic() + timeout
    if not isinstance(pred, str) or not isinstance(gold, str):
        return False
    if len(pred) > MAX_CHARS or len(gold) > MAX_CHARS:
        return pred.strip() == gold.strip() != ""
    try:
        (a, unit_a), (b, unit_b) = normalize(pred), normalize(gold)
    except Reject:
        return False
    if not a or not b or unit_a and unit_b and unit_a != unit_b:  # 3 kg is not 3 g; 3 kg is 3
        return False
    if _verdict(a, b, deadline):
        return True
    # 50% and 0.5 are the same number; 50% and 50 count as the same answer too (above).
    if ("%" in pred) != ("%" in gold) and re.fullmatch(r"[-+]?[\d.]+", a if "%" in pred else b):
        a, b = (f"{a}/100", b) if "%" in pred else (a, f"{b}/100")
        return _verdict(a, b, deadline)
    return False


def _verdict(a: str, b: str, deadline: float) -> bool:
    if a == b:
        return True
    try:
        return compare(a, b, use_sympy=False)
    except NeedSympy:
        return symbolic.sympy_verdict(a, b, deadline, _judge_with_sympy)
