"""Code answers: judge the program a model wrote against the problem's tests, where the program cannot fake a pass.

The verdict is decided outside the program's process: the tests run in a trusted judge, and the program, in a
fresh interpreter inside bubblewrap's jail, only answers calls of its functions with plain data. Whatever the
program does, it can at most claim return values.

The stages, one file each, in the order an answer meets them:
    extract.py   the program in an answer (fenced blocks, [BEGIN] ... [DONE], bare code)
    pool.py      warm judge workers, one per core, each job in a forked child killed when its time is up
    judge.py     in that child: the preamble and the tests, with the program's names as proxies (Remote)
    jail.py      the program's interpreter in bubblewrap: namespaces, no capabilities, read-only minimal
                 filesystem, a private size-capped folder (or a refusal naming what is missing)
    seccomp.py   the system calls the jail and the program may not make
    server.py    inside the jail: limits, the seccomp filter, the program, then its answers to the judge
    wire.py      the plain data both sides exchange, decoded strictly
    batch.py     run_tests, reward, rewards and outcomes: one program, or a batch over the pool
"""

from score.code.batch import outcomes, reward, rewards, run_programs, run_tests
from score.code.extract import extract_program
from score.code.jail import JailUnavailable, Limits
from score.code.judge import Outcome

__all__ = [
    "JailUnavailable",
    "Limits",
    "Outcome",
    "extract_program",
    "outcomes",
    "reward",
    "rewards",
    "run_programs",
    "run_tests",
]
