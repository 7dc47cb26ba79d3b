"""The sandbox against hostile programs: every attack here would pass, or do harm, without the defence it names."""

import os
import subprocess
import sys
import textwrap
import time

import pytest
from score.code import run_programs
from score.code.sandbox import SANDBOX_UID, Limits

TESTS = "assert square(2) == 4\nassert square(3) == 9\n"
GOOD = "def square(x):\n    return x * x\n"
WRONG = "def square(x):\n    return x + x\n"


def sandbox_processes() -> list[int]:
    """Processes running as the sandbox uid: none may be left once a call returned."""
    pids = []
    for entry in os.listdir("/proc"):
        try:
            with open(f"/proc/{entry}/status") as f:
                uid = next(line.split()[1] for line in f if line.startswith("Uid:"))
        except (OSError, StopIteration):
            continue
        if entry.isdigit() and int(uid) == SANDBOX_UID:
            pids.append(int(entry))
    return pids


@pytest.fixture(autouse=True)
def nothing_left_running():
    yield
    deadline = time.monotonic() + 2
    while sandbox_processes() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert sandbox_processes() == []


def judge(program: str, tests: str = TESTS, timeout: float = 3.0):
    return run_programs([program], [tests], timeout, workers=2)[0]


def test_right_and_wrong_programs():
    assert judge(GOOD).passed
    outcome = judge(WRONG)
    assert not outcome.passed and "AssertionError" in outcome.output


# Early exits with status 0: the verdict is the harness's token, written only after the last test.
EARLY_EXITS = {
    "sys.exit": "import sys\ndef square(x):\n    sys.exit(0)\n",
    "os._exit": "import os\ndef square(x):\n    os._exit(0)\n",
    "exit()": "def square(x):\n    exit()\n",
    "atexit": "import atexit, os\natexit.register(lambda: os._exit(0))\n" + WRONG,
    "excepthook": "import sys, os\nsys.excepthook = lambda *a: os._exit(0)\n" + WRONG,
    "print passed": "print('passed')\nprint('ok')\n" + WRONG.replace("x + x", "print('passed') or x + x"),
    "guess the verdict descriptor": "import os\nfor fd in range(3, 64):\n    try:\n        os.write(fd, b'passed\\n')\n"
    "    except OSError:\n        pass\n" + WRONG,
}


@pytest.mark.parametrize("name", EARLY_EXITS)
def test_early_exit_or_fake_verdict_fails(name):
    assert not judge(EARLY_EXITS[name]).passed


# Results that claim to equal anything: every value an assert depends on must be plain data of exact types.
LIARS = {
    "__eq__ always True": "class Yes:\n    def __eq__(self, other):\n        return True\n"
    "def square(x):\n    return Yes()\n",
    "int subclass": "class Yes(int):\n    def __eq__(self, other):\n        return True\n"
    "    __hash__ = int.__hash__\ndef square(x):\n    return Yes(0)\n",
    "truthy object": "class Yes:\n    def __bool__(self):\n        return True\ndef square(x):\n    return Yes()\n",
    "list subclass": "class L(list):\n    def __eq__(self, other):\n        return True\n"
    "def square(x):\n    return L()\n",
}
LIAR_TESTS = "assert square(2) == 4\nassert square(3)\nassert not not square(4)\nassert square(5) == [25]\n"


@pytest.mark.parametrize("name", LIARS)
def test_objects_equal_to_everything_fail(name):
    assert not judge(LIARS[name], LIAR_TESTS).passed


def test_comparisons_through_arithmetic_are_checked_too():
    evil = "class Z:\n    def __sub__(self, o):\n        return self\n    def __abs__(self):\n        return self\n"
    evil += "    def __lt__(self, o):\n        return True\ndef area(r):\n    return Z()\n"
    assert not judge(evil, "assert abs(area(1) - 3.14159) < 1e-3\n").passed
    assert judge("def area(r):\n    return 3.14159 * r * r\n", "assert abs(area(1) - 3.14159) < 1e-3\n").passed


def test_rebinding_builtins_and_modules_does_not_reach_the_tests():
    tests = "import math\nassert math.isclose(half(3), 1.5)\nassert abs(half(4) - 2) < 1e-9\n"
    assert judge("def half(x):\n    return x / 2\n", tests).passed
    patched = "import math, builtins\nmath.isclose = lambda *a, **k: True\nbuiltins.abs = lambda x: 0\n"
    assert not judge(patched + "def half(x):\n    return 0\n", tests).passed
    late = "def half(x):\n    import builtins\n    builtins.exec = lambda *a, **k: None\n    return 0\n"
    assert not judge(late, tests).passed


# A program that finds the harness's frames can read the token and write it itself: every route is refused.
TOKEN_HUNT = """
import os
def leak(frame):
    while frame is not None:
        for value in list(frame.f_locals.values()):
            if isinstance(value, str) and len(value) == 32:
                for fd in range(3, 16):
                    try:
                        os.write(fd, (value + "\\n").encode())
                    except OSError:
                        pass
                os._exit(0)
        frame = frame.f_back
def square(x):
    {how}
"""
FRAME_ROUTES = {
    "traceback": "try:\n        1 / 0\n    except ZeroDivisionError as e:\n        leak(e.__traceback__.tb_frame)",
    "sys._getframe": "import sys\n    leak(sys._getframe(0))",
    "generator": "g = (i for i in [1])\n    leak(g.gi_frame)",
    "signal handler": "import signal\n    signal.signal(signal.SIGALRM, lambda n, f: leak(f))\n    signal.alarm(1)\n"
    "    import time\n    time.sleep(2)",
    "gc": "import gc\n    leak(next(o for o in gc.get_objects() if type(o).__name__ == 'frame'))",
    "ctypes": "import ctypes\n    leak(None)",
    "/proc/self/mem": "open('/proc/self/mem', 'rb')",
    "settrace": "import sys\n    sys.settrace(lambda f, e, a: leak(f))\n    (lambda: 0)()",
}


@pytest.mark.parametrize("route", FRAME_ROUTES)
def test_the_token_is_out_of_reach(route):
    assert not judge(TOKEN_HUNT.format(how=FRAME_ROUTES[route])).passed


def test_namedtuple_and_enum_still_work():
    program = "from collections import namedtuple\nimport enum, logging\nP = namedtuple('P', 'x y')\n"
    program += "class C(enum.Enum):\n    A = 1\nlogging.getLogger().warning('hi')\n"
    program += "def square(x):\n    return P(x * x, 0).x\n"
    assert judge(program).passed


def test_no_new_programs_no_network_no_writes_outside(tmp_path):
    outside = tmp_path / "keep.txt"
    outside.write_text("mine")
    attacks = [
        "import subprocess\nsubprocess.run(['true'])\n",
        "import os\nos.system('true')\n",
        "import os\nos.execv('/bin/true', ['true'])\n",
        "import os\nos.fork()\n",
        "import socket\nsocket.create_connection(('127.0.0.1', 22), timeout=1)\n",
        f"open({str(tmp_path / 'new.txt')!r}, 'w').write('x')\n",
        f"import os\nos.remove({str(outside)!r})\n",
        f"import os\nos.rename({str(outside)!r}, 'here.txt')\n",
        "import shutil\nshutil.rmtree('/tmp', ignore_errors=False)\n",
    ]
    outcomes = run_programs([a + GOOD for a in attacks], [TESTS] * len(attacks), 3.0, workers=2)
    assert [o.passed for o in outcomes] == [False] * len(attacks)
    assert outside.read_text() == "mine" and not (tmp_path / "new.txt").exists()


def test_own_empty_folder_clean_environment_closed_stdin(monkeypatch):
    monkeypatch.setenv("SCORE_SECRET", "hunter2")
    tests = "import os, sys\nassert os.listdir('.') == []\nassert 'SCORE_SECRET' not in dict(os.environ)\n"
    tests += "assert sys.stdin.read() == ''\nopen('mine.txt', 'w').write('x')\nassert os.listdir('.') == ['mine.txt']\n"
    assert judge("", tests).passed


def test_limits_memory_file_size_open_files_output():
    limits = Limits()
    attacks = [
        "hog = bytearray(4 * 1024 ** 3)\n",  # over the address-space limit
        "open('big', 'wb').write(b'x' * (17 * 1024 ** 2))\n",  # over the file-size limit
        "files = [open(f'f{i}', 'w') for i in range(100)]\n",  # over the open-files limit
    ]
    outcomes = run_programs([a + GOOD for a in attacks], [TESTS] * len(attacks), 5.0, workers=2)
    assert [o.passed for o in outcomes] == [False, False, False]
    chatty = judge("print('x' * 10_000_000)\n" + GOOD)
    assert chatty.passed and len(chatty.output) <= limits.output_bytes


def test_every_call_returns_in_time_with_two_workers_busy():
    hogs = ["while True:\n    pass\n", "import time\ntime.sleep(60)\n", "x = [0]\nwhile True:\n    x = [x, x]\n"]
    began = time.monotonic()
    outcomes = run_programs(hogs + [GOOD], [TESTS] * 4, 1.0, workers=2)
    elapsed = time.monotonic() - began
    assert [o.passed for o in outcomes] == [False, False, False, True]
    assert outcomes[0].status == "timeout"
    assert elapsed < 2 * 1.0 + 2.0  # two rounds of 1 s on 2 workers, plus the kills


def test_forked_and_daemonised_children_die_with_the_program():
    """With the audit hook's fork ban lifted (in a throwaway worker process), a program that double-forks a
    daemon still leaves nothing behind: the PID namespace and the process-group kill take it down."""
    program = textwrap.dedent("""
        import os, time
        if os.fork() == 0:
            os.setsid()
            if os.fork() == 0:
                print('daemon', os.readlink('/proc/self'), flush=True)
                time.sleep(30)
            os._exit(0)
        time.sleep(0.5)
        def square(x):
            return x * x
    """)
    script = textwrap.dedent(f"""
        import sys
        from score.code import harness, sandbox
        harness.BLOCKED_EVENTS = frozenset()
        sandbox._prctl(sandbox.PR_SET_CHILD_SUBREAPER, 1)
        outcome = sandbox.run_job({program!r}, {TESTS!r}, 3.0, sandbox.Limits())
        print(outcome.passed, outcome.output.split()[1])
    """)
    env = {"PATH": os.environ["PATH"], "PYTHONPATH": os.path.join(os.path.dirname(__file__), "..", "code")}
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=30, env=env)
    passed, daemon = out.stdout.split()
    assert passed == "True"
    assert not os.path.exists(f"/proc/{daemon}")


def test_what_the_machine_does_not_enforce_is_one_warning_line(monkeypatch, capsys):
    from score.code import pool

    class Unisolated:
        gaps = ["network isolation (no network namespace)", "a PID namespace per program"]

    monkeypatch.setattr(pool, "Worker", Unisolated)
    monkeypatch.setattr(pool, "_WARNED", [False])
    pool.Pool(2)
    pool.Pool(2)
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and "not enforced" in lines[0] and "network isolation" in lines[0]
