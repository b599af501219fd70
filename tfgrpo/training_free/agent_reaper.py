"""The agent reaper: one small process per tfgrpo process that kills the agent commands still
running when tfgrpo dies, however it dies (an error, Ctrl-C, ``kill -9``).

Each agent command runs in a process group of its own, which tfgrpo kills when the rollout ends.
If tfgrpo itself dies first, nobody would: the kernel's parent-death signal reaches only the
shell that runs the command, not the agent it starts nor the agent's own children. So tfgrpo
tells the reaper ``+PGID`` when an agent starts and ``-PGID`` when its rollout has ended. When
tfgrpo dies the kernel closes the pipe; at its end the reaper sends SIGKILL to every group still
listed, and exits. It runs by path (``python -I agent_reaper.py``), with the standard library
only, in a session of its own so that a Ctrl-C in the terminal reaches only tfgrpo.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading

_lock = threading.Lock()
_reaper: subprocess.Popen | None = None


def _send(line: str, start: bool) -> None:
    global _reaper
    with _lock, contextlib.suppress(OSError):  # no reaper (cannot start one) costs only this guarantee
        if _reaper is None or _reaper.poll() is not None:
            if not start:  # nothing it would hold
                return
            _reaper = subprocess.Popen(
                [sys.executable, "-I", os.path.abspath(__file__)],
                stdin=subprocess.PIPE,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
            )
        assert _reaper.stdin is not None
        _reaper.stdin.write(line.encode())
        _reaper.stdin.flush()


def watch(group: int) -> None:
    """Kill process group ``group`` if this process dies before :func:`forget` is called."""
    _send(f"+{group}\n", start=True)


def forget(group: int) -> None:
    _send(f"-{group}\n", start=False)


def main() -> None:
    groups: set[int] = set()
    for line in sys.stdin:  # until the pipe's end: tfgrpo exited or died
        with contextlib.suppress(ValueError):
            (groups.add if line.startswith("+") else groups.discard)(int(line[1:]))
    for group in groups:
        with contextlib.suppress(OSError):
            os.killpg(group, signal.SIGKILL)


if __name__ == "__main__":
    main()
