"""Exact arithmetic: polynomials with rational coefficients in the variables, pi, e and i (i^2 = -1).

Most pairs are settled here, in-process; what this cannot decide (radicals, functions, 1/x) raises NotExact.
"""

from __future__ import annotations

import math
from fractions import Fraction

import sympy

from score.grader.limits import MAX_BITS, MAX_FACTORIAL, MAX_TERMS, NotExact, Reject

Poly = dict  # monomial (sorted tuple of (name, exponent)) -> nonzero Fraction
_I = (("i", 1),)


def _check(q: Fraction) -> Fraction:
    if q.numerator.bit_length() > MAX_BITS or q.denominator.bit_length() > MAX_BITS:
        raise Reject
    return q


def _const(q: Fraction) -> Poly:
    return {(): _check(q)} if q else {}


def _add(a: Poly, b: Poly) -> Poly:
    out = dict(a)
    for mono, c in b.items():
        v = out.get(mono, 0) + c
        if v:
            out[mono] = _check(v)
        else:
            out.pop(mono, None)
    return out


def _neg(a: Poly) -> Poly:
    return {m: -c for m, c in a.items()}


def _reduce_i(powers: dict) -> int:
    """Fold i^e in a monomial's powers (in place) into i^(e mod 2); returns the sign from i^2 = -1."""
    if "i" not in powers:
        return 1
    e = powers.pop("i") % 4
    if e % 2:
        powers["i"] = 1
    return -1 if e >= 2 else 1


def _mono_mul(m1: tuple, m2: tuple) -> tuple[tuple, int]:
    if not m1 or not m2:
        return m1 or m2, 1
    powers = dict(m1)
    for name, e in m2:
        powers[name] = powers.get(name, 0) + e
    sign = _reduce_i(powers)
    return tuple(sorted(powers.items())), sign


def _mul(a: Poly, b: Poly) -> Poly:
    if len(a) * len(b) > MAX_TERMS * 4:
        raise NotExact
    out: Poly = {}
    for m1, c1 in a.items():
        for m2, c2 in b.items():
            mono, sign = _mono_mul(m1, m2)
            v = out.get(mono, 0) + sign * c1 * c2
            if v:
                out[mono] = _check(v)
            else:
                out.pop(mono, None)
    if len(out) > MAX_TERMS:
        raise NotExact
    return out


def _inverse(a: Poly) -> Poly:
    """1/a for a nonzero Gaussian rational; anything with variables is left to sympy."""
    if not a:
        raise Reject
    if set(a) - {(), _I}:
        raise NotExact
    re_, im = a.get((), Fraction(0)), a.get(_I, Fraction(0))
    norm = re_ * re_ + im * im
    return _add(_const(re_ / norm), {_I: _check(-im / norm)} if im else {})


def _nth_root(q: Fraction, n: int) -> Fraction:
    """Exact n-th root of a non-negative rational, or NotExact."""
    if q < 0 or n < 1:
        raise NotExact
    out = []
    for v in (q.numerator, q.denominator):
        r = sympy.integer_nthroot(v, n)
        if not r[1]:
            raise NotExact
        out.append(r[0])
    return Fraction(out[0], out[1])


def _constant(a: Poly) -> Fraction:
    """The value of a real constant polynomial."""
    if set(a) - {()}:
        raise NotExact
    return a.get((), Fraction(0))


def _power(base: Poly, exp: Poly) -> Poly:
    q = _constant(exp)
    if q.denominator != 1:
        if q.denominator > 64:
            raise NotExact
        base, q = _const(_nth_root(_constant(base), q.denominator)), Fraction(q.numerator)
    n = int(q)
    if n < 0:
        base, n = _inverse(base), -n
    if n == 0:
        if not base:
            raise NotExact  # 0^0
        return {(): Fraction(1)}
    if len(base) == 1:
        ((mono, c),) = base.items()
        bits = max(c.numerator.bit_length(), c.denominator.bit_length())
        if abs(c) != 1 and bits * n > MAX_BITS or n * max((e for _, e in mono), default=0) > MAX_BITS:
            raise Reject
        powers = {name: e * n for name, e in mono}
        sign = _reduce_i(powers)
        return {tuple(sorted(powers.items())): _check(sign * c**n)}
    if n > 64:
        raise NotExact
    out = {(): Fraction(1)}
    while n:
        if n & 1:
            out = _mul(out, base)
        n >>= 1
        if n:
            base = _mul(base, base)
    return out


def _integer(a: Poly, limit: int) -> int:
    q = _constant(a)
    if q.denominator != 1 or q < 0:
        raise NotExact
    if q > limit:
        raise Reject
    return int(q)


def exact(node: tuple) -> Poly:
    """Exact value of a parsed node, or NotExact when it needs sympy (radicals, functions, 1/x, ...)."""
    kind = node[0]
    if kind == "num":
        return _const(node[1])
    if kind == "sym":
        return {((node[1], 1),): Fraction(1)}
    if kind in ("pi", "e"):
        return {(("\\" + kind, 1),): Fraction(1)}
    if kind == "i":
        return {_I: Fraction(1)}
    if kind == "add":
        return _add(exact(node[1]), exact(node[2]))
    if kind == "neg":
        return _neg(exact(node[1]))
    if kind == "mul":
        return _mul(exact(node[1]), exact(node[2]))
    if kind == "div":
        return _mul(exact(node[1]), _inverse(exact(node[2])))
    if kind == "pow":
        return _power(exact(node[1]), exact(node[2]))
    if kind == "root":
        n = _integer(exact(node[2]), 64)
        return _const(_nth_root(_constant(exact(node[1])), n))
    if kind == "fact":
        return _const(Fraction(math.factorial(_integer(exact(node[1]), MAX_FACTORIAL))))
    if kind == "binom":
        n, k = _integer(exact(node[1]), MAX_BITS), _integer(exact(node[2]), MAX_BITS)
        return _const(Fraction(math.comb(n, k)))
    if kind in ("abs", "floor", "ceil"):
        q = _constant(exact(node[1]))
        return _const({"abs": abs(q), "floor": Fraction(math.floor(q)), "ceil": Fraction(math.ceil(q))}[kind])
    raise NotExact
