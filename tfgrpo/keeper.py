"""The keeper: a small process between tfgrpo and a server it starts, so that the server's whole
process tree ends with tfgrpo, however tfgrpo ends (Ctrl-C, an error, ``kill -9``).

``PR_SET_PDEATHSIG`` has the kernel signal a process when its parent dies, even by SIGKILL, but
only that one process: a server's workers (vLLM's engine processes, any process the server
forks) do not get it, and a server that exits on SIGTERM without stopping them leaves them
running. So tfgrpo starts the keeper, and the keeper starts the server in a process group of its
own. When tfgrpo dies (the keeper's parent-death signal) or stops the server (SIGTERM to the
keeper), the keeper sends the server's group SIGTERM, waits up to the grace period for it to
empty, then sends SIGKILL. When the server exits by itself, the keeper stops what it left in its
group the same way (a shorter grace) and exits with the server's status. The keeper is also the
subreaper of what the server starts, so workers orphaned by the server are reaped here.

It is run by path, ``python -I keeper.py GRACE PARENT_PID -- COMMAND...``, and imports only the
standard library, so it starts in milliseconds. :func:`die_with_parent` is the one place tfgrpo
asks for ``PR_SET_PDEATHSIG`` (also for ``pip download`` in :mod:`tfgrpo.model_files`).
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

PATH = Path(__file__).resolve()
PR_SET_PDEATHSIG = 1
PR_SET_CHILD_SUBREAPER = 36
SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
LEFTOVER_GRACE = 5.0  # seconds the workers of a server that exited by itself get to stop


def _load_prctl() -> Callable[..., int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        import ctypes

        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None


# Looked up once, at import: as a preexec_fn it runs between fork and exec, where loading a
# library could deadlock on a lock another thread held at the fork.
_PRCTL = _load_prctl()


def die_with_parent(sig: int = signal.SIGTERM) -> None:
    """Have the kernel send us ``sig`` when our parent dies (Linux; elsewhere nothing). Safe as a
    ``preexec_fn``: the signal survives the exec that follows."""
    if _PRCTL is not None:
        _PRCTL(PR_SET_PDEATHSIG, int(sig))


def command(cmd: list[str], grace: float) -> list[str]:
    """The command line that runs ``cmd`` under a keeper whose parent is this process."""
    return [sys.executable, "-I", str(PATH), f"{grace:g}", str(os.getpid()), "--", *cmd]


class _Stop(Exception):
    """A stop signal came (our parent died, or it asked us to stop the server)."""


def _raise_stop(*_: Any) -> None:
    raise _Stop


def _spawn(cmd: list[str]) -> int:
    """``cmd`` in a new process group, signalled too if we die; its pid (= its group's id). The
    stop signals stay blocked until the caller has noted the pid (and unblocks them)."""
    signal.pthread_sigmask(signal.SIG_BLOCK, SIGNALS)  # none may reach the child before its exec
    pid = os.fork()
    if pid == 0:
        try:
            os.setpgid(0, 0)
            for sig in SIGNALS:
                signal.signal(sig, signal.SIG_DFL)
            signal.pthread_sigmask(signal.SIG_UNBLOCK, SIGNALS)
            die_with_parent(signal.SIGTERM)
            os.execvp(cmd[0], cmd)
        except BaseException as e:  # noqa: BLE001 - the child must not return into the keeper
            with contextlib.suppress(BaseException):
                print(f"cannot start {cmd[0]}: {e}", file=sys.stderr, flush=True)
        os._exit(127)
    with contextlib.suppress(OSError):
        os.setpgid(pid, pid)  # from both sides: the group exists before anyone signals it
    return pid


def _reap(server: int, status: list[int]) -> None:
    """Reap every child that has exited (the server, and orphans of it that came to us)."""
    while True:
        try:
            pid, st = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        if pid == server:
            status.append(st)


def _empty(group: int) -> bool:
    try:
        os.killpg(group, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def _stop_group(group: int, server: int, status: list[int], grace: float) -> None:
    """SIGTERM to the group, up to ``grace`` seconds for it to empty, then SIGKILL."""
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(group, sig)
        deadline = time.monotonic() + wait
        while True:
            _reap(server, status)
            if _empty(group):
                return
            if time.monotonic() > deadline:
                break
            time.sleep(0.05)


def _exit_like(status: int | None) -> int:
    """Exit as the server did: with its code, or killed by its signal."""
    if status is None:
        return 0
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        signal.signal(sig, signal.SIG_DFL)
        os.kill(os.getpid(), sig)
        return 128 + sig
    return os.waitstatus_to_exitcode(status)


def main(argv: list[str]) -> int:
    grace, parent, cmd = float(argv[0]), int(argv[1]), argv[3:]
    for sig in SIGNALS:
        signal.signal(sig, _raise_stop)
    status: list[int] = []
    server = None
    try:
        die_with_parent(signal.SIGTERM)
        if os.getppid() != parent:  # it died before we asked: nothing to serve
            return 1
        if _PRCTL is not None:
            _PRCTL(PR_SET_CHILD_SUBREAPER, 1)
        server = _spawn(cmd)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, SIGNALS)  # a stop that came meanwhile is raised here
        while not status:
            pid, st = os.waitpid(-1, 0)  # the server, or an orphan of it
            if pid == server:
                status.append(st)
        wait = LEFTOVER_GRACE
    except _Stop:
        wait = grace
    for sig in SIGNALS:
        signal.signal(sig, signal.SIG_IGN)  # stopping now; a second signal changes nothing
    if server is not None:
        _stop_group(server, server, status, min(wait, grace))
    return _exit_like(status[0] if status else None)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
