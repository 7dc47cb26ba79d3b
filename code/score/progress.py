"""Progress bars that read well in a terminal and in a log file (a Slurm job's output).

tqdm redraws one line with carriage returns: in a file that becomes one endless line. When stderr is not a
terminal, the bar prints a plain line at most every LOG_INTERVAL seconds instead (and a last one at the end).
"""

from __future__ import annotations

import re
import sys

from tqdm.auto import tqdm

LOG_INTERVAL = 30.0  # seconds between progress lines in a log
CURSOR_MOVE = re.compile(r"\x1b\[\d*[A-Za-z]")  # ANSI escapes tqdm positions nested bars with


class _Lines:
    """A file for tqdm that turns each redraw ("\\r" + text + padding) into one line. The cursor moves of nested
    bars (ESC[A) are dropped, and a redraw that repeats the count of the line before it (a bar's close) is not
    written again."""

    def __init__(self, stream):
        self.stream = stream
        self.last = ""

    def write(self, text: str) -> None:
        line = CURSOR_MOVE.sub("", text.replace("\r", "")).rstrip()
        count = line.partition(" [")[0]  # "desc:  50%|#####     | 1/2": the same count again, only timed later
        if line and count != self.last:
            self.stream.write(line + "\n")
            self.last = count

    def flush(self) -> None:
        self.stream.flush()


def _in_terminal() -> bool:
    return sys.stderr.isatty() or "ipykernel" in sys.modules


def progress(**kwargs) -> tqdm:
    """tqdm(**kwargs) in a terminal or notebook; plain periodic lines in a log."""
    if _in_terminal():
        return tqdm(**kwargs)
    return tqdm(file=_Lines(sys.stderr), mininterval=LOG_INTERVAL, ascii=True, **kwargs)


def inner_progress(**kwargs) -> tqdm:
    """progress() for work inside a step (one long generation): silent unless it outlasts LOG_INTERVAL, so a log
    shows a long generation moving (and its end) without a line for every short one; a terminal clears it."""
    return progress(delay=LOG_INTERVAL, leave=not _in_terminal(), **kwargs)
