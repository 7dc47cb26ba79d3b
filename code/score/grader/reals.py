"""Sets of reals: ("reals", intervals), each interval (low, low_closed, high, high_closed) with scalar trees for
its ends. Interval brackets, unions, one-variable inequalities (joined by "or" into a union, by "and" into an
intersection), set-builder notation (normalisation keeps its condition) and the empty set all become one, with
intervals sorted and merged where their ends are rational.
"""

from __future__ import annotations

import math
from fractions import Fraction

from score.grader.exact import exact
from score.grader.limits import NotExact, Reject

FLIP = {"<": ">", ">": "<", "<=": ">=", ">=": "<=", "=": "=", "!=": "!="}  # a op b is b FLIP[op] a
_INF, _NEG_INF = ("inf",), ("neg", ("inf",))


def inf_sign(node: tuple) -> int:
    """1 for oo, -1 for -oo, 0 for anything else."""
    if node == ("inf",):
        return 1
    if node[0] == "neg" and node[1] == ("inf",):
        return -1
    return 0


def inequality(node: tuple) -> tuple | None:
    """A one-variable inequality as a set of reals: x > 3 -> (3, oo); -1 <= x < 2 -> [-1, 2); x != 0 -> two."""
    if node[0] != "expr" or node[1][0] != "rel":
        return None
    ops, items = node[1][1], node[1][2]
    if ops == ("!=",) and "sym" in (items[0][0], items[1][0]):
        point = items[1] if items[0][0] == "sym" else items[0]
        return ("reals", ((_NEG_INF, False, point, False), (point, False, _INF, False)))
    if any(op in ("=", "!=") for op in ops) or len({op[0] for op in ops}) != 1:
        return None
    if ops[0][0] == ">":
        ops, items = tuple(FLIP[op] for op in reversed(ops)), tuple(reversed(items))
    if len(ops) == 1 and items[0][0] == "sym":
        low, high, lo_op, hi_op = _NEG_INF, items[1], None, ops[0]
    elif len(ops) == 1 and items[1][0] == "sym":
        low, high, lo_op, hi_op = items[0], _INF, ops[0], None
    elif len(ops) == 2 and items[1][0] == "sym":
        low, high, lo_op, hi_op = items[0], items[2], ops[0], ops[1]
    else:
        return None
    return ("reals", ((low, lo_op == "<=", high, hi_op == "<="),))


def _position(node: tuple) -> Fraction | float | None:
    """Where an interval end lies on the line, when exact arithmetic knows (rationals and infinities)."""
    sign = inf_sign(node)
    if sign:
        return sign * math.inf
    try:
        value = exact(node)
    except (NotExact, Reject, ZeroDivisionError, OverflowError):
        return None
    return None if set(value) - {()} else value.get((), Fraction(0))


def tidy(intervals: list[tuple]) -> tuple:
    """Sorted, with empty intervals dropped and overlapping or touching ones merged; as written when an end
    is not rational (then only the same intervals compare equal). Infinite ends are open."""
    ends = [(_position(lo), _position(hi)) for lo, _, hi, _ in intervals]
    if any(p is None for pair in ends for p in pair):
        return ("reals", tuple((lo, lo_c and not inf_sign(lo), hi, hi_c and not inf_sign(hi))
                               for lo, lo_c, hi, hi_c in intervals))  # fmt: skip
    spans = sorted(
        ([lo_at, lo_c and lo_at != -math.inf, hi_at, hi_c and hi_at != math.inf, lo, hi]
         for (lo_at, hi_at), (lo, lo_c, hi, hi_c) in zip(ends, intervals, strict=True)
         if lo_at < hi_at or (lo_at == hi_at and lo_c and hi_c)),
        key=lambda span: (span[0], not span[1]),
    )  # fmt: skip
    merged: list[list] = []
    for span in spans:
        last = merged[-1] if merged else None
        if last and (span[0] < last[2] or span[0] == last[2] and (last[3] or span[1])):
            if span[2] > last[2] or span[2] == last[2] and span[3]:
                last[2], last[3], last[5] = span[2], span[3], span[5]
        else:
            merged.append(span)
    return ("reals", tuple((lo, lo_c, hi, hi_c) for _, lo_c, _, hi_c, lo, hi in merged))


def as_reals(node: tuple) -> tuple | None:
    """Any notation for a set of reals as ("reals", intervals), or None when `node` is not one."""
    kind = node[0]
    if kind == "reals":
        return node
    if kind == "seq" and len(node[3]) == 2 and all(item[0] == "expr" for item in node[3]):
        (_, low), (_, high) = node[3]
        return tidy([(low, node[1] == "[", high, node[2] == "]")])
    if kind == "set" and not node[1]:
        return ("reals", ())
    if kind in ("union", "list"):
        parts = [as_reals(p) for p in node[1]]
        if any(p is None for p in parts) or (kind == "list" and any(p[0] != "reals" for p in node[1])):
            return None
        return tidy([interval for part in parts for interval in part[1]])
    return None


def intersection(sets: list[tuple]) -> tuple | None:
    """x > 1 and x < 4 -> (1, 4); None when an end is not rational."""
    result = [(_NEG_INF, False, _INF, False)]
    for reals in sets:
        pieces = []
        for lo1, lo1_c, hi1, hi1_c in result:
            for lo2, lo2_c, hi2, hi2_c in reals[1]:
                ends = [_position(x) for x in (lo1, lo2, hi1, hi2)]
                if None in ends:
                    return None
                low = (lo1, lo1_c) if (ends[0], not lo1_c) > (ends[1], not lo2_c) else (lo2, lo2_c)
                high = (hi1, hi1_c) if (ends[2], hi1_c) < (ends[3], hi2_c) else (hi2, hi2_c)
                pieces.append((*low, *high))
        result = list(tidy(pieces)[1])
    return ("reals", tuple(result))
