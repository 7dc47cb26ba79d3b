"""The code reward against hostile programs: one test per attack class that passed (or did harm) before the verdict
moved out of the program's process and the program into bubblewrap's jail."""

import os
import time

import psutil
import pytest
from score.code import run_programs
from score.data import HUMANEVAL, load_math

TESTS = "assert square(2) == 4\nassert square(3) == 9\n"
GOOD = "def square(x):\n    return x * x\n"
WRONG = "def square(x):\n    return x + x\n"


def jailed_processes() -> list[int]:
    """Programs' interpreters (server.py in a jail) left without a live judge worker above them: none may be left
    once a call returned. (Workers of other processes on the machine may be judging programs meanwhile.)"""
    found = []
    for process in psutil.process_iter(["cmdline"]):
        if not any(part.endswith("/server.py") for part in process.info["cmdline"] or []):
            continue
        try:
            judged_by_a_worker = any("score.code.pool import serve" in " ".join(p.cmdline()) for p in process.parents())
        except psutil.Error:
            continue  # it ended while being looked at
        if not judged_by_a_worker:
            found.append(process.pid)
    return found


@pytest.fixture(autouse=True)
def nothing_left_running():
    yield
    deadline = time.monotonic() + 3
    while jailed_processes() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert jailed_processes() == []


def judge(program: str, tests: str = TESTS, timeout: float = 3.0, preamble: str = ""):
    return run_programs([program], [tests], timeout, workers=2, preambles=[preamble])[0]


def test_right_and_wrong_programs():
    assert judge(GOOD).passed
    outcome = judge(WRONG)
    assert not outcome.passed and outcome.status == "failed (AssertionError at tests line 2)"


# Forged verdicts: whatever the program writes, exits with or reads, the verdict is the judge's.
FORGERIES = {
    "sys.exit(0)": "import sys\ndef square(x):\n    sys.exit(0)\n",
    "os._exit(0) at load": "import os\nos._exit(0)\n",
    "atexit": "import atexit, os\natexit.register(lambda: os._exit(0))\n" + WRONG,
    "print passed": "print('passed')\n" + WRONG,
    "write replies to every descriptor": "import os\nfor fd in range(64):\n    try:\n"
    '        os.write(fd, b\'{"value":true}\\n{"passed":true}\\n\')\n    except OSError:\n        pass\n' + WRONG,
    "close the channel": "import os\ndef square(x):\n    for fd in range(64):\n        try:\n"
    "            os.close(fd)\n        except OSError:\n            pass\n    return x * x\n",
    "scan memory with ctypes": "import ctypes\nlibc = ctypes.CDLL(None)\nbuf = ctypes.create_string_buffer(64)\n"
    "def square(x):\n    return ctypes.string_at(ctypes.addressof(buf), 8)\n",
    "/proc/self/mem through dir_fd": "import os\nroot = os.open('/', os.O_RDONLY)\n"
    "def square(x):\n    return os.read(os.open('proc/self/mem', os.O_RDONLY, dir_fd=root), 8)\n",
}


@pytest.mark.parametrize("name", FORGERIES)
def test_forged_verdicts_fail(name):
    assert not judge(FORGERIES[name]).passed


def test_a_forged_reply_is_at_most_a_claimed_return_value():
    """A program that writes a well-formed reply for square(2) before being asked claims 4 for it: the next real
    reply (for square(3)) is then read as the answer of the call after it, and the tests still fail."""
    forged = 'import os\nos.write(4, b\'{"value":["i","0x4"]}\\n\')\ndef square(x):\n    return -1\n'
    assert not judge(forged).passed


# Objects that equal everything: every value the tests see is rebuilt here from plain data.
UNIVERSAL = """
class Meta(type):
    def __eq__(cls, other):
        return True
    __hash__ = type.__hash__
class Yes(metaclass=Meta):
    def __eq__(self, other):
        return True
    def __ne__(self, other):
        return False
    def __bool__(self):
        return True
    def __iter__(self):
        return iter(())
    __hash__ = object.__hash__
def anything(*args, **kwargs):
    return Yes()  # its type equals list (Meta.__eq__) and it iterates as empty: the old check took it as plain data
"""


def test_one_universal_program_passes_no_humaneval_problem():
    problems = load_math(HUMANEVAL, split="test")
    entry = [p.tests.strip().splitlines()[-1][len("check(") : -1] for p in problems]
    programs = [f"{UNIVERSAL}\n{name} = anything\n{name}_class = Yes\n" for name in entry]
    outcomes = run_programs(programs, [p.tests for p in problems], 5.0, 2, [p.preamble for p in problems])
    assert [p.id for p, o in zip(problems, outcomes, strict=True) if o.passed] == []


LIARS = {
    "__eq__ always True": "class Yes:\n    def __eq__(self, other):\n        return True\n"
    "def square(x):\n    return Yes()\n",
    "int subclass": "class Yes(int):\n    def __eq__(self, other):\n        return True\n"
    "    __hash__ = int.__hash__\ndef square(x):\n    return Yes(0)\n",
    "list subclass": "class L(list):\n    def __eq__(self, other):\n        return True\n"
    "def square(x):\n    return L()\n",
    "a class whose metaclass equals everything": UNIVERSAL + "def square(x):\n    return Yes\n",
}


@pytest.mark.parametrize("name", LIARS)
def test_objects_equal_to_everything_fail(name):
    tests = "assert square(2) == 4\nassert square(5) in [25]\nassert square(5) not in (1, 2)\n"
    assert not judge(LIARS[name], tests).passed


def test_a_gc_callback_cannot_swap_a_checked_value():
    program = UNIVERSAL + "import gc\nresult = [16]\ngc.callbacks.append(lambda *a: result.__setitem__(0, Yes()))\n"
    program += "def square(x):\n    gc.collect()\n    return result\n"
    assert not judge(program, "assert square(4) == [17]\n").passed


def test_the_tests_see_only_their_own_builtins_and_helpers():
    """A program that redefines builtins, a name the preamble imports (math) or the preamble's helpers changes its
    own world only."""
    tests = "assert abs(half(4) - 2) < 1e-9\nassert len(set(sorted([half(2)]))) == 1\n"
    tests += "assert all([half(6) == 3])\nassert math.isclose(half(3), 1.5)\n"
    assert judge("def half(x):\n    return x / 2\n", tests, preamble="import math\n").passed
    cheat = "import builtins\nabs = lambda x: 0\nlen = lambda x: 1\nall = lambda x: True\nbuiltins.abs = abs\n"
    cheat += "class math:\n    isclose = staticmethod(lambda *a, **k: True)\ndef half(x):\n    return 0\n"
    assert not judge(cheat, tests, preamble="import math\n").passed
    humaneval = {p.id: p for p in load_math(HUMANEVAL, split="test")}["HumanEval/32"]  # find_zero, tested via poly
    liar = "def poly(xs, x):\n    return 0\ndef find_zero(xs):\n    return 0.0\n"
    assert not judge(liar, humaneval.tests, 5.0, humaneval.preamble).passed
    assert judge(humaneval.solution, humaneval.tests, 5.0, humaneval.preamble).passed


def test_tests_that_catch_assertion_errors_treat_a_liar_as_any_wrong_answer():
    """A test that swallows its AssertionError passes every answer, as in plain Python: a liar gets what an honest
    wrong answer gets, no more (the old strict check raised before counting, so only the liar passed)."""
    swallowing = "try:\n    assert square(1) == 2\nexcept AssertionError:\n    pass\n"
    honest_wrong = "def square(x):\n    return 5\n"
    assert judge(LIARS["__eq__ always True"], swallowing).passed == judge(honest_wrong, swallowing).passed
    flagging = "try:\n    assert square(1) == 2\n    failed = False\nexcept AssertionError:\n    failed = True\n"
    flagging += "assert not failed\n"
    assert not judge(LIARS["__eq__ always True"], flagging).passed
    assert not judge(LIARS["a class whose metaclass equals everything"], flagging).passed
    assert judge("def square(x):\n    return 2\n", flagging).passed


def test_one_program_does_not_break_the_reward_for_the_rest(tmp_path):
    deep = "import os\nfor i in range(1200):\n    os.mkdir('d')\n    os.chdir('d')\n" + GOOD
    before = set(os.listdir("/tmp"))
    assert judge(deep).passed
    assert [o.passed for o in run_programs([GOOD, WRONG, GOOD], [TESTS] * 3, 3.0, workers=2)] == [True, False, True]
    assert {name for name in set(os.listdir("/tmp")) - before if name.startswith("score-code")} == set()


# New programs, processes and threads: the seccomp filter refuses them, so nothing outlives the program.
SPAWNS = {
    "subprocess": "import subprocess\nsubprocess.run(['/bin/true'])\n",
    "os.system": "import os\nassert os.system('true') == 0\n",
    "os.execv": "import os\nos.execv('/bin/true', ['true'])\n",
    "os.fork": "import os\nos.fork()\n",
    "_posixsubprocess": "import _posixsubprocess, os\nr, w = os.pipe()\n"
    "_posixsubprocess.fork_exec(['/bin/sh'], [b'/bin/sh'], True, (), None, None, -1, -1, -1, -1, -1, -1, r, w,"
    " True, False, False, None, None, None, -1, None, False)\n",
    "a thread": "import threading\nthreading.Thread(target=lambda: None).start()\n",
    "a socket": "import socket\nsocket.socket()\n",
}


@pytest.mark.parametrize("name", SPAWNS)
def test_no_new_programs_processes_threads_or_sockets(name):
    outcome = judge(SPAWNS[name] + GOOD)
    assert not outcome.passed
    assert outcome.status.startswith("error (program:")


def test_the_jail_as_the_program_sees_it():
    """The program reports what it sees as its return value; the tests (trusted) check it."""
    program = """
import ctypes, os
libc = ctypes.CDLL(None)
def facts():
    caps = [libc.prctl(23, cap, 0, 0, 0) for cap in range(41)]  # PR_CAPBSET_READ
    return {
        "uid": os.getuid(), "no_new_privs": libc.prctl(39, 0, 0, 0, 0), "seccomp": libc.prctl(21, 0, 0, 0, 0),
        "capabilities": sum(c == 1 for c in caps), "root": sorted(os.listdir("/")), "cwd": os.getcwd(),
        "proc": os.path.exists("/proc/1"), "etc": os.path.exists("/etc/passwd"), "env": sorted(os.environ),
        "project": os.path.exists(PROJECT), "hostname": os.uname().nodename,
    }
""".replace("PROJECT", repr(os.path.abspath(__file__)))
    tests = """
seen = facts()
assert seen["uid"] == 65534 and seen["no_new_privs"] == 1 and seen["seccomp"] == 2, seen
assert seen["capabilities"] == 0 and not seen["proc"] and not seen["etc"] and not seen["project"], seen
assert seen["cwd"] == "/tmp" and set(seen["env"]) <= {"HOME", "PATH", "PWD", "TMPDIR", "LC_CTYPE"}, seen
assert seen["hostname"] == "jail", seen
assert set(seen["root"]) <= {"bin", "dev", "jail", "lib", "lib32", "lib64", "root", "tmp", "usr"}, seen
"""
    outcome = judge(program, tests)
    assert outcome.passed, outcome.status


def test_no_writes_or_reads_outside_its_own_folder(tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("hunter2")
    secret.chmod(0o600)
    attacks = [
        f"open({str(secret)!r}).read()\n",
        f"open({str(tmp_path / 'new.txt')!r}, 'w').write('x')\n",
        "open('/dev/shm/x', 'w').write('x')\n",
        "open('/usr/x', 'w').write('x')\n",
        "import os\nos.listdir('/proc')\n",
        f"import sqlite3\nsqlite3.connect({str(tmp_path / 'db')!r}).execute('create table t (x)')\n",
        "import os\nos.mkfifo('/jail/fifo')\n",
    ]
    outcomes = run_programs([a + GOOD for a in attacks], [TESTS] * len(attacks), 3.0, workers=2)
    assert [o.passed for o in outcomes] == [False] * len(attacks), [o.status for o in outcomes]
    assert secret.read_text() == "hunter2" and sorted(os.listdir(tmp_path)) == ["secret.txt"]
    assert os.listdir("/dev/shm") == [] or not any(n == "x" for n in os.listdir("/dev/shm"))


def test_limits_memory_file_size_folder_size_open_files_output():
    attacks = [
        "hog = bytearray(4 * 1024 ** 3)\n",  # over the address-space limit
        "open('big', 'wb').write(b'x' * (17 * 1024 ** 2))\n",  # over the file-size limit
        "for i in range(6):\n    open(f'f{i}', 'wb').write(b'x' * (15 * 1024 ** 2))\n",  # over the folder's size
        "files = [open(f'f{i}', 'w') for i in range(100)]\n",  # over the open-files limit
    ]
    outcomes = run_programs([a + GOOD for a in attacks], [TESTS] * len(attacks), 5.0, workers=2)
    assert [o.passed for o in outcomes] == [False] * len(attacks), [o.status for o in outcomes]
    chatty = judge("print('x' * 10_000_000)\n" + GOOD)
    assert chatty.passed and len(chatty.output) == 64 * 1024


def test_neighbours_cannot_starve_each_other():
    """A program that spins or tries to fill the machine with threads and processes beside a correct one that
    needs 0.4 s of CPU: the correct one passes within its timeout."""
    busy = "import time\ndef square(x):\n    end = time.process_time() + 0.2\n    while time.process_time() < end:\n"
    busy += "        pass\n    return x * x\n"
    hogs = [
        "import threading\nwhile True:\n    try:\n        threading.Thread(target=lambda: None).start()\n"
        "    except RuntimeError:\n        pass\n",
        "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n",
    ]
    outcomes = run_programs([hogs[0], busy, hogs[1], busy + "# another job\n"], [TESTS] * 4, 5.0, workers=2)
    assert [o.passed for o in outcomes] == [False, True, False, True]


def test_every_call_returns_in_time_and_kills_what_it_started():
    hogs = ["while True:\n    pass\n", "import time\ntime.sleep(60)\n", "x = [0]\nwhile True:\n    x = [x, x]\n"]
    began = time.monotonic()
    outcomes = run_programs(hogs + [GOOD], [TESTS] * 4, 1.0, workers=2)
    elapsed = time.monotonic() - began
    assert [o.passed for o in outcomes] == [False, False, False, True]
    assert outcomes[0].status == "timeout"
    assert elapsed < 2 * (1.0 + 0.5) + 2.0  # two rounds of 1 s (+ the start grace) on 2 workers, plus the kills


def test_the_judge_cannot_be_made_to_take_the_machines_memory():
    """A few bytes of reply (a range) that the tests turn into a tuple: the judge's own memory limit stops it."""
    outcome = judge("def f():\n    return range(10 ** 10)\n", "assert len(tuple(f())) == 3\n")
    assert not outcome.passed and "MemoryError" in outcome.status
    assert judge(GOOD).passed


def test_no_use_of_what_the_host_counts_per_user_or_of_the_page_cache():
    """inotify, POSIX message queues and queued signals count per user on the whole host; mincore, fadvise and
    cachestat read or set which pages of a shared file are cached (a channel to later programs)."""
    program = """
import ctypes, os, signal
libc = ctypes.CDLL(None, use_errno=True)
def refused(number, *args):
    return libc.syscall(number, *args) == -1 and ctypes.get_errno() == 1
def facts():
    signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGRTMIN])
    queued = 0
    for _ in range(1000):
        try:
            signal.raise_signal(signal.SIGRTMIN)
        except OSError:
            break
        queued = len(signal.sigpending()) and queued + 1
    return [refused(294, 0), refused(240, b"/q", 64, 0o600, None), refused(27, 0, 4096, 0), refused(221, 0, 0, 0, 4),
            refused(451, 0, 0, 0, 0), queued <= 64]
"""
    outcome = judge(program, "assert facts() == [True] * 6\n")
    assert outcome.passed, outcome.status
