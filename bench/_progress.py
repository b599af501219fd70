"""Progress of a benchmark on stderr, so its last stdout line stays the one JSON object.

On a terminal each phase is a rich progress line (a bar when its size is known, elapsed time);
elsewhere (a log file, CI, a test capturing stderr) each phase prints one line when it starts,
a count at most every ``every_s`` seconds while it runs, and one line with its time when it ends.

    from bench._progress import Progress

    progress = Progress("retrieval")
    with progress.phase("index 10000 lessons"):
        build()
    with progress.phase("queries", total=210) as advance:
        for q in queries:
            run(q)
            advance()          # or advance(n)
    progress.note("p50 1.2 ms")  # a line of its own
"""

from __future__ import annotations

import contextlib
import sys
import time
from typing import Callable, Iterator, TextIO

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress as RichProgress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)

Advance = Callable[..., None]


class Progress:
    """Phases of one benchmark run, shown on ``stream`` (stderr)."""

    def __init__(self, name: str, *, stream: TextIO | None = None, every_s: float = 10.0):
        self.name = name
        self.stream = stream or sys.stderr
        self.every_s = every_s
        self.live = self.stream.isatty()

    def note(self, text: str) -> None:
        print(f"[{self.name}] {text}", file=self.stream, flush=True)

    @contextlib.contextmanager
    def phase(self, label: str, total: int | None = None) -> Iterator[Advance]:
        """A step of the benchmark; yields ``advance(n=1)`` for phases of ``total`` units."""
        start = time.perf_counter()
        if self.live:
            text = TextColumn(f"[{self.name}] {label}", markup=False)  # names and labels are not rich markup
            columns = [
                SpinnerColumn(),
                text,
                *([BarColumn(), MofNCompleteColumn()] if total else []),
                TimeElapsedColumn(),
            ]
            bar = RichProgress(*columns, console=Console(file=self.stream), transient=True)
            task = bar.add_task(label, total=total)
            with bar:
                yield lambda n=1: bar.advance(task, n)
        else:
            self.note(f"{label} ...")
            done, last = 0, start

            def advance(n: int = 1) -> None:
                nonlocal done, last
                done += n
                now = time.perf_counter()
                if now - last >= self.every_s:
                    last = now
                    self.note(f"{label}: {done}/{total or '?'} ({now - start:.0f} s)")

            yield advance
        self.note(f"{label}: done in {time.perf_counter() - start:.1f} s")
