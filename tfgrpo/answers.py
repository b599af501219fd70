"""Answer checks shared by the built-in tasks (imported normally, like any helper).

``math_verified``: math-verify equality of a completion's final answer with the reference,
used by the ``math`` and ``math-tools`` tasks.

A check runs in a worker process (``python -m tfgrpo.answers``), not a thread: sympy can spend minutes inside one C call on
a hostile answer (``\\boxed{9^{9^{9^{9}}}}``) while holding the interpreter lock, and then no
timeout in this process can fire. A worker that runs past ``CHECK_TIMEOUT_S`` is killed (the
answer scores 0) and the next check starts a new one. math-verify's own signal-based timeouts
are off: they only work on a main thread.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import logging
import os
import select
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

from tfgrpo.rewards import reward

CHECK_TIMEOUT_S = 10.0
WORKERS = 2  # checks at once, each in its own process (a check is milliseconds; the bound is for hostile ones)
log = logging.getLogger(__name__)
# We run math-verify without its signal-based timeouts (they fail off the main thread) and
# bound each check ourselves; its warning about that is noise here.
logging.getLogger("math_verify").setLevel(logging.ERROR)


def _parse_gold(answer: str) -> list[Any]:
    """The reference as math: read as LaTeX first when it carries no delimiters (``2\\sqrt{3}``,
    ``3, 5, 7`` and ``6 - 5i`` read as plain text give one number of them), else as written."""
    from math_verify import parse

    if "$" not in answer.replace("\\$", "") and "\\boxed" not in answer:
        gold = parse(f"${answer}$", parsing_timeout=None)
        if gold:
            return gold
    return parse(answer, parsing_timeout=None)


def math_check(answer: str, completion: str) -> float:
    """1.0 when the completion's final answer is mathematically equal to ``answer`` (in this
    process, unbounded: :func:`math_verified` is the bounded one)."""
    from math_verify import parse, verify

    gold = _parse_gold(answer)
    if not gold:
        return 0.0
    pred = parse(completion or "", parsing_timeout=None)
    if not pred:
        return 0.0
    return 1.0 if verify(gold, pred, timeout_seconds=None) else 0.0


def serve(stdin: Any = None, stdout: Any = None) -> None:
    """A worker process (``python -m tfgrpo.answers``): one JSON ``[answer, completion]`` per
    line in, its math_check score per line out, until stdin closes."""
    stdin = stdin or sys.stdin.buffer
    stdout = stdout or sys.stdout.buffer
    for line in stdin:
        try:
            answer, completion = json.loads(line)
            score = math_check(str(answer), str(completion))
        except Exception:  # an answer math-verify cannot handle is not a right one
            score = 0.0
        stdout.write(f"{score}\n".encode())
        stdout.flush()


class _Worker:
    """One worker process, started as ``python -m tfgrpo.answers`` (not multiprocessing: its
    spawn re-runs the caller's main script, which a user's script may not guard)."""

    def __init__(self) -> None:
        root = str(Path(__file__).resolve().parent.parent)
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p)}
        self.proc = subprocess.Popen([sys.executable, "-m", "tfgrpo.answers"], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env)  # fmt: skip

    def alive(self) -> bool:
        return self.proc.poll() is None

    def check(self, answer: str, completion: str, timeout: float) -> float | None:
        """The score, or None when the worker ran past ``timeout`` (it is killed then)."""
        assert self.proc.stdin is not None and self.proc.stdout is not None
        try:
            self.proc.stdin.write((json.dumps([answer, completion]) + "\n").encode())
            self.proc.stdin.flush()
            ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
            line = self.proc.stdout.readline() if ready else b""
        except (BrokenPipeError, OSError):
            line = b""
        if not line:
            self.close()
            return None
        return float(line)

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait(5)


_local = threading.local()
_pool: concurrent.futures.ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


def bounded_check(answer: str, completion: str, timeout: float) -> float | None:
    """:func:`math_check` in this thread's worker process, at most ``timeout`` seconds; None
    when it ran out (the worker is gone, the next call starts another)."""
    worker = getattr(_local, "worker", None)
    if worker is None or not worker.alive():
        worker = _local.worker = _Worker()
    score = worker.check(answer, completion, timeout)
    if score is None:
        _local.worker = None
    return score


def _executor() -> concurrent.futures.ThreadPoolExecutor:
    """WORKERS threads, each with its worker process; not the loop's default executor, which
    tools share."""
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = concurrent.futures.ThreadPoolExecutor(max_workers=WORKERS, thread_name_prefix="tfgrpo-math")
        return _pool


@reward
async def math_verified(sample: Any, completion: str) -> float:
    """math-verify equality with the reference answer; a check that runs past
    CHECK_TIMEOUT_S (a pathological expression) scores 0."""
    score = await asyncio.get_running_loop().run_in_executor(
        _executor(), bounded_check, str(sample.answer), completion, CHECK_TIMEOUT_S
    )
    if score is None:
        log.warning(
            "math check of sample %s ran past %gs (worker killed); scored 0",
            getattr(sample, "id", "?"),
            CHECK_TIMEOUT_S,
        )
        return 0.0
    return score


if __name__ == "__main__":
    serve()
