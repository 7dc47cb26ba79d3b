"""Comparison: whether two normalised answers are the same, from their parsed structures.

Scalars compare by exact arithmetic first; a pair that needs sympy goes to the helper process.
"""

from __future__ import annotations

import re
import time

from score.grader import symbolic
from score.grader.exact import exact
from score.grader.limits import MAX_CHARS, NeedSympy, NotExact, Reject
from score.grader.normalize import normalize
from score.grader.parse import structure


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


def _inf_sign(node: tuple) -> int:
    if node == ("inf",):
        return 1
    if node[0] == "neg" and node[1] == ("inf",):
        return -1
    return 0


def _has_inf(node: tuple) -> bool:
    return node == ("inf",) or any(isinstance(c, tuple) and _has_inf(c) for c in node[1:])


def _scalar_equal(a: tuple, b: tuple, use_sympy: bool) -> bool:
    if a == b:
        return True
    sa, sb = _inf_sign(a), _inf_sign(b)
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


_FLIP = {"<": ">", ">": "<", "<=": ">=", ">=": "<=", "=": "=", "!=": "!="}


def _interval(node: tuple) -> tuple | None:
    """A one-variable inequality as an interval: x > 3 -> (3, oo); -1 <= x < 2 -> [-1, 2)."""
    if node[0] != "expr" or node[1][0] != "rel":
        return None
    ops, items = node[1][1], node[1][2]
    if any(op in ("=", "!=") for op in ops) or len({op[0] for op in ops}) != 1:
        return None
    if ops[0][0] == ">":
        ops, items = tuple(_FLIP[op] for op in reversed(ops)), tuple(reversed(items))
    inf = ("inf",)
    if len(ops) == 1 and items[0][0] == "sym":
        low, high, lo_op, hi_op = ("neg", inf), items[1], None, ops[0]
    elif len(ops) == 1 and items[1][0] == "sym":
        low, high, lo_op, hi_op = items[0], inf, ops[0], None
    elif len(ops) == 2 and items[1][0] == "sym":
        low, high, lo_op, hi_op = items[0], items[2], ops[0], ops[1]
    else:
        return None
    return ("seq", "[" if lo_op == "<=" else "(", "]" if hi_op == "<=" else ")", (("expr", low), ("expr", high)))


def _canonical(node: tuple) -> tuple:
    """Spread \\pm into lists, turn one-variable inequalities into intervals, unwrap one-element lists."""
    kind = node[0]
    if kind == "expr":
        interval = _interval(node)
        if interval:
            return interval
        options = _expand_pm(node[1])
        if len(options) > 1:
            return ("list", tuple(("expr", o) for o in options))
        return node
    if kind in ("list", "set"):
        items: list[tuple] = []
        for item in node[1]:
            item = _canonical(item)
            items.extend(item[1] if item[0] == "list" else [item])
        if kind == "list" and len(items) == 1:
            return items[0]
        return (kind, tuple(items))
    if kind == "seq":
        return ("seq", node[1], node[2], tuple(_canonical(i) for i in node[3]))
    if kind == "union":
        parts = tuple(_canonical(p) for p in node[1])
        return parts[0] if len(parts) == 1 else ("union", parts)
    return node


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
        ops_a, items_a = tuple(_FLIP[op] for op in reversed(ops_a)), tuple(reversed(items_a))
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


def _equal(a: tuple, b: tuple, use_sympy: bool) -> bool:
    ka, kb = a[0], b[0]
    if "raw" in (ka, kb):
        return False
    if ka in ("text", "choice") or kb in ("text", "choice"):
        return a == b
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
        return _equal(_canonical(structure(a)), _canonical(structure(b)), use_sympy)
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
        a, b = normalize(pred), normalize(gold)
    except Reject:
        return False
    if not a or not b:
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
