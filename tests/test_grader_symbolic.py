import multiprocessing as mp
import threading
import time

import pytest
from score.grader import is_equivalent, reward, rewards, symbolic

# --- hostile input ----------------------------------------------------------------------------

HOSTILE = [
    "9^{9^{9^{9}}}",
    "7**7**7**7",
    "10^{10^{10}}",
    "2^{2^{2^{2^{2^{2}}}}}",
    "x^{x^{x^{x^{x}}}}",
    "e^{e^{e^{e^{50}}}}",
    "\\sin(e^{e^{50}})",
    "50000!",
    "(10^{20})!",
    "7" * 5000,
    "1" + "0" * 4999 + "!",
    "(" * 300 + "2" + ")" * 300,
    "(1+" * 300 + "1" + ")" * 300,
    "\\sqrt{" * 300 + "2" + "}" * 300,
    "\\frac{1}{",
    "}}}{{{",
    "\\boxed{\\boxed{",
    "(x+y+z+w)^{60}",
    "(x+1)" * 400,
    "\\binom{10^{9}}{5 \\cdot 10^{8}}",
    "\\sqrt{2}^{10^{6}}",
    "0^{-1}",
    "\\input{/etc/passwd}",
    "a" * 1999 + "!",
    "{" * 5000,
]


def test_nested_parentheses_are_parsed_not_rejected():
    assert is_equivalent("(" * 300 + "2" + ")" * 300, "2")
    assert not is_equivalent("(" * 300 + "2" + ")" * 300, "3")


@pytest.mark.parametrize("payload", HOSTILE)
def test_hostile_input_is_fast_and_not_equal(payload):
    for gold in ("1", "\\frac{1}{3}", "x"):
        start = time.monotonic()
        assert not is_equivalent(payload, gold)
        assert time.monotonic() - start < 2.0


def test_hostile_input_from_worker_threads():
    # SIGALRM cannot interrupt a thread: the bound must come from the guards and the killable helper.
    results = {}

    def grade(k, payload):
        start = time.monotonic()
        results[k] = (is_equivalent(payload, "\\frac{1}{2}", timeout=1.0), time.monotonic() - start)

    threads = [threading.Thread(target=grade, args=(k, p)) for k, p in enumerate(HOSTILE[:12])]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert len(results) == 12
    assert all(not equal and seconds < 2.0 for equal, seconds in results.values())


@pytest.fixture
def fresh_helpers():
    symbolic.close_helpers()
    yield
    symbolic.close_helpers()


def test_stuck_sympy_is_killed_on_timeout_off_the_main_thread(monkeypatch, fresh_helpers):
    if "fork" not in mp.get_all_start_methods():
        pytest.skip("the stand-in slow sympy reaches the helper only through fork")

    def stuck(a, b):
        time.sleep(60)

    monkeypatch.setattr(symbolic, "sympy_equal", stuck)
    out = {}

    def grade():
        start = time.monotonic()
        out["equal"] = is_equivalent("\\sqrt{7}", "\\sqrt{7}+0\\sqrt{2}", timeout=0.5)
        out["seconds"] = time.monotonic() - start

    t = threading.Thread(target=grade)
    t.start()
    t.join(timeout=10)
    assert out["equal"] is False and out["seconds"] < 0.5
    assert symbolic._IDLE == []  # the stuck helper was killed, not put back
    monkeypatch.undo()
    assert is_equivalent("\\sqrt{7}", "\\sqrt{7}+0\\sqrt{2}")  # a fresh helper takes over


def test_daemonic_pool_workers_grade_in_process_under_an_alarm(monkeypatch, fresh_helpers):
    # multiprocessing.Pool workers are daemonic and may not start the helper; SIGALRM bounds them instead.
    if "fork" not in mp.get_all_start_methods():
        pytest.skip("the stand-in slow sympy reaches the pool worker only through fork")
    pairs = [("\\sqrt{12}", "2\\sqrt{3}", 2.0), ("\\sqrt{12}", "3\\sqrt{2}", 2.0)]
    with mp.get_context("fork").Pool(1) as pool:
        assert pool.starmap(is_equivalent, pairs) == [True, False]

    def stuck(a, b):
        time.sleep(60)

    monkeypatch.setattr(symbolic, "sympy_equal", stuck)
    start = time.monotonic()
    with mp.get_context("fork").Pool(1) as pool:
        assert pool.starmap(is_equivalent, [("\\sqrt{12}", "2\\sqrt{3}", 0.5)]) == [False]
    assert time.monotonic() - start < 10


@pytest.mark.parametrize(
    "template",
    [
        "__import__('os').system('touch {path}')",
        "__import__('pathlib').Path('{path}').touch()",
        "open('{path}', 'w').write('x')",
        "exec(\"open('{path}','w')\")",
        "\\immediate\\write18{{touch {path}}}",
        "Symbol('x').__class__.__init__.__globals__['os'].system('touch {path}')",
    ],
)
def test_payload_does_not_create_a_file(tmp_path, template):
    target = tmp_path / "pwned"
    payload = template.format(path=target)
    assert not is_equivalent(payload, "1")
    assert not is_equivalent("1", payload)
    assert reward(f"\\boxed{{{payload}}}", "1") == 0.0
    assert rewards([f"\\boxed{{{payload}}}"] * 2, ["1", "0"], workers=1) == [0.0, 0.0]
    assert not target.exists()


def test_timeout_zero_still_decides_fast_paths_and_never_hangs():
    assert is_equivalent("\\frac{1}{2}", "0.5", timeout=0.0)
    start = time.monotonic()
    assert not is_equivalent("\\sqrt{11}", "\\sqrt{13}", timeout=0.0)
    assert time.monotonic() - start < 0.5
