"""Limits on what one answer may cost, and the exceptions that pass between the grader's stages."""

MAX_CHARS = 10_000  # longer answers only count when they are the same string
MAX_TOKENS = 400  # tokens of one answer (a matrix: of one cell)
MAX_DEPTH = 50  # nesting of groups, once redundant parentheses are dropped
MAX_DIGITS = 1000  # digits of one written number
MAX_BITS = 40_000  # any exact integer met while evaluating (2004! has 19,000 bits)
MAX_FACTORIAL = 3000
MAX_TERMS = 64  # terms of an expanded polynomial before handing over to sympy
MAX_ITEMS = 64  # elements of a tuple, set or list


class Reject(Exception):
    """The input is malformed or beyond the limits: it is not equivalent to anything."""


class NotExact(Exception):
    """Exact arithmetic cannot decide this value; sympy has to."""


class NeedSympy(Exception):
    """Raised by the in-process comparison when the pair needs the sympy helper."""
