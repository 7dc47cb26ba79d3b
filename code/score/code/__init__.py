"""Code answers: run the program a model wrote against the problem's tests, safely, and say whether all passed.

Model-written code is hostile. Each program runs in a fresh process in its own empty folder, PID namespace and
process group, without network, as an unprivileged uid, under CPU, memory, file, descriptor and process limits and
an audit hook that refuses new programs, sockets, writes outside the folder and every route to the harness's
frames. A pass is the random token the harness writes to a pipe only after every (strictly rewritten) test
passed, so exiting early, printing, or returning objects that equal everything all fail.

The stages, one file each, in the order an answer meets them:
    extract.py   the program in an answer (fenced blocks, [BEGIN] ... [DONE], bare code)
    pool.py      warm workers, one per core, fed over pipes; a worker that hangs is replaced
    sandbox.py   in a worker: fork, namespaces, limits, uid, the deadline kill of everything left
    harness.py   in the sandboxed process: the audit hook, the program, then the tests with strict checks
    batch.py     run_tests, reward and rewards: one program, or a batch over the pool
"""

from score.code.batch import reward, rewards, run_programs, run_tests
from score.code.extract import extract_program

__all__ = ["extract_program", "reward", "rewards", "run_programs", "run_tests"]
