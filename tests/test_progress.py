import io
import sys

from score import progress as progress_module
from score.progress import progress


def test_bars_in_a_log_are_plain_lines_at_most_every_interval(monkeypatch):
    log = io.StringIO()  # not a terminal, like a Slurm job's output file
    monkeypatch.setattr(sys, "stderr", log)
    with progress(total=1000, desc="SCoRe") as bar:
        for _ in range(1000):
            bar.set_postfix(reward="0.500", refresh=False)
            bar.update(1)
    lines = log.getvalue().splitlines()
    assert "\r" not in log.getvalue()
    assert lines[0].startswith("SCoRe:   0%") and lines[-1].startswith("SCoRe: 100%|##########| 1000/1000")
    assert len(lines) <= 3, lines  # the first, maybe one more, the last: not one per update

    log = io.StringIO()
    monkeypatch.setattr(sys, "stderr", log)
    monkeypatch.setattr(progress_module, "LOG_INTERVAL", 0.0)
    with progress(total=3, desc="evaluate") as bar:
        for _ in range(3):
            bar.update(1)
    percents = [line.split("|")[0] for line in log.getvalue().splitlines()]
    assert percents[:4] == ["evaluate:   0%", "evaluate:  33%", "evaluate:  67%", "evaluate: 100%"], percents


def test_a_nested_bar_in_a_log_writes_no_cursor_moves_and_no_repeated_lines(monkeypatch):
    log = io.StringIO()
    monkeypatch.setattr(sys, "stderr", log)
    monkeypatch.setattr(progress_module, "LOG_INTERVAL", 0.0)
    with progress(total=2, desc="SCoRe") as outer:
        for _ in range(2):
            with progress_module.inner_progress(total=2, desc="generate") as inner:
                inner.update(1)
                inner.update(1)
            outer.update(1)
    assert "\x1b" not in log.getvalue()
    counts = [line.partition(" [")[0] for line in log.getvalue().splitlines()]
    assert counts == ["SCoRe:   0%|          | 0/2"] + [
        *["generate:   0%|          | 0/2", "generate:  50%|#####     | 1/2", "generate: 100%|##########| 2/2"],
        "SCoRe:  50%|#####     | 1/2",
        *["generate:   0%|          | 0/2", "generate:  50%|#####     | 1/2", "generate: 100%|##########| 2/2"],
        "SCoRe: 100%|##########| 2/2",
    ], counts
