"""The pool heals: a worker that dies or hangs costs its job (scored as a failure), and later calls work; workers
and jails end with the process that started them."""

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import psutil
from score.code import run_programs
from score.code.pool import START_GRACE, WORKER_GRACE, Worker

TESTS = "assert square(2) == 4\n"
GOOD = "def square(x):\n    return x * x\n"
SLOW = "import time\ntime.sleep(2)\n" + GOOD
ASLEEP = "import time\ntime.sleep(60)\n" + GOOD
CODE = os.path.join(os.path.dirname(__file__), "..", "code")


def workers_of(pid: int) -> list[psutil.Process]:
    return [p for p in psutil.Process(pid).children() if "score.code.pool import serve" in " ".join(p.cmdline())]


def test_a_killed_worker_costs_its_job_only():
    assert run_programs([GOOD, GOOD], [TESTS] * 2, 5.0, workers=2) and len(workers_of(os.getpid())) == 2
    victims = workers_of(os.getpid())
    killer = subprocess.Popen(["sh", "-c", f"sleep 1; kill -9 {victims[0].pid} {victims[1].pid}"])
    outcomes = run_programs([SLOW, SLOW + "# another job\n"], [TESTS] * 2, 5.0, workers=2)  # one per worker
    killer.wait()
    assert [o.status for o in outcomes] == ["error (worker lost)"] * 2
    assert [o.passed for o in run_programs([GOOD] * 3, [TESTS] * 3, 5.0, workers=2)] == [True] * 3
    assert not {v.pid for v in victims} & {w.pid for w in workers_of(os.getpid())}


def test_a_worker_killed_while_idle_costs_nothing():
    run_programs([GOOD], [TESTS], 5.0, workers=2)
    for worker in workers_of(os.getpid()):
        worker.kill()
        worker.wait()
    jobs = [GOOD + f"# job {i}\n" for i in range(4)]  # distinct, so each worker takes some
    done: list = []
    caller = threading.Thread(target=lambda: done.append(run_programs(jobs, [TESTS] * 4, 5.0, workers=2)), daemon=True)
    caller.start()
    caller.join(30)  # before the fix the slot whose dead worker took a job died with it, and this call hung
    assert done and [o.passed for o in done[0]] == [True] * 4


def test_closing_a_worker_that_died_with_a_job_unsent_does_not_raise():
    worker = Worker(None)
    worker.process.kill()
    worker.process.wait()
    assert worker.run({"timeout": 1.0, "program": GOOD}) is None  # the flush failed: the job stays buffered
    worker.close()  # before the fix: BrokenPipeError, which killed the slot thread and hung its batch


def test_a_hung_worker_is_replaced_after_its_grace():
    run_programs([GOOD], [TESTS], 1.0, workers=1)
    (worker,) = workers_of(os.getpid())
    worker.send_signal(signal.SIGSTOP)
    began = time.monotonic()
    outcomes = run_programs([GOOD], [TESTS], 1.0, workers=1)
    assert outcomes[0].status == "error (worker lost)"
    assert time.monotonic() - began < 1.0 + START_GRACE + WORKER_GRACE + 2.0
    assert [o.passed for o in run_programs([GOOD] * 2, [TESTS] * 2, 1.0, workers=1)] == [True, True]
    assert not psutil.pid_exists(worker.pid) or worker.status() == "zombie"


def test_workers_and_jails_end_with_a_killed_parent():
    script = textwrap.dedent(f"""
        import sys, threading
        sys.path.insert(0, {CODE!r})
        from score.code import run_programs
        threading.Thread(target=run_programs, args=([{ASLEEP!r}, {ASLEEP + "# 2"!r}], [{TESTS!r}] * 2, 30.0, 2)).start()
        import time, psutil
        time.sleep(1.5)
        print(" ".join(str(p.pid) for p in psutil.Process().children(recursive=True)), flush=True)
        time.sleep(60)
    """)
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    descendants = [int(pid) for pid in parent.stdout.readline().split()]
    assert len(descendants) >= 8  # two workers, their judges, and two bwrap and the program below each judge
    parent.kill()
    parent.wait()
    deadline = time.monotonic() + 10
    while any(psutil.pid_exists(pid) and psutil.Process(pid).status() != "zombie" for pid in descendants):
        assert time.monotonic() < deadline, [pid for pid in descendants if psutil.pid_exists(pid)]
        time.sleep(0.1)


def test_no_zombies_pile_up_under_a_caller_that_is_a_subreaper():
    """As a container's PID 1 without an init: everything that ends below the pool is collected."""
    script = textwrap.dedent(f"""
        import ctypes, sys
        sys.path.insert(0, {CODE!r})
        ctypes.CDLL(None).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER
        from score.code import run_programs
        import psutil, time
        jobs = [{GOOD!r} + f"# {{i}}" for i in range(4)] + ["while True:\\n    pass\\n", "while 1:\\n    pass\\n"]
        for _ in range(3):  # distinct jobs: a repeated one would run once
            run_programs(jobs, [{TESTS!r}] * 6, 0.5, 2)
        time.sleep(2)
        print(sum(p.status() == "zombie" for p in psutil.Process().children(recursive=True)))
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["0"]
