"""Answer checking: extract the final answer of a solution and decide whether two answers are equal.

Model output is hostile input. Nothing here passes it to eval, sympify or parse_expr: answers go
through a whitelisting tokenizer and a small recursive-descent parser that builds its own tree,
with limits on length, nesting, integer sizes, exponents and factorials. Most pairs are settled
in-process by exact arithmetic (rationals, Gaussian rationals, polynomials in the variables and
in pi). Only the rest (radicals, functions, division by variables) goes to sympy, which runs in a
reusable helper process that is killed when the time is up, so every call returns in time from
any thread.
"""

from __future__ import annotations

import math
import multiprocessing as mp
import os
import re
import signal
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from fractions import Fraction
from functools import lru_cache

import sympy

MAX_CHARS = 10_000  # longer answers only count when they are the same string
MAX_TOKENS = 400  # tokens of one answer (a matrix: of one cell)
MAX_DEPTH = 50  # nesting of groups, once redundant parentheses are dropped
MAX_DIGITS = 1000  # digits of one written number
MAX_BITS = 40_000  # any exact integer met while evaluating (2004! has 19,000 bits)
MAX_FACTORIAL = 3000
MAX_TERMS = 64  # terms of an expanded polynomial before handing over to sympy
MAX_ITEMS = 64  # elements of a tuple, set or list
MIN_POOL_BATCH = 64  # smaller batches are graded in-process: a pool costs more than it saves


class _Reject(Exception):
    """The input is malformed or beyond the limits: it is not equivalent to anything."""


class _NotExact(Exception):
    """Exact arithmetic cannot decide this value; sympy has to."""


class _NeedSympy(Exception):
    """Raised by the in-process comparison when the pair needs the sympy helper."""


# ---------------------------------------------------------------------------------------------
# Extraction

_BOX = re.compile(r"\\(?:boxed|fbox)(?![a-zA-Z])")
_FINAL = re.compile(r"final answer(?:\s*is|\s*:)", re.IGNORECASE)
_HOPE = re.compile(r"I hope it is correct", re.IGNORECASE)


def _braced(text: str, start: int) -> tuple[str, int] | None:
    """Content of the brace group opening at text[start] == '{' and the index after it; None if unbalanced."""
    depth = 0
    i = start
    while i < len(text):
        c = text[i]
        if c == "\\":
            i += 2
            continue
        if c == "{":
            depth += 1
        elif c == "}":
            depth -= 1
            if depth == 0:
                return text[start + 1 : i], i + 1
        i += 1
    return None


def _boxed_content(text: str, start: int) -> tuple[str, int] | None:
    """Argument of the \\boxed or \\fbox whose name ends at `start` (`{...}` or bare `\\boxed 5`), and its end."""
    i = start
    while i < len(text) and text[i] in " \t":
        i += 1
    if i < len(text) and text[i] == "{":
        return _braced(text, i)
    bare = re.match(r"[^\s$]+", text[i:])
    return (bare.group(0).rstrip(".,;"), i + bare.end()) if bare else None


def _dollar_content(text: str) -> str | None:
    """The first $...$ (or $$...$$) math span of `text`; escaped \\$ do not delimit. None if unclosed."""
    positions = [m.start() for m in re.finditer(r"(?<!\\)\$", text)]
    if not positions:
        return None
    first = positions[0]
    if text.startswith("$$", first):
        closing = [p for p in positions if p > first + 1 and text.startswith("$$", p)]
        return text[first + 2 : closing[0]] if closing else None
    closing = [p for p in positions if p > first]
    return text[first + 1 : closing[0]] if closing else None


def _final_answer_content(text: str, start: int) -> tuple[str | None, bool]:
    """The answer after a `The final answer is` phrase ending at `start`, and whether it has the paper's
    form ($...$ or closed by `I hope it is correct`) rather than being the rest of a line of prose."""
    rest = text[start:]
    hope = _HOPE.search(rest)
    span = rest[: hope.start()].rstrip().removesuffix(".") if hope else rest
    if "$" in span:
        return _dollar_content(span), True
    if hope:
        return span.strip(), True
    return span.split("\n", 1)[0].strip(), False


def _unwrap(answer: str) -> str:
    """Strip math delimiters, a surrounding \\boxed{} and a final full stop that the answer itself carries."""
    answer = answer.strip()
    for _ in range(8):  # bounded: a hostile $$$$...$$$$ must not cost quadratic time
        changed = False
        for left, right in (("$$", "$$"), ("$", "$"), ("\\(", "\\)"), ("\\[", "\\]")):
            if len(answer) >= len(left) + len(right) and answer.startswith(left) and answer.endswith(right):
                answer = answer[len(left) : len(answer) - len(right)].strip()
                changed = True
        box = _BOX.match(answer)
        inner = _boxed_content(answer, box.end()) if box else None
        if inner is not None and inner[1] == len(answer):
            answer = inner[0].strip()
            changed = True
        if not changed:
            break
    return answer.rstrip(" .")


def extract_answer(solution: str) -> str | None:
    """The final answer of a written solution, or None when there is none (or it is unbalanced or empty).

    The last \\boxed{...} / \\fbox{...} / `\\boxed 5`, or the paper's
    `Final Answer: The final answer is $...$. I hope it is correct.`, whichever comes last.
    """
    if not isinstance(solution, str):
        return None
    boxes = list(_BOX.finditer(solution))
    finals = list(_FINAL.finditer(solution))
    box_at = boxes[-1].start() if boxes else -1
    final_at = finals[-1].start() if finals else -1
    if box_at < 0 and final_at < 0:
        return None
    answer, paper_form = _final_answer_content(solution, finals[-1].end()) if finals else (None, False)
    # A later "final answer is ..." in plain prose ("I think the final answer is right") does not
    # override a \boxed answer; the paper's form does.
    if box_at > final_at or (boxes and not paper_form):
        boxed = _boxed_content(solution, boxes[-1].end())
        answer = None if boxed is None else boxed[0]
    if answer is None:
        return None
    return _unwrap(answer) or None


# ---------------------------------------------------------------------------------------------
# Normalisation: string to string, linear-time regexes only

_UNICODE = {"−": "-", "–": "-", "×": "\\times ", "·": "\\cdot ", "÷": "\\div ", "π": "\\pi ", "∞": "\\infty ",
            "√": "\\sqrt ", "≤": "\\le ", "≥": "\\ge ", "≠": "\\ne ", "∪": "\\cup ", "°": "", "±": "\\pm "}  # fmt: skip
_TEXT_CMD = re.compile(r"\\(text(?:bf|it|rm|normal|sf|tt)?|mbox|math(?:rm|bf|it|sf)|operatorname)\s*(?=\{)")
_WORDY = re.compile(r"[A-Za-z][A-Za-z\s.'\-]*")
_MATH_WORDS = {"sqrt", "pi", "sin", "cos", "tan", "cot", "sec", "csc", "log", "ln", "exp", "inf", "infty", "or", "and"}
_REPLACEMENTS = [
    (re.compile(r"\\(?:left|right|bigl|bigr|Bigl|Bigr|biggl|biggr|Biggl|Biggr|big|Big|bigg|Bigg)(?![a-zA-Z])\.?"), ""),
    (re.compile(r"\\[dtc]frac(?![a-zA-Z])"), r"\\frac"),
    (re.compile(r"\\[dt]binom(?![a-zA-Z])"), r"\\binom"),
    (re.compile(r"\\(?:displaystyle|textstyle|limits|nolimits)(?![a-zA-Z])"), ""),
    (re.compile(r"(?<=\d)(?:\{,\}|,\\!|\\[,!;: ])\s*(?=\d{3}(?!\d))"), ""),  # thousands: 1{,}000 1,\!000 1\,000
    (re.compile(r"(?<!\\)\\(?:[,;:! ]|quad|qquad)|~"), " "),
    (re.compile(r"\^\s*\{\s*\\circ\s*\}|\^\s*\\circ|\\circ|\\degree"), ""),
    (re.compile(r"\\?[%$]"), ""),
    (re.compile(r"\\mathbb\s*\{?\s*R\s*\}?"), r"(-\\infty,\\infty)"),
    (re.compile(r"\\infinity|\\inf(?![a-zA-Z])|(?<![a-zA-Z\\])(?:infinity|infty|inf)(?![a-zA-Z])"), r"\\infty "),
    (re.compile(r"\\(?:varnothing|emptyset)|\\\{\s*\\\}"), r"\\emptyset "),
    (re.compile(r"\\[lr]vert|\\vert|\\mid"), "|"),
    (re.compile(r"^\s*[a-zA-Z]\s*\\in(?![a-zA-Z])"), ""),  # x \in [-2, 7]
    (re.compile(r"\s+(?:or|and)\s+"), ","),
]
_MIXED = re.compile(r"(?<![\w.^_}\)\]\\])(\d+)\s*\\frac\s*(?:\{\s*(\d+)\s*\}|(\d))\s*(?:\{\s*(\d+)\s*\}|(\d))")
_BASE = re.compile(r"(?<![\w.^_}\\])([0-9A-F]+)_\{?(\d{1,2})\}?(?![\d}])")
_REPEATING = re.compile(r"(?<!\d)(\d*)\.(\d*)\\overline\s*\{(\d+)\}")
_THOUSANDS = re.compile(r"[-+]?\d{1,3}(?:,\d{3})+(?:\.\d+)?")
_UNITS = re.compile(r"(?<=[\d}\)])\s*([A-Za-z]{2,}(?: [A-Za-z]{2,})*)\s*(?:\^\s*\{?\d\}?)?$")
_SPACES = re.compile(r"\s+(?![a-zA-Z])|(?<![a-zA-Z])\s+")


def _strip_text(s: str) -> str:
    """\\text{}-like groups: `or`/`and` become commas, units and words next to math go, the rest is unwrapped."""
    for _ in range(64):
        m = _TEXT_CMD.search(s)
        if not m:
            return s
        group = _braced(s, m.end())
        if group is None:
            raise _Reject
        content, end = group
        word = content.strip()
        rest = (s[: m.start()] + s[end:]).strip()
        if word in ("or", "and"):
            s = s[: m.start()] + "," + s[end:]
        elif not rest or re.fullmatch(r"\(?[A-E]\)?", word) or (m.group(1) != "text" and len(word) == 1):
            s = s[: m.start()] + " " + content + " " + s[end:]
        elif _WORDY.fullmatch(word):
            tail = re.match(r"\s*\^\s*\{?\d\}?", s[end:])
            s = s[: m.start()] + " " + s[end + (tail.end() if tail else 0) :]
        else:
            s = s[: m.start()] + " " + content + " " + s[end:]
    raise _Reject


def _drop_redundant_groups(s: str) -> str:
    """((x)) -> (x) and {{x}} -> {x}: keeps deep but harmless nesting within the parser's depth limit."""
    opener = {")": "(", "}": "{"}
    stack: list[int] = []
    match: dict[int, int] = {}
    i = 0
    while i < len(s):
        c = s[i]
        if c == "\\":
            i += 2
            continue
        if c in "({":
            stack.append(i)
        elif c in ")}" and stack and s[stack[-1]] == opener[c]:
            match[stack.pop()] = i
        i += 1
    drop = {j for i, j in match.items() if match.get(i + 1) == j - 1 and s[i] == s[i + 1]}
    drop |= {i for i, j in match.items() if j in drop}
    return "".join(c for k, c in enumerate(s) if k not in drop) if drop else s


def _repeating(m: re.Match) -> str:
    whole, fixed, period = m.group(1) or "0", m.group(2), m.group(3)
    if len(whole) + len(fixed) + len(period) > 100:
        raise _Reject
    value = Fraction(int(whole + fixed + period) - int(whole + fixed), (10 ** len(period) - 1) * 10 ** len(fixed))
    return f"\\frac{{{value.numerator}}}{{{value.denominator}}}"


def _base_numeral(m: re.Match) -> str:
    digits, base = m.group(1), int(m.group(2))
    if 2 <= base <= 16 and all(int(d, 16) < base for d in digits):
        return digits
    return m.group(0)


def _trailing_units(m: re.Match) -> str:
    return "" if not set(m.group(1).lower().split()) & _MATH_WORDS else m.group(0)


@lru_cache(maxsize=8192)
def _normalize(answer: str) -> str:
    """A canonical string for an answer: wrappers, spacing, units and decorations removed."""
    s = " ".join(_unwrap(answer).split())
    for k, v in _UNICODE.items():
        if k in s:
            s = s.replace(k, v)
    s = _strip_text(s)
    for pattern, repl in _REPLACEMENTS:
        s = pattern.sub(repl, s)
    s = _MIXED.sub(lambda m: f"({m[1]}+\\frac{{{m[2] or m[3]}}}{{{m[4] or m[5]}}})", s)
    s = _BASE.sub(_base_numeral, s)
    s = _REPEATING.sub(_repeating, s)
    s = _UNITS.sub(_trailing_units, s)
    s = _SPACES.sub("", s.strip()).rstrip(".")
    if _THOUSANDS.fullmatch(s):
        s = s.replace(",", "")
    return _drop_redundant_groups(s)


# ---------------------------------------------------------------------------------------------
# Tokenizer and parser: a whitelist of tokens, a tree of tuples

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
             "\\emptyset", "\\rfloor", "\\rceil", "\\{", "\\}", "\\|", "\\begin", "\\end"}  # fmt: skip
_OPEN = {"(": ")", "[": "]", "{": "}", "\\{": "\\}", "\\lfloor": "\\rfloor", "\\lceil": "\\rceil"}
_CLOSE = set(_OPEN.values())

Token = tuple[str, str]


def _tokenize(s: str) -> list[Token]:
    tokens: list[Token] = []
    pos = 0
    s = s.rstrip()
    while pos < len(s):
        m = _TOKEN.match(s, pos)
        if not m:
            raise _Reject
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
            raise _Reject
        if kind == "num" and len(text) > MAX_DIGITS:
            raise _Reject
        tokens.append((kind, text))
        if len(tokens) > MAX_TOKENS:
            raise _Reject
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
            raise _Reject

    def nested(self, parse) -> tuple:
        """Every recursion of the grammar passes here, so MAX_DEPTH bounds the Python stack."""
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise _Reject
        node = parse()
        self.depth -= 1
        return node

    def whole(self) -> tuple:
        node = self.relation()
        if self.i != len(self.tokens):
            raise _Reject
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
            elif self.starts_factor():
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
                raise _Reject
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
        raise _Reject


# ---------------------------------------------------------------------------------------------
# Answer structure: text, choice, matrix, union, bracketed sequence, bare list, expression

_MATRIX = re.compile(r"\\begin\{([pbBvV]?matrix|smallmatrix|array)\}(?:\{[^{}]*\})?(.*)\\end\{\1\}", re.DOTALL)
_CHOICE = re.compile(r"\(?([A-E])\)?|\(([A-E])\)[\s:.]*(?:\d|\\).*")  # (B), B, (B) 5
_WORD = re.compile(r"[A-Za-z]{2,}(?:[\s\-'][A-Za-z]+)*")


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
        raise _Reject
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
        raise _Reject
    return ("expr", _Parser(list(tokens)).whole())


def _item(tokens: list[Token]) -> tuple:
    if len(tokens) >= 2 and tokens[0][1] in ("(", "[", "\\{") and _closing_index(tokens) == len(tokens) - 1:
        inner = _split(tokens[1:-1], ",")
        if tokens[0][1] == "\\{":
            return ("set", tuple(_item(p) for p in inner))
        if len(inner) > 1:
            return ("seq", tokens[0][1], tokens[-1][1], tuple(_item(p) for p in inner))
    return _expression(tokens)


def _matrix(body: str) -> tuple:
    rows = body.split("\\\\")
    if rows and not rows[-1].strip():
        rows.pop()
    if not rows or len(rows) > MAX_ITEMS:
        raise _Reject
    cells = tuple(tuple(_expression(_tokenize(c))[1] for c in row.split("&")) for row in rows)
    if len({len(r) for r in cells}) != 1:
        raise _Reject
    return ("matrix", cells)


@lru_cache(maxsize=8192)
def _structure(s: str) -> tuple:
    """The parsed form of a normalised answer; ("raw",) when it is neither maths nor words."""
    try:
        choice = _CHOICE.fullmatch(s)
        if choice:
            return ("choice", choice.group(1) or choice.group(2))
        if _WORD.fullmatch(s) and not set(s.lower().split()) & _MATH_WORDS:
            return ("text", " ".join(s.lower().replace("-", " ").split()))
        matrix = _MATRIX.fullmatch(s)
        if matrix:
            return _matrix(matrix.group(2))
        if "\\begin" in s:
            raise _Reject
        if s == "\\emptyset":
            return ("set", ())
        tokens = _tokenize(s)
        unions = _split(tokens, "\\cup")
        if len(unions) > 1:
            return ("union", tuple(_item(p) for p in unions))
        items = _split(tokens, ",")
        if len(items) > 1:
            return ("list", tuple(_item(p) for p in items))
        return _item(tokens)
    except (_Reject, ValueError, ZeroDivisionError, RecursionError):
        return ("raw",)


# ---------------------------------------------------------------------------------------------
# Exact arithmetic: polynomials with rational coefficients in the variables, pi, e and i (i^2 = -1)

Poly = dict  # monomial (sorted tuple of (name, exponent)) -> nonzero Fraction
_I = (("i", 1),)


def _check(q: Fraction) -> Fraction:
    if q.numerator.bit_length() > MAX_BITS or q.denominator.bit_length() > MAX_BITS:
        raise _Reject
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
        raise _NotExact
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
        raise _NotExact
    return out


def _inverse(a: Poly) -> Poly:
    """1/a for a nonzero Gaussian rational; anything with variables is left to sympy."""
    if not a:
        raise _Reject
    if set(a) - {(), _I}:
        raise _NotExact
    re_, im = a.get((), Fraction(0)), a.get(_I, Fraction(0))
    norm = re_ * re_ + im * im
    return _add(_const(re_ / norm), {_I: _check(-im / norm)} if im else {})


def _nth_root(q: Fraction, n: int) -> Fraction:
    """Exact n-th root of a non-negative rational, or _NotExact."""
    if q < 0 or n < 1:
        raise _NotExact
    out = []
    for v in (q.numerator, q.denominator):
        r = sympy.integer_nthroot(v, n)
        if not r[1]:
            raise _NotExact
        out.append(r[0])
    return Fraction(out[0], out[1])


def _constant(a: Poly) -> Fraction:
    """The value of a real constant polynomial."""
    if set(a) - {()}:
        raise _NotExact
    return a.get((), Fraction(0))


def _power(base: Poly, exp: Poly) -> Poly:
    q = _constant(exp)
    if q.denominator != 1:
        if q.denominator > 64:
            raise _NotExact
        base, q = _const(_nth_root(_constant(base), q.denominator)), Fraction(q.numerator)
    n = int(q)
    if n < 0:
        base, n = _inverse(base), -n
    if n == 0:
        if not base:
            raise _NotExact  # 0^0
        return {(): Fraction(1)}
    if len(base) == 1:
        ((mono, c),) = base.items()
        bits = max(c.numerator.bit_length(), c.denominator.bit_length())
        if abs(c) != 1 and bits * n > MAX_BITS or n * max((e for _, e in mono), default=0) > MAX_BITS:
            raise _Reject
        powers = {name: e * n for name, e in mono}
        sign = _reduce_i(powers)
        return {tuple(sorted(powers.items())): _check(sign * c**n)}
    if n > 64:
        raise _NotExact
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
        raise _NotExact
    if q > limit:
        raise _Reject
    return int(q)


def _exact(node: tuple) -> Poly:
    """Exact value of a parsed node, or _NotExact when it needs sympy (radicals, functions, 1/x, ...)."""
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
        return _add(_exact(node[1]), _exact(node[2]))
    if kind == "neg":
        return _neg(_exact(node[1]))
    if kind == "mul":
        return _mul(_exact(node[1]), _exact(node[2]))
    if kind == "div":
        return _mul(_exact(node[1]), _inverse(_exact(node[2])))
    if kind == "pow":
        return _power(_exact(node[1]), _exact(node[2]))
    if kind == "root":
        n = _integer(_exact(node[2]), 64)
        return _const(_nth_root(_constant(_exact(node[1])), n))
    if kind == "fact":
        return _const(Fraction(math.factorial(_integer(_exact(node[1]), MAX_FACTORIAL))))
    if kind == "binom":
        n, k = _integer(_exact(node[1]), MAX_BITS), _integer(_exact(node[2]), MAX_BITS)
        return _const(Fraction(math.comb(n, k)))
    if kind in ("abs", "floor", "ceil"):
        q = _constant(_exact(node[1]))
        return _const({"abs": abs(q), "floor": Fraction(math.floor(q)), "ceil": Fraction(math.ceil(q))}[kind])
    raise _NotExact


# ---------------------------------------------------------------------------------------------
# Sympy: only inside the helper process (or an explicit in-process call with use_sympy=True)

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
                raise _Reject
        return sympy.Pow(base, exp)
    if kind == "root":
        x, n = args
        if n.is_Integer and n % 2 == 1 and x.is_negative:
            return -sympy.root(-x, n)
        return sympy.root(x, n)
    if kind == "fact":
        if args[0].is_Integer and args[0] > MAX_FACTORIAL:
            raise _Reject
        return sympy.factorial(args[0])
    if kind == "binom":
        return sympy.binomial(args[0], args[1])
    if kind in ("abs", "floor", "ceil"):
        return {"abs": sympy.Abs, "floor": sympy.floor, "ceil": sympy.ceiling}[kind](args[0])
    if kind == "func":
        name, x = args
        if name not in ("log", "ln", "exp") and x.is_number and abs(complex(x.evalf(15))) > 1e6:
            raise _Reject  # sin(e^(e^100)) would need that many digits of pi
        return _SYMPY_FUNCS[name](x)
    if kind == "log":
        return sympy.log(args[1], args[0])
    raise _Reject


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
        raise _Reject
    x, y = _to_sympy(a), _to_sympy(b)
    symbols = sorted(x.free_symbols | y.free_symbols, key=str)
    if not symbols:
        return x, y, [{}]
    points = [{s: sympy.Rational(p[k % len(p)] + k) for k, s in enumerate(symbols)} for p in _POINTS]
    return x, y, points


def _sympy_equal(a: tuple, b: tuple) -> bool:
    x, y, points = _sympy_pair(a, b)
    if x == y:
        return True
    if any(v.has(sympy.oo, -sympy.oo, sympy.zoo, sympy.nan) for v in (x, y)):
        return False
    # Exact sympy forms that differ can still be equal (sqrt(3+2sqrt2) = 1+sqrt2, identities in x):
    # 60-digit values at generic points decide, relative to their size.
    return all(_numbers_close(x.subs(p), y.subs(p)) for p in points)


def _sympy_proportional(a: tuple, b: tuple) -> bool:
    x, y, points = _sympy_pair(a, b)
    first_y = sympy.N(y.subs(points[0]), 60)
    if not first_y.is_number or first_y == 0:
        return False
    k = sympy.N(x.subs(points[0]), 60) / first_y
    return k != 0 and all(_numbers_close(x.subs(p), k * y.subs(p)) for p in points)


# ---------------------------------------------------------------------------------------------
# Comparison of structures


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
                raise _Reject
    if len(out) > 8:
        raise _Reject
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
            return _exact(a) == _exact(b)
        except (_NotExact, ZeroDivisionError, OverflowError):
            pass
    if not use_sympy:
        raise _NeedSympy
    return _sympy_equal(a, b)


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
        pa, pb = _exact(a), _exact(b)
    except (_NotExact, ZeroDivisionError, OverflowError):
        if not use_sympy:
            raise _NeedSympy from None
        return _sympy_proportional(a, b)
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


def _compare(a: str, b: str, use_sympy: bool) -> bool:
    """Equivalence of two normalised answers; _NeedSympy escapes when use_sympy is False."""
    try:
        return _equal(_canonical(_structure(a)), _canonical(_structure(b)), use_sympy)
    except (_Reject, ZeroDivisionError, OverflowError, ValueError, RecursionError):
        return False


# ---------------------------------------------------------------------------------------------
# The sympy helper process: killed when a comparison runs out of time


def _helper_main(conn) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is for the parent; it closes the pipe
    while True:
        try:
            a, b = conn.recv()
        except (EOFError, OSError):
            return
        try:
            verdict = _compare(a, b, use_sympy=True)
        except Exception:  # whatever hostile input breaks in sympy counts as not equivalent
            verdict = False
        try:
            conn.send(verdict)
        except OSError:
            return


class _Helper:
    def __init__(self):
        # fork starts in milliseconds with sympy already imported; spawn is the fallback elsewhere.
        ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
        self.conn, child = ctx.Pipe()
        self.process = ctx.Process(target=_helper_main, args=(child,), daemon=True)
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


def _in_process_verdict(a: str, b: str, deadline: float) -> bool:
    """Inside a daemonic multiprocessing worker, which may not start a helper: SIGALRM bounds the time
    there (such workers run their tasks on the main thread); elsewhere only the guards do."""
    if threading.current_thread() is not threading.main_thread():
        return _compare(a, b, use_sympy=True)

    def alarm(signum, frame):
        raise _Timeout

    previous = signal.signal(signal.SIGALRM, alarm)
    try:
        try:
            signal.setitimer(signal.ITIMER_REAL, max(deadline - time.monotonic(), 0.001))
            return _compare(a, b, use_sympy=True)
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
    except _Timeout:  # also when the alarm lands between the answer and disarming the timer
        return False
    finally:
        signal.signal(signal.SIGALRM, previous)


def _sympy_verdict(a: str, b: str, deadline: float) -> bool:
    """Ask an idle helper (one per concurrent caller); on timeout kill it, so the caller returns in time."""
    key = (a, b)
    if key in _VERDICTS:
        return _VERDICTS[key]
    with _LOCK:
        helper = _IDLE.pop() if _IDLE else None
    if helper is None or not helper.process.is_alive():
        if mp.current_process().daemon:
            return _in_process_verdict(a, b, deadline)
        helper = _Helper()
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


def is_equivalent(pred: str, gold: str, timeout: float = 2.0) -> bool:
    """Whether two final answers are mathematically the same; a timeout counts as not equivalent."""
    deadline = time.monotonic() + timeout
    if not isinstance(pred, str) or not isinstance(gold, str):
        return False
    if len(pred) > MAX_CHARS or len(gold) > MAX_CHARS:
        return pred.strip() == gold.strip() != ""
    try:
        a, b = _normalize(pred), _normalize(gold)
    except _Reject:
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
        return _compare(a, b, use_sympy=False)
    except _NeedSympy:
        return _sympy_verdict(a, b, deadline)


def reward(solution: str, gold: str, timeout: float = 2.0) -> float:
    """1.0 when the solution's final answer is equivalent to `gold`, else 0.0."""
    answer = extract_answer(solution)
    return 1.0 if answer is not None and is_equivalent(answer, gold, timeout) else 0.0


_POOL: ProcessPoolExecutor | None = None
_POOL_WORKERS = 0


def _pool_init() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _pool(workers: int) -> ProcessPoolExecutor:
    """A pool kept for the life of the process. Workers come from a forkserver that has imported this
    module, so they start fast and never inherit the threads (torch, tokenizers) of a training process."""
    global _POOL, _POOL_WORKERS
    with _LOCK:
        if _POOL is None or _POOL_WORKERS != workers:
            if _POOL is not None:
                _POOL.shutdown(wait=False, cancel_futures=True)
            if "forkserver" in mp.get_all_start_methods():
                ctx = mp.get_context("forkserver")
                ctx.set_forkserver_preload([__name__])
            else:
                ctx = mp.get_context("spawn")
            _POOL = ProcessPoolExecutor(workers, mp_context=ctx, initializer=_pool_init)
            _POOL_WORKERS = workers
        return _POOL


def rewards(solutions: list[str], golds: list[str], workers: int = 0, timeout: float = 2.0) -> list[float]:
    """`reward` over a batch, spread over `workers` processes (0: one per CPU core this process may use)."""
    global _POOL
    if len(solutions) != len(golds):
        raise ValueError(f"{len(solutions)} solutions but {len(golds)} gold answers")
    if not workers:
        workers = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    if workers <= 1 or len(solutions) < MIN_POOL_BATCH:
        return [reward(s, g, timeout) for s, g in zip(solutions, golds, strict=True)]
    chunk = -(-len(solutions) // (4 * workers))
    try:
        return list(_pool(workers).map(reward, solutions, golds, [timeout] * len(solutions), chunksize=chunk))
    except BrokenProcessPool:
        _POOL = None  # a worker died (killed, out of memory): grade here and start a fresh pool next time
        return [reward(s, g, timeout) for s, g in zip(solutions, golds, strict=True)]
