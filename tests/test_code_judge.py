"""The judge keeps Python's semantics for honest programs: the values the tests see, through the proxies, are what
the program returned (types, iterators, in-place changes, exceptions, its own objects), and the names the tests
take from the program are exactly those it is asked to write."""

import ast
import time

import pytest
from score.code import run_programs
from score.code.judge import entry_points


def judge(program: str, tests: str, preamble: str = ""):
    return run_programs([program], [tests], 5.0, workers=2, preambles=[preamble])[0]


VALUES = """
EXPECTED = (1, [2.5, None], {"a": {3, 4}}, frozenset({5}), b"x", 2 ** 100, -7, 1 + 2j, True, "é\\ud800", range(2, 9, 3))
def values():
    return EXPECTED
def nan():
    return float("nan"), float("-inf"), -0.0
def squares(n):
    for i in range(n):
        yield i * i
def mapped(xs):
    return map(abs, xs)
"""
VALUE_TESTS = """
import math
v = values()
expected = (1, [2.5, None], {"a": {3, 4}}, frozenset({5}), b"x", 2 ** 100, -7, 1 + 2j, True, "é\\ud800", range(2, 9))
assert v[:-1] == expected[:-1] and v[-1] == range(2, 9, 3)
assert type(v) is tuple and type(v[1]) is list and type(v[2]["a"]) is set and type(v[8]) is bool
assert v != list(v)
n, inf, zero = nan()
assert math.isnan(n) and inf == -math.inf and math.copysign(1, zero) == -1
g = squares(4)
assert next(g) == 0 and list(g) == [1, 4, 9]
assert list(mapped([-1, 2])) == [1, 2]
"""


def test_plain_values_keep_their_exact_types_and_iterators_stay_iterators():
    outcome = judge(VALUES, VALUE_TESTS)
    assert outcome.passed, outcome.status


def test_arguments_the_call_changes_in_place_are_changed_for_the_tests():
    program = "def sort_in_place(xs, d, s):\n    xs.sort()\n    d['new'] = 1\n    s.add(9)\n"
    program += "def keep(xs):\n    return len(xs)\n"
    tests = "a, d, s = [3, 1, 2], {}, {1}\nassert sort_in_place(a, d, s=s) is None\n"
    tests += "assert a == [1, 2, 3] and d == {'new': 1} and s == {1, 9}\nassert keep(a) == 3 and a == [1, 2, 3]\n"
    assert judge(program, tests).passed


def test_exceptions_reach_the_tests_as_the_builtin_kind():
    program = "def parse(x):\n    if x < 0:\n        raise ValueError('negative')\n    return x\n"
    program += "class Mine(Exception):\n    pass\ndef odd():\n    raise Mine('mine')\n"
    tests = "try:\n    parse(-1)\nexcept ValueError as e:\n    assert str(e) == 'negative'\nelse:\n    assert False\n"
    tests += (
        "try:\n    odd()\nexcept ValueError:\n    assert False\nexcept Exception as e:\n    assert 'Mine' in str(e)\n"
    )
    assert judge(program, tests).passed
    exits = judge("def parse(x):\n    raise SystemExit(0)\n", "assert parse(1) == 1\n")
    assert not exits.passed and exits.status.startswith("failed (ProgramError: SystemExit")


def test_the_programs_own_objects_stay_in_the_program():
    """MBPP 601 (Pair objects the tests build) and 367 (a tree the setup code links through attributes)."""
    pairs = "class Pair:\n    def __init__(self, a, b):\n        self.a, self.b = a, b\n"
    pairs += "def longest(ps, n):\n    return sum(p.b - p.a for p in ps[:n])\n"
    assert judge(pairs, "assert longest([Pair(1, 3), Pair(2, 7)], 2) == 7\nassert Pair(1, 2).b == 2\n").passed
    tree = "class Node:\n    def __init__(self, data):\n        self.data, self.left, self.right = data, None, None\n"
    tree += "def height(node):\n    return 0 if node is None else 1 + max(height(node.left), height(node.right))\n"
    tests = "root = Node(1)\nroot.left = Node(2)\nroot.left.left = Node(3)\nassert height(root) == 3\n"
    tests += "assert root == root and root != Node(1) and root.left.data == 2\n"
    assert judge(tree, tests).passed


def test_a_program_object_cannot_pass_for_plain_data_or_a_truth_it_does_not_have():
    program = "class Box:\n    def __bool__(self):\n        return False\ndef box():\n    return Box()\n"
    assert not judge(program, "assert box()\n").passed
    assert judge(program, "assert not box()\n").passed
    assert not judge(program, "assert box() == box()\n").passed


def test_humaneval_style_check_with_a_helper_from_the_preamble():
    preamble = 'def twice(x):\n    return 2 * x\n\ndef quad(x):\n    """Four times x, using twice."""\n'
    tests = "def check(candidate):\n    assert candidate(3) == twice(6)\n\ncheck(quad)\n"
    assert judge("def quad(x):\n    return twice(twice(x))\n", tests, preamble).passed
    assert not judge("def quad(x):\n    return x\n", tests, preamble).passed


def test_a_program_that_does_not_load_or_defines_no_entry_point():
    syntax = judge("def square(x) return x", "assert square(2) == 4\n")
    assert not syntax.passed and syntax.status.startswith("error (program: SyntaxError")
    missing = judge("def cube(x):\n    return x ** 3\n", "assert square(2) == 4\n")
    assert not missing.passed and "NameError" in missing.status


def test_tests_that_cannot_run_are_named_as_such():
    outcome = judge("def f():\n    return 1\n", "assert f( == 1\n")
    assert not outcome.passed and outcome.status.startswith("error (tests: SyntaxError")


@pytest.mark.parametrize(
    "tests, preamble, names",
    [
        ("assert square(2) == 4\n", "", ["square"]),
        ("import math\nx = 3\nassert math.isclose(f(x), g(x))\nassert len(h()) == 1\n", "", ["f", "g", "h"]),
        ("def check(candidate):\n    assert candidate(1) == poly([1], 1)\n\ncheck(find_zero)\n",
         "import math\ndef poly(xs, x):\n    return sum(xs)\ndef find_zero(xs):\n    \"\"\"doc\"\"\"\n", ["find_zero"]),
        ("def check(c):\n    assert c([[1]], 1) == 1\n\ncheck(max_fill)\n",
         "def max_fill(grid, capacity):\n    import math\n    \"\"\"doc\"\"\"\n", ["max_fill"]),
        ("root = Node(1)\nroot.left = Node(2)\nassert height(root) == 2\n", "", ["Node", "height"]),
        ("for i in range(3):\n    assert f(i) == [y for y in [i]]\n", "", ["f"]),
        ("assert sum(10, 15) == 6\n", "", []),  # MBPP 126 names its function sum: the tests' sum is the builtin
    ],
)  # fmt: skip
def test_entry_points_are_the_names_the_program_is_asked_to_write(tests, preamble, names):
    assert entry_points(ast.parse(tests), ast.parse(preamble)) == names


def test_subclasses_of_plain_types_and_builtin_types_as_plain_python_compares_them():
    """MBPP 40/88/653/902 return Counter or defaultdict, 533 passes a type: their reference solutions pass."""
    program = "from collections import Counter, defaultdict, namedtuple\nP = namedtuple('P', 'x y')\n"
    program += "def count(xs):\n    return Counter(xs)\ndef group(xs):\n    d = defaultdict(list)\n"
    program += "    for k, v in xs:\n        d[k].append(v)\n    return d\ndef point():\n    return P(1, 2)\n"
    program += "def drop(xs, kind):\n    return [x for x in xs if not isinstance(x, kind)]\n"
    program += "def kind():\n    return float\n"
    tests = "assert count('aab') == {'a': 2, 'b': 1}\nassert group([('k', 1), ('k', 2)]) == {'k': [1, 2]}\n"
    tests += "assert point() == (1, 2)\nassert drop((1, 2.5, 'x'), int) == [2.5, 'x']\nassert kind() is float\n"
    assert judge(program, tests).passed


def test_the_program_is_paused_while_the_tests_run():
    """A program that writes its own reply and then spins: once the reply is read it is stopped, so the judge's
    work (decoding, the tests) and the program never take two cores at once."""
    from score.code import jail
    from score.code.judge import Program

    spinner = "import os\nos.write(4, b'{\"value\":null}\\n')\nwhile True:\n    pass\n"
    program = Program(jail.start(jail.find_bwrap(), 5.0, jail.Limits()), 1024)
    try:
        program.ask({"program": spinner})
        deadline, state = time.monotonic() + 2, ""
        while state != "T" and time.monotonic() < deadline:  # SIGSTOP lands when the process is next scheduled
            with open(f"/proc/{program.pid}/stat") as f:
                state = f.read().rsplit(")", 1)[1].split()[0]
        assert state == "T"  # stopped
    finally:
        program.close()
