"""The whitelisted parser: a normalised answer to a tree of tuples, never through eval or sympify.

A tokenizer that accepts only known tokens, a recursive-descent parser for expressions, and the answer's
structure around them: text, multiple-choice letter, time of day, base-n numeral, matrix, union, bracketed
sequence, list, conjunction (`x > 1 and x < 4`), expression.
"""

from __future__ import annotations

import re
from fractions import Fraction
from functools import lru_cache

from score.grader.limits import MAX_DEPTH, MAX_DIGITS, MAX_ITEMS, MAX_TOKENS, Reject
from score.grader.normalize import MATH_WORDS

_TOKEN = re.compile(
    r"\s*(?:(?P<num>\d+(?:\.\d*)?|\.\d+)|(?P<cmd>\\[a-zA-Z]+|\\[{}|])|(?P<let>[a-zA-Z]+)"
    r"|(?P<op>\*\*|<=|>=|!=|\\\\|[-+*/^_()\[\]{}=<>!,|&]))"
)
_GREEK = {"alpha", "beta", "gamma", "delta", "epsilon", "varepsilon", "zeta", "eta", "theta", "vartheta", "iota",
          "kappa", "lambda", "mu", "nu", "xi", "rho", "sigma", "tau", "upsilon", "phi", "varphi", "chi", "psi",
          "omega", "Gamma", "Delta", "Theta", "Lambda", "Xi", "Sigma", "Phi", "Psi", "Omega"}  # fmt: skip
_FUNCTIONS = {"sin", "cos", "tan", "cot", "sec", "csc", "arcsin", "arccos", "arctan", "sinh", "cosh", "tanh",
              "log", "ln", "exp", "lg"}  # fmt: skip
_PLAIN = {"sqrt": "\\sqrt", "pi": "\\pi", "sin": "\\sin", "cos": "\\cos", "tan": "\\tan", "log": "\\log",
          "ln": "\\ln", "exp": "\\exp"}  # fmt: skip
_RELATIONS = {"=": "=", "<": "<", ">": ">", "<=": "<=", ">=": ">=", "!=": "!=", "\\le": "<=", "\\leq": "<=",
              "\\leqslant": "<=", "\\ge": ">=", "\\geq": ">=", "\\geqslant": ">=", "\\ne": "!=", "\\neq": "!=",
              "\\lt": "<", "\\gt": ">"}  # fmt: skip
_FACTOR_STARTS = {"\\frac", "\\sqrt", "\\binom", "\\pi", "\\infty", "\\lfloor", "\\lceil"} | {
    "\\" + name for name in _FUNCTIONS | _GREEK
}
_COMMANDS = _FACTOR_STARTS | set(_RELATIONS) | {"\\cdot", "\\times", "\\div", "\\ast", "\\pm", "\\mp", "\\cup",
             "\\emptyset", "\\rfloor", "\\rceil", "\\{", "\\}", "\\|", "\\begin", "\\end",
             "\\land"}  # fmt: skip
_OPEN = {"(": ")", "[": "]", "{": "}", "\\{": "\\}", "\\lfloor": "\\rfloor", "\\lceil": "\\rceil"}
_CLOSE = set(_OPEN.values())

Token = tuple[str, str]


def tokenize(s: str) -> list[Token]:
    tokens: list[Token] = []
    pos = 0
    s = s.rstrip()
    while pos < len(s):
        m = _TOKEN.match(s, pos)
        if not m:
            raise Reject
        pos = m.end()
        kind = m.lastgroup
        text = m.group(kind)
        if kind == "let":
            if text in _PLAIN:
                tokens.append(("cmd", _PLAIN[text]))
            else:
                tokens.extend(("let", c) for c in text)
            continue
        if kind == "cmd" and text not in _COMMANDS:
            raise Reject
        if kind == "num" and len(text) > MAX_DIGITS:
            raise Reject
        tokens.append((kind, text))
        if len(tokens) > MAX_TOKENS:
            raise Reject
    return tokens


class _Parser:
    """Recursive descent over tokens. Nodes: ("num", Fraction), ("sym", name), ("i",), ("pi",), ("e",),
    ("inf",), ("add", a, b), ("neg", a), ("mul", a, b), ("div", a, b), ("pow", a, b), ("pm", a, b),
    ("fact", a), ("root", a, n), ("binom", n, k), ("abs", a), ("floor", a), ("ceil", a), ("func", name, a),
    ("log", base, a), ("rel", ops, items)."""

    def __init__(self, tokens: list[Token]):
        self.tokens = tokens
        self.i = 0
        self.depth = 0
        self.in_abs = 0

    def peek(self) -> Token:
        return self.tokens[self.i] if self.i < len(self.tokens) else ("end", "")

    def take(self) -> Token:
        tok = self.peek()
        self.i += 1
        return tok

    def accept(self, text: str) -> bool:
        if self.peek()[1] == text and self.peek()[0] != "end":
            self.i += 1
            return True
        return False

    def expect(self, text: str) -> None:
        if not self.accept(text):
            raise Reject

    def nested(self, parse) -> tuple:
        """Every recursion of the grammar passes here, so MAX_DEPTH bounds the Python stack."""
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise Reject
        node = parse()
        self.depth -= 1
        return node

    def whole(self) -> tuple:
        node = self.relation()
        if self.i != len(self.tokens):
            raise Reject
        return node

    def relation(self) -> tuple:
        items = [self.sum()]
        ops = []
        while self.peek()[1] in _RELATIONS:
            ops.append(_RELATIONS[self.take()[1]])
            items.append(self.sum())
        return items[0] if not ops else ("rel", tuple(ops), tuple(items))

    def sum(self) -> tuple:
        if self.accept("\\pm") or self.accept("\\mp"):
            node = ("pm", ("num", Fraction(0)), self.term())
        else:
            node = self.term()
        while True:
            op = self.peek()[1]
            if op == "+":
                self.i += 1
                node = ("add", node, self.term())
            elif op == "-":
                self.i += 1
                node = ("add", node, ("neg", self.term()))
            elif op in ("\\pm", "\\mp"):
                self.i += 1
                node = ("pm", node, self.term())
            else:
                return node

    def term(self) -> tuple:
        node = self.unary()
        while True:
            op = self.peek()[1]
            if op in ("*", "\\cdot", "\\times", "\\ast"):
                self.i += 1
                node = ("mul", node, self.unary())
            elif op in ("/", "\\div"):
                self.i += 1
                node = ("div", node, self.unary())
            elif self.starts_factor() or self.peek()[0] == "num" and self.tokens[self.i - 1][1] == "!":  # 5!2!
                node = ("mul", node, self.power())
            else:
                return node

    def unary(self) -> tuple:
        negate = False
        while self.peek()[1] in ("-", "+") and self.peek()[0] == "op":
            negate ^= self.take()[1] == "-"
        node = self.power()
        return ("neg", node) if negate else node

    def starts_factor(self) -> bool:
        kind, text = self.peek()
        if kind in ("let", "cmd"):
            return kind == "let" or text in _FACTOR_STARTS
        return text in ("(", "{") or (text == "|" and not self.in_abs)

    def power(self) -> tuple:
        base = self.postfix(self.atom())
        if self.accept("**"):
            return ("pow", base, self.nested(self.unary))
        if self.accept("^"):
            return self.postfix(("pow", base, self.exponent()))
        return base

    def exponent(self) -> tuple:
        """A LaTeX superscript: {expr} or one token, with an optional sign."""
        return ("neg", self.atom()) if self.accept("-") else self.atom()

    def postfix(self, node: tuple) -> tuple:
        while self.accept("!"):
            node = ("fact", node)
        return node

    def group(self) -> tuple:
        """A LaTeX argument: {expr}, or one token (one digit of a longer number, as TeX reads \\frac12)."""
        kind, text = self.peek()
        if kind == "num" and len(text) > 1 and text[0] != ".":
            self.tokens[self.i] = ("num", text[1:])
            return ("num", Fraction(int(text[0])))
        return self.atom()

    def symbol(self, name: str) -> tuple:
        if self.accept("_"):
            if self.accept("{"):
                parts = []
                while self.peek()[0] in ("num", "let"):
                    parts.append(self.take()[1])
                self.expect("}")
            else:
                parts = [self.take()[1]] if self.peek()[0] in ("num", "let") else []
            if not parts:
                raise Reject
            return ("sym", name + "_" + "".join(parts))
        if name == "i":
            return ("i",)
        if name == "e":
            return ("e",)
        return ("sym", name)

    def function(self, name: str) -> tuple:
        base = None
        power = None
        if name == "log" and self.accept("_"):
            base = self.group()
        if self.accept("^"):
            power = self.exponent()
        if self.peek()[1] in ("(", "{"):
            arg = self.atom()
        else:
            arg = self.power()
            while self.peek()[0] == "let" or self.peek()[1] in ("\\pi",) or self.peek()[1][1:] in _GREEK:
                arg = ("mul", arg, self.power())
        if name == "lg":
            name, base = "log", ("num", Fraction(10))
        node = ("log", base, arg) if name == "log" and base is not None else ("func", name, arg)
        return node if power is None else ("pow", node, power)

    def atom(self) -> tuple:
        return self.nested(self._atom)

    def _atom(self) -> tuple:
        kind, text = self.take()
        if kind == "num":
            return ("num", Fraction(text))
        if kind == "let":
            return self.symbol(text)
        if text in ("(", "[", "{", "\\lfloor", "\\lceil"):
            node = self.sum()
            self.expect(_OPEN[text])
            return {"\\lfloor": ("floor", node), "\\lceil": ("ceil", node)}.get(text, node)
        if text == "|" and not self.in_abs:
            self.in_abs += 1
            node = self.sum()
            self.in_abs -= 1
            self.expect("|")
            return ("abs", node)
        if text == "\\frac":
            return ("div", self.group(), self.group())
        if text == "\\binom":
            return ("binom", self.group(), self.group())
        if text == "\\sqrt":
            index = ("num", Fraction(2))
            if self.accept("["):
                index = self.sum()
                self.expect("]")
            return ("root", self.group(), index)
        if text in ("\\pi", "\\infty"):
            return ("pi",) if text == "\\pi" else ("inf",)
        if text[1:] in _GREEK:
            return ("sym", text[1:])
        if text[1:] in _FUNCTIONS:
            return self.function(text[1:])
        raise Reject


# ---------------------------------------------------------------------------------------------
# Answer structure: text, choice, time, numeral, matrix, union, bracketed sequence, list, conjunction, expression

_MATRIX = re.compile(r"\\begin\{([pbBvV]?matrix|smallmatrix|array)\}(?:\{[^{}]*\})?(.*)\\end\{\1\}", re.DOTALL)
_CHOICE = re.compile(r"\(?([A-E])\)?|\(([A-E])\)[\s:.]*(?:\d|\\).*")  # (B), B, (B) 5
_WORD = re.compile(r"[A-Za-z]{2,}(?:[\s\-'][A-Za-z]+)*")
_CLOCK = re.compile(r"(\d{1,2}):(\d{2})")  # normalisation wrote times of day on the 24-hour clock
_NUMERAL = re.compile(r"(-?)([0-9A-F]+)_\{(\d{1,2})\}")  # normalisation wrote base-n numerals so


def digits(numeral: str) -> str:
    """A numeral's digits without leading zeros, after its sign: `-0221` -> `-221`."""
    sign = "-" if numeral.startswith("-") else ""
    return sign + (numeral.removeprefix("-").lstrip("0") or "0")


def _split(tokens: list[Token], sep: str) -> list[list[Token]]:
    """Split at depth-0 separators; any opener counts so that half-open intervals [a, b) split right."""
    parts: list[list[Token]] = [[]]
    depth = 0
    for tok in tokens:
        text = tok[1]
        if text in _OPEN:
            depth += 1
        elif text in _CLOSE:
            depth -= 1
        if text == sep and depth == 0:
            parts.append([])
        else:
            parts[-1].append(tok)
    if len(parts) > MAX_ITEMS:
        raise Reject
    return parts


def _closing_index(tokens: list[Token]) -> int:
    """Index of the token closing the group that tokens[0] opens (any bracket kinds)."""
    depth = 0
    for k, tok in enumerate(tokens):
        if tok[1] in _OPEN:
            depth += 1
        elif tok[1] in _CLOSE:
            depth -= 1
            if depth == 0:
                return k
    return -1


def _expression(tokens: list[Token]) -> tuple:
    if not tokens:
        raise Reject
    return ("expr", _Parser(list(tokens)).whole())


def _item(tokens: list[Token]) -> tuple:
    if len(tokens) >= 2 and tokens[0][1] in ("(", "[", "\\{") and _closing_index(tokens) == len(tokens) - 1:
        inner = _split(tokens[1:-1], ",")
        if tokens[0][1] == "\\{":
            return ("set", tuple(_item(p) for p in inner))
        if len(inner) > 1:
            return ("seq", tokens[0][1], tokens[-1][1], tuple(_item(p) for p in inner))
    return _expression(tokens)


def _conjunction(tokens: list[Token]) -> tuple:
    """Items joined by `and` (\\land): ("and", items), which comparison reads as an intersection of sets of
    reals or as a list."""
    parts = _split(tokens, "\\land")
    return ("and", tuple(_item(p) for p in parts)) if len(parts) > 1 else _item(tokens)


def _matrix(body: str) -> tuple:
    rows = body.split("\\\\")
    if rows and not rows[-1].strip():
        rows.pop()
    if not rows or len(rows) > MAX_ITEMS:
        raise Reject
    cells = tuple(tuple(_expression(tokenize(c))[1] for c in row.split("&")) for row in rows)
    if len({len(r) for r in cells}) != 1:
        raise Reject
    return ("matrix", cells)


@lru_cache(maxsize=8192)
def structure(s: str) -> tuple:
    """The parsed form of a normalised answer; ("raw",) when it is neither maths nor words."""
    try:
        choice = _CHOICE.fullmatch(s)
        if choice:
            return ("choice", choice.group(1) or choice.group(2))
        clock = _CLOCK.fullmatch(s) if ":" in s else None
        if clock:
            return ("time", int(clock[1]) * 60 + int(clock[2]))
        numeral = _NUMERAL.fullmatch(s) if "_" in s else None
        if numeral:
            return ("numeral", digits(numeral[1] + numeral[2]), int(numeral[3]))
        if _WORD.fullmatch(s) and not set(s.lower().split()) & MATH_WORDS:
            return ("text", " ".join(s.lower().replace("-", " ").split()))
        matrix = _MATRIX.fullmatch(s)
        if matrix:
            return _matrix(matrix.group(2))
        if "\\begin" in s:
            raise Reject
        if s == "\\emptyset":
            return ("set", ())
        tokens = tokenize(s)
        unions = _split(tokens, "\\cup")
        if len(unions) > 1:
            return ("union", tuple(_item(p) for p in unions))
        items = _split(tokens, ",")
        parts = [_conjunction(p) for p in items] if "\\land" in s else [_item(p) for p in items]
        return ("list", tuple(parts)) if len(parts) > 1 else parts[0]
    except (Reject, ValueError, ZeroDivisionError, RecursionError):
        return ("raw",)
