"""The table of hostile inputs (issues 14, 18 and 23): every input that was tried against tfgrpo is one row,
and every row is run by a parametrized test, so none can regress.

A row (:class:`Case`) names its area (the issue's numbered items, and ``held ...`` for what
already held when the inputs were first tried), the input, the outcome expected, and the check
that feeds the input and asserts that outcome. The rows live in one ``test_hostile_*.py`` module
per group of areas; ``conftest.py`` beside them prints ``area | tried | held | failed`` counted
from the results at the end of a run that collected any of them."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import inspect
import json
import socket
import threading
from dataclasses import dataclass
from typing import Any, Callable

import pytest

AREAS = [  # the order of the closing table
    "01 pack-network",
    "02 sandbox",
    "03 server numbers",
    "04 judge replies",
    "05 shared store",
    "06 line separators",
    "07 proxy",
    "08 pack bounds",
    "09 lesson escape",
    "10 terminal markup",
    "11 consolidation",
    "12 lower items",
    "13 one line",
    "held jinja",
    "held kill-resume",
    "held judge output",
    "held retries",
    "held proxy",
    "held store writers",
    "held sandbox",
    "review judge reading",
    "review newcomer",
    "review sandbox",
    "review packs and proxy",
    # issue 23, the third round
    "r3 01-02 shared run is data",
    "r3 03-04 bad replies",
    "r3 05 trackers",
    "r3 06 proxy memory",
    "r3 07 loopback",
    "r3 08 read-only run",
    "r3 09 full disk",
    "r3 10 damaged records",
    "r3 11 server text",
    "r3 12 chat markers",
    "r3 13 serve children",
    "r3 minor resume and config",
    "r3 minor replicas",
    "r3 minor fetch",
    "r3 minor proxy and report",
]


@dataclass(frozen=True)
class Case:
    area: str
    input: str
    expected: str
    check: Callable[..., Any]  # check(ctx, *args); a coroutine function is run with asyncio.run
    args: tuple = ()
    slow: bool = False

    def __post_init__(self) -> None:
        assert self.area in AREAS, self.area

    def run(self, ctx: Any) -> None:
        __tracebackhide__ = True
        out = self.check(ctx, *self.args)
        if inspect.iscoroutine(out):
            asyncio.run(asyncio.wait_for(out, 120))  # a stall fails the row instead of hanging the run


def rows(cases: list[Case]) -> list:
    """``cases`` as pytest parameters: the id is ``area | input``; slow rows carry the slow mark."""
    ids = [f"{c.area} | {c.input}" for c in cases]
    assert len(set(ids)) == len(ids), "two rows with the same area and input"
    return [pytest.param(c, id=i, marks=[pytest.mark.slow] if c.slow else []) for c, i in zip(cases, ids)]


# ------------------------------------------------------------------- inputs several areas use

DEEP = 100_000  # JSON nesting far past Python's recursion limit
HUGE = "1" * 5000  # past Python's 4300-digit limit for int()


def deep(n: int = DEEP) -> str:
    return "[" * n + "]" * n


def write(path, data: str | bytes):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    return path


GOOD_LESSON = {"id": "E1", "text": "When adding fractions, rewrite both over a common denominator first."}


def lesson(**change: Any) -> str:
    """One line of a pack's experiences.jsonl: the good lesson with ``change`` on top."""
    return json.dumps({**GOOD_LESSON, **change})


def pack_dir(
    d,
    lines: list[str] | None = None,
    *,
    manifest: dict | None = None,
    counts: dict | None = None,
    manifest_raw: str | bytes | None = None,
):
    """A directory pack written by hand: ``lines`` of experiences.jsonl, the manifest's checksums
    and counts made to match them (unless ``counts`` says otherwise), ``manifest`` keys put on
    top, or ``manifest_raw`` written as the manifest instead."""
    from experience_store import pack_format

    lines = [lesson()] if lines is None else lines
    files = {"experiences.jsonl": "".join(x + "\n" for x in lines).encode(), "history.jsonl": b""}
    for name, blob in files.items():
        write(d / name, blob)
    meta = {
        "format": pack_format.FORMAT,
        "format_version": pack_format.FORMAT_VERSION,
        "embedding": {"name": "lexical", "dim": 64},
        "counts": counts if counts is not None else {"experiences": len(lines), "retired": 0, "history": 0},
        "files": {n: {"sha256": hashlib.sha256(b).hexdigest(), "bytes": len(b)} for n, b in files.items()},
        **(manifest or {}),
    }
    write(d / "manifest.json", manifest_raw if manifest_raw is not None else json.dumps(meta))
    return d


class Relay:
    """A loopback TCP relay in front of a server on ``port``. The first ``drop_first`` connections
    are read from and closed unanswered (a dropped connection); ``cut()`` drops every connection
    and refuses new ones, which is what a client sees of a server killed mid-run."""

    def __init__(self, port: int, drop_first: int = 0):
        self.target, self.conns, self.drop_first, self.dropped = port, [], drop_first, 0
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            if self.dropped < self.drop_first:
                self.dropped += 1
                client.recv(65536)
                client.close()
                continue
            upstream = socket.create_connection(("127.0.0.1", self.target))
            self.conns += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(a, b) -> None:
        with contextlib.suppress(OSError):
            while data := a.recv(65536):
                b.sendall(data)
        with contextlib.suppress(OSError):
            b.shutdown(socket.SHUT_WR)

    def cut(self, *_: object) -> None:
        self.sock.close()
        for c in self.conns:
            with contextlib.suppress(OSError):
                c.shutdown(socket.SHUT_RDWR)
            c.close()
