"""What a tuning run shows while it runs.

The engine reports each measured batch as a ``ProgressLine``: a ``str`` (so ``print`` shows the plain
line it always was, as in a log file or CI) that also carries the numbers. ``LiveProgress`` is the
``progress`` callable for a terminal: it keeps one status line at the bottom, rewritten in place (trials
done and total, trials/min, the current task's best time and its speedup over the task's first
candidate, elapsed time and time left), and prints every other message above it.
"""

from __future__ import annotations

import math
import sys


class ProgressLine(str):
    """A batch's progress line; its numbers are attributes: ``done`` and ``total`` trials, ``elapsed``
    seconds, ``task``, ``best_s`` (the task's best mean seconds), ``first_s`` (its first measured
    candidate's) and ``gflops``."""

    def __new__(cls, text: str, **numbers):
        line = super().__new__(cls, text)
        line.__dict__.update(numbers)
        return line


def _clock(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 3600}h{seconds // 60 % 60:02d}m" if seconds >= 3600 else f"{seconds // 60}m{seconds % 60:02d}s"


def status_text(p: ProgressLine, width: int = 120) -> str:
    """The one-line status of ``p``, at most ``width`` characters."""
    rate = 60 * p.done / p.elapsed if p.elapsed > 0 else 0.0
    left = (p.total - p.done) * p.elapsed / p.done if p.done else math.inf
    bar_w = 20
    filled = min(bar_w, int(bar_w * p.done / max(p.total, 1)))
    best = (f"{p.task}: best {p.best_s * 1e3:.4g} ms, {p.gflops:.1f} GFLOP/s"
            + (f", {p.first_s / p.best_s:.2f}x its first" if math.isfinite(p.first_s) and p.best_s > 0 else "")
            if math.isfinite(p.best_s) else f"{p.task}: no candidate ran yet")
    text = (f"[{'#' * filled}{'.' * (bar_w - filled)}] {p.done}/{p.total} trials, {rate:.1f}/min, "
            f"{_clock(p.elapsed)} elapsed, {'~' + _clock(left) if math.isfinite(left) else '?'} left | {best}")
    return text if len(text) <= width else text[:width - 3] + "..."


class LiveProgress:
    """A ``progress`` callable for a terminal ``stream``: ``ProgressLine``s rewrite one status line in
    place; any other message is printed above it. ``close()`` ends the status line."""

    def __init__(self, stream=None, width: int | None = None):
        import shutil
        self.stream = stream or sys.stderr
        self.width = width or max(40, shutil.get_terminal_size((120, 20)).columns - 1)
        self.shown = None

    def __call__(self, message) -> None:
        if isinstance(message, ProgressLine):
            self.shown = status_text(message, self.width)
            self.stream.write("\r\033[K" + self.shown)
        else:
            self.stream.write(("\r\033[K" if self.shown else "") + f"{message}\n" + (self.shown or ""))
        self.stream.flush()

    def close(self) -> None:
        if self.shown:
            self.stream.write("\n")
            self.stream.flush()
            self.shown = None


def for_stream(stream=None):
    """``LiveProgress`` on a terminal, else ``print`` (plain lines, one a batch)."""
    stream = stream or sys.stderr
    return LiveProgress(stream) if stream.isatty() else print
