"""Plain data between the judge and a tested program, as one JSON line, rebuilt strictly on the other side.

This module is all a tested program shares with the judge (server.py imports it inside the jail), so it imports
nothing but the standard library. None, bool and str travel as JSON's own; every other value is a list whose
first item names its exact built-in type:

    ["i", hex] int             ["f", float.hex()] float (exact; nan, inf)   ["c", re, im] complex   ["b", hex] bytes
    ["l", ...] list            ["t", ...] tuple     ["s", ...] set          ["fs", ...] frozenset
    ["d", [k, v], ...] dict    ["r", start, stop, step] range               ["it", ...] what an iterator yielded
    ["bi", name] a built-in type (int, ValueError, ...)   ["h", n] an object that stays in the program (its handle)
    ["g", name] a global of the program

decode() builds only those types (a subclass, an object whose __eq__ says yes to everything, cannot be built from
this), and refuses anything else, deeper nesting than MAX_DEPTH, more than MAX_ITEMS values or ints over
MAX_INT_HEX hex digits, with WireError.
"""

from __future__ import annotations

import builtins
import json
from collections.abc import Callable, Iterator

MAX_DEPTH = 100
MAX_ITEMS = 1_000_000
MAX_INT_HEX = 10_000  # 40,000 bits
SEQUENCES = {list: "l", tuple: "t", set: "s", frozenset: "fs"}
BUILDERS = {"l": list, "t": tuple, "s": set, "fs": frozenset}


class WireError(ValueError):
    """A value that cannot be sent, or a message that is not plain data."""


def encode(value: object, other: Callable[[object], list], depth: int = 0) -> object:
    """`value` as tagged JSON data; `other(obj)` gives the tagged form of an object of no plain type (a handle,
    an iterator's items) or raises WireError."""
    if depth > MAX_DEPTH:
        raise WireError(f"nested deeper than {MAX_DEPTH}")
    kind = type(value)
    if value is None or kind is bool or kind is str:
        return value
    if kind is int:
        return ["i", hex(value)]
    if kind is float:
        return ["f", value.hex()]
    if kind is complex:
        return ["c", value.real.hex(), value.imag.hex()]
    if kind is bytes:
        return ["b", value.hex()]
    if kind in SEQUENCES:
        return [SEQUENCES[kind], *(encode(item, other, depth + 1) for item in value)]
    if kind is dict:
        return ["d", *([encode(k, other, depth + 1), encode(v, other, depth + 1)] for k, v in value.items())]
    if kind is range:
        return ["r", hex(value.start), hex(value.stop), hex(value.step)]
    if kind is type and _builtin_type(getattr(value, "__name__", None)) is value:
        return ["bi", value.__name__]
    return other(value)


def _builtin_type(name: object) -> type | None:
    value = getattr(builtins, name, None) if type(name) is str else None
    return value if type(value) is type else None


def dumps(message: dict) -> bytes:
    """One message line: a JSON object whose values are already encoded."""
    return json.dumps(message, separators=(",", ":")).encode() + b"\n"


class _Decoder:
    def __init__(self, remote: Callable[[list], object]) -> None:
        self.remote, self.items = remote, 0

    def value(self, data: object, depth: int = 0) -> object:
        self.items += 1
        if self.items > MAX_ITEMS or depth > MAX_DEPTH:
            raise WireError(f"more than {MAX_ITEMS} values or deeper than {MAX_DEPTH}")
        if data is None or type(data) is bool or type(data) is str:
            return data
        if type(data) is not list or not data or type(data[0]) is not str:
            raise WireError(f"not a tagged value: {type(data).__name__}")
        tag, rest = data[0], data[1:]
        if tag in BUILDERS:
            return BUILDERS[tag](self.value(item, depth + 1) for item in rest)
        if tag == "d":
            pairs = [self.pair(item, depth + 1) for item in rest]
            return dict(pairs)
        if tag == "it":
            return iter([self.value(item, depth + 1) for item in rest])
        if tag in ("h", "g"):
            return self.remote(data)
        if tag == "bi" and len(rest) == 1 and _builtin_type(rest[0]) is not None:
            return _builtin_type(rest[0])
        texts = [self.text(item) for item in rest]
        try:
            if tag == "i" and len(texts) == 1:
                return _int(texts[0])
            if tag == "f" and len(texts) == 1:
                return float.fromhex(texts[0])
            if tag == "c" and len(texts) == 2:
                return complex(float.fromhex(texts[0]), float.fromhex(texts[1]))
            if tag == "b" and len(texts) == 1:
                return bytes.fromhex(texts[0])
            if tag == "r" and len(texts) == 3:
                return range(*(_int(t) for t in texts))
        except (ValueError, OverflowError) as e:
            raise WireError(f"bad {tag!r} value: {str(e)[:100]}") from None
        raise WireError(f"unknown tag {tag[:20]!r}")

    def pair(self, data: object, depth: int) -> tuple:
        if type(data) is not list or len(data) != 2:
            raise WireError("a dict entry is not a [key, value] pair")
        return self.value(data[0], depth), self.value(data[1], depth)

    @staticmethod
    def text(data: object) -> str:
        if type(data) is not str:
            raise WireError("a number is not text")
        return data


def _int(text: str) -> int:
    digits = text.removeprefix("-").removeprefix("0x")
    if len(digits) > MAX_INT_HEX or not text.removeprefix("-").startswith("0x"):
        raise ValueError("not a hex integer of at most MAX_INT_HEX digits")
    return int(text, 16)


def decode(data: object, remote: Callable[[list], object]) -> object:
    """The value `data` (parsed JSON) stands for; `remote(["h", n] or ["g", name])` builds what a handle or a
    global name stands for on this side. WireError when it is not plain data within the limits."""
    try:
        return _Decoder(remote).value(data)
    except (TypeError, RecursionError) as e:  # an unhashable set item or dict key, a JSON nest too deep
        raise WireError(f"not plain data: {str(e)[:100]}") from None


def loads(line: bytes) -> dict:
    """One message line as its JSON object (WireError otherwise); values inside stay encoded."""
    try:
        message = json.loads(line)
    except (ValueError, RecursionError) as e:
        raise WireError(f"not a JSON line: {str(e)[:100]}") from None
    if type(message) is not dict:
        raise WireError("a message is not a JSON object")
    return message


def items(iterator: Iterator, limit: int = MAX_ITEMS) -> list:
    """At most `limit` items of `iterator` (WireError past that): a generator's values, sent as a list."""
    values = []
    for value in iterator:
        if len(values) >= limit:
            raise WireError(f"an iterator gave more than {limit} items")
        values.append(value)
    return values
