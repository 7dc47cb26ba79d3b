"""The plain data the program may send: every type rebuilt exactly, anything else refused with WireError."""

import json
import math

import pytest
from score.code import wire


def no_other(value):
    raise wire.WireError(f"no plain type: {type(value).__name__}")


def round_trip(value):
    line = wire.dumps({"value": wire.encode(value, no_other)})
    return wire.decode(wire.loads(line)["value"], lambda ref: ("remote", *ref))


def test_every_plain_type_comes_back_exactly():
    values = [None, True, 0, -(2**200), 1.5, -0.0, math.inf, 1e-310, 2 - 3j, "é\ud800", b"\x00\xff", [1, (2,)],
              {1: {"a": frozenset({3})}}, {4.5, "x"}, range(-3, 10, 4), [[[]]], ()]  # fmt: skip
    for value in values:
        back = round_trip(value)
        assert back == value and type(back) is type(value)
    assert math.copysign(1, round_trip(-0.0)) == -1 and math.isnan(round_trip(math.nan))


def test_hand_written_encodings():
    assert wire.encode([1, 2.0, (None,)], no_other) == ["l", ["i", "0x1"], ["f", "0x1.0000000000000p+1"], ["t", None]]
    assert wire.encode({"k": b"\x01"}, no_other) == ["d", ["k", ["b", "01"]]]
    assert wire.encode(range(1, 5, 2), no_other) == ["r", "0x1", "0x5", "0x2"]
    assert list(wire.decode(["it", ["i", "0x2"], "x"], no_other)) == [2, "x"]


def test_objects_of_no_plain_type_go_through_other():
    class Mine(int):
        pass

    assert wire.encode([Mine(3)], lambda value: ["h", 7]) == ["l", ["h", 7]]
    with pytest.raises(wire.WireError, match="no plain type: Mine"):
        wire.encode(Mine(3), no_other)


@pytest.mark.parametrize(
    "data, why",
    [
        (3, "not a tagged value"),  # a bare JSON number: every number is tagged
        (["i", "12"], "bad 'i'"),  # not hex
        (["i", "0x" + "f" * (wire.MAX_INT_HEX + 1)], "bad 'i'"),
        (["i", 12], "not text"),
        (["f", "0x1p+1", "extra"], "unknown tag"),
        (["zz"], "unknown tag"),
        (["s", ["l"]], "not plain data"),  # an unhashable set item
        (["d", ["k"]], "pair"),
        ([], "not a tagged value"),
        ({"a": 1}, "not a tagged value"),
    ],
)
def test_malformed_values_are_refused(data, why):
    with pytest.raises(wire.WireError, match=why):
        wire.decode(data, no_other)


def test_limits_on_depth_items_and_lines():
    deep = None
    for _ in range(wire.MAX_DEPTH + 2):
        deep = ["l", deep]
    with pytest.raises(wire.WireError, match="deeper"):
        wire.decode(deep, no_other)
    with pytest.raises(wire.WireError, match="nested deeper"):
        wire.encode([[[[[]]]]], no_other, depth=wire.MAX_DEPTH - 2)
    with pytest.raises(wire.WireError, match="more than"):
        wire.decode(["l", *([None] * (wire.MAX_ITEMS + 1))], no_other)
    with pytest.raises(wire.WireError, match="not a JSON line"):
        wire.loads(b"[" * 100_000)
    with pytest.raises(wire.WireError, match="not a JSON object"):
        wire.loads(json.dumps([1]).encode())
    with pytest.raises(wire.WireError, match="more than 3 items"):
        wire.items(iter(range(10)), limit=3)


def test_builtin_types_travel_by_name_and_nothing_else_does():
    assert wire.encode([int, ValueError], no_other) == ["l", ["bi", "int"], ["bi", "ValueError"]]
    assert round_trip((str, bool)) == (str, bool)
    for name in ["print", "exec", "__import__", "nothing", 3]:  # functions and unknown names are no types
        with pytest.raises(wire.WireError):
            wire.decode(["bi", name], no_other)
    with pytest.raises(wire.WireError, match="no plain type: builtin_function_or_method"):
        wire.encode(print, no_other)
