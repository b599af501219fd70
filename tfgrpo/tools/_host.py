"""The host side of the sandbox: its pids cgroup, the user's process count, and the disk poller
used where the run cannot have its own size-capped tmpfs."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path

PIDS_CGROUP_ROOTS = ("/sys/fs/cgroup/pids", "/sys/fs/cgroup")
DISK_POLL_S = 0.25


def pids_cgroup_root() -> str | None:
    if os.geteuid() != 0:
        return None
    for root in PIDS_CGROUP_ROOTS:
        probe = Path(root) / f"tfgrpo-probe-{os.getpid()}"
        try:
            probe.mkdir()
        except OSError:
            continue
        try:
            if (probe / "pids.max").is_file():
                return root
        finally:
            probe.rmdir()
    return None


def user_tasks() -> int:
    uid, n = os.getuid(), 0
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                if os.stat(f"/proc/{pid}").st_uid == uid:
                    n += len(os.listdir(f"/proc/{pid}/task"))
            except OSError:
                continue
    return n


async def watch_disk(work: Path, cap: int, most: int) -> None:
    """Return once ``work`` holds more than ``cap`` bytes or ``most`` entries. Only needed
    where the launcher could not give the run its own size-capped tmpfs (no mount namespace):
    there the code writes into this host directory."""
    while True:
        await asyncio.sleep(DISK_POLL_S)
        used, count, stack = 0, 0, [str(work)]
        try:
            while stack and used <= cap and count <= most:
                with os.scandir(stack.pop()) as entries:
                    for entry in entries:
                        count += 1
                        st = entry.stat(follow_symlinks=False)
                        used += st.st_blocks * 512
                        if entry.is_dir(follow_symlinks=False):
                            stack.append(entry.path)
        except OSError:
            continue  # an entry vanished while being counted: count again next time
        if used > cap or count > most:
            return


def kill_cgroup(path: str) -> None:
    try:
        pids = Path(path, "cgroup.procs").read_text().split()
    except OSError:
        return
    for pid in pids:
        try:
            os.kill(int(pid), signal.SIGKILL)
        except (ProcessLookupError, PermissionError, ValueError):
            pass


def remove_cgroup(path: str) -> None:
    for _ in range(50):
        try:
            os.rmdir(path)
            return
        except FileNotFoundError:
            return
        except OSError:
            kill_cgroup(path)  # one may have been forked since the last kill
            time.sleep(0.02)  # processes still exiting
