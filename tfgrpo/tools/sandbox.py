"""Run untrusted Python in a confined child process (the ``python`` tool and ``tfgrpo sandbox run``).

Each run gets an empty temporary working directory (removed afterwards), a scrubbed
environment, and limits on CPU time, memory (address space), processes, file size, total
disk use, open files, output size and wall-clock time. Where the machine allows it the code
also runs in new network, PID and mount namespaces (a private root without the host's
files or sockets) and under a Landlock ruleset, with no capabilities (see ``_confine.py``);
:func:`isolation` says what this machine provides, and docs/agents.md lists what is not
isolated.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import shutil
import signal
import socket
import sys
import tempfile
import time
import uuid
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from tfgrpo.tools._host import kill_cgroup, pids_cgroup_root, remove_cgroup, user_tasks, watch_disk

CONFINE = Path(__file__).with_name("_confine.py")
SYSTEM_READ_PATHS = (
    "/usr",
    "/bin",
    "/lib",
    "/lib64",
    "/etc/ld.so.cache",
    "/etc/localtime",
    "/dev/null",
    "/dev/urandom",
    "/dev/zero",
)
LIMIT_KINDS = ("wall", "cpu", "memory", "processes", "output", "file_size", "disk")


@dataclass(frozen=True)
class Limits:
    """What one sandboxed run may use."""

    wall_s: float = 10.0
    cpu_s: int = 5
    memory_mb: int = 1024
    processes: int = 32
    output_bytes: int = 64 * 1024  # per stream; more ends the run and is cut off
    file_mb: int = 16
    disk_mb: int = 64  # all files of the run together (a tmpfs, so it is also memory)
    disk_files: int = 4096  # files and directories in the working directory
    open_files: int = 64


@dataclass
class SandboxResult:
    stdout: str
    stderr: str
    exit_code: int | None
    signal: int | None
    wall_s: float
    cpu_s: float | None
    limit: str | None = None  # which limit stopped the code: one of LIMIT_KINDS, or None
    truncated: bool = False
    isolation: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and self.limit is None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# ---------------------------------------------------------------------------------------
# What the machine allows


def _read_paths() -> list[str]:
    paths = {sys.prefix, sys.base_prefix, os.path.dirname(os.path.dirname(os.path.realpath(sys.executable)))}
    return sorted(paths) + list(SYSTEM_READ_PATHS)


@lru_cache(maxsize=1)
def isolation() -> dict[str, Any]:
    """What confinement this machine gives, found by running a probe in the sandbox once."""
    # Network: can the sandbox reach a TCP port this process listens on (loopback only; the probe
    # never sends traffic off the machine)? A network namespace or Landlock makes it fail.
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        port = listener.getsockname()[1]
        probe = (
            "import os, socket\n"
            "out = {}\n"
            "try:\n"
            f"    socket.create_connection(('127.0.0.1', {port}), timeout=1); out['network'] = 'reachable'\n"
            "except OSError as e:\n"
            "    out['network'] = 'blocked: ' + (e.strerror or str(e))\n"
            "try:\n"
            "    open('/etc/hostname').read(); out['read_outside'] = 'allowed'\n"
            "except OSError as e:\n"
            "    out['read_outside'] = 'blocked: ' + (e.strerror or str(e))\n"
            "out['pid'] = os.getpid()\n"
            "print(__import__('json').dumps(out))\n"
        )
        plan = _plan()
        res = run_python_sync(probe, Limits(wall_s=10))
    seen: dict[str, Any] = {}
    try:
        seen = json.loads(res.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        seen = {"probe_error": (res.stderr or res.stdout)[-300:]}
    mount = res.isolation.get("mount")
    return {
        "namespaces": res.isolation.get("namespaces"),
        # a private root: no host socket files, /tmp or /run; a disk cap held by the kernel (tmpfs)
        "mount_namespace": mount,
        "disk_limit": "tmpfs" if mount else "polled by the parent",
        "proc": res.isolation.get("proc"),
        "seccomp": res.isolation.get("seccomp"),
        "landlock_abi": plan["landlock_abi"] if "setup_error" not in res.isolation else None,
        "process_limit": "pids cgroup" if plan["cgroup_root"] else ("RLIMIT_NPROC" if os.geteuid() != 0 else None),
        "network": seen.get("network"),
        "read_outside_workdir": seen.get("read_outside"),
        "pid_namespace": seen.get("pid") == 1,
        **{
            k: res.isolation[k]
            for k in ("setup_error", "mount_error", "namespaces_error", "seccomp_error")
            if k in res.isolation
        },
        **({"probe_error": seen["probe_error"]} if "probe_error" in seen else {}),
    }


@lru_cache(maxsize=1)
def _plan() -> dict[str, Any]:
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    abi = int(libc.syscall(444, None, 0, 1))
    found = importlib.util.find_spec("pyseccomp")  # imported by the launcher only (it needs libseccomp)
    return {
        "cgroup_root": pids_cgroup_root(),
        "landlock_abi": abi if abi > 0 else None,
        "seccomp_module": os.path.dirname(found.origin) if found and found.origin else None,
    }


# ---------------------------------------------------------------------------------------
# One run


def _env(workdir: str) -> dict[str, str]:
    return {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "HOME": workdir,
        "TMPDIR": workdir,
        "LANG": "C.UTF-8",
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONIOENCODING": "utf-8",
        "OPENBLAS_NUM_THREADS": "1",
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
    }


def _prepare(code: str, limits: Limits, files: dict[str, str] | None) -> tuple[Path, Path, str | None]:
    plan = _plan()
    base = Path(tempfile.mkdtemp(prefix="tfgrpo-sbx-"))
    work = base / "work"
    work.mkdir()
    (base / "root").mkdir()
    for name, text in (files or {}).items():
        target = (work / name).resolve()
        if work.resolve() not in target.parents:
            raise ValueError(f"sandbox file name escapes the working directory: {name}")
        target.write_text(text)
    (work / "main.py").write_text(code)
    cgroup = None
    if plan["cgroup_root"]:
        cgroup = os.path.join(plan["cgroup_root"], f"tfgrpo-sbx-{uuid.uuid4().hex[:12]}")
        os.mkdir(cgroup)
        Path(cgroup, "pids.max").write_text(str(limits.processes))
    spec = {
        "workdir": str(work),
        "root": str(base / "root"),
        "status_path": str(base / "status.json"),
        "cmd": [sys.executable, "-I", "main.py"],
        "env": _env(str(work)),
        "namespaces": True,
        "landlock": plan["landlock_abi"] is not None,
        "seccomp_module": plan["seccomp_module"],
        "read_paths": _read_paths(),
        "cgroup": cgroup,
        # Without a cgroup a non-root user still has RLIMIT_NPROC (it counts the user's other
        # processes too, so the budget starts from what the user already runs).
        "nproc": None if (cgroup or os.geteuid() == 0) else user_tasks() + limits.processes,
        "limits": {
            "cpu_s": int(limits.cpu_s),
            "memory_bytes": int(limits.memory_mb) << 20,
            "file_bytes": int(limits.file_mb) << 20,
            "open_files": int(limits.open_files),
            "disk_bytes": int(limits.disk_mb) << 20,
            "disk_files": int(limits.disk_files),
        },
    }
    spec_path = base / "spec.json"
    spec_path.write_text(json.dumps(spec))
    return base, spec_path, cgroup


SETTLE_S = 5.0  # grace for the output to close once the sandbox is killed


class _Capture:
    """Up to ``cap`` bytes of one stream; kept even if the reading is abandoned."""

    def __init__(self, cap: int):
        self.cap = cap
        self.buf = bytearray()
        self.cut = False


async def _drain(stream: asyncio.StreamReader, capture: _Capture, over: asyncio.Event) -> None:
    """Keep at most ``cap`` bytes, but read the pipe to EOF: a pipe left unread pauses its
    transport, and asyncio's ``Process.wait()`` then never sees the pipes close (a hang)."""
    while True:
        chunk = await stream.read(65536)
        if not chunk:
            return
        room = capture.cap - len(capture.buf)
        capture.buf.extend(chunk[: max(room, 0)])
        if len(chunk) > room and not capture.cut:
            capture.cut = True
            over.set()  # the caller kills the process group; EOF follows


def _kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


async def run_python(code: str, limits: Limits | None = None, *, files: dict[str, str] | None = None) -> SandboxResult:
    """Run ``code`` as ``main.py`` in a fresh sandbox; never raises for what the code does."""
    limits = limits or Limits()
    base, spec_path, cgroup = _prepare(code, limits, files)
    started = time.monotonic()
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-I",
        "-S",
        str(CONFINE),
        str(spec_path),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=_env(str(base)),
        start_new_session=True,
    )
    over = asyncio.Event()
    out_c, err_c = _Capture(limits.output_bytes), _Capture(limits.output_bytes)
    readers = asyncio.gather(_drain(proc.stdout, out_c, over), _drain(proc.stderr, err_c, over))  # type: ignore[arg-type]
    stuck = False
    over_wait = asyncio.ensure_future(over.wait())
    done_wait = asyncio.ensure_future(proc.wait())
    disk_wait = asyncio.ensure_future(watch_disk(base / "work", int(limits.disk_mb) << 20, int(limits.disk_files)))
    limit: str | None = None
    try:
        done, _ = await asyncio.wait(
            {over_wait, done_wait, disk_wait}, timeout=limits.wall_s, return_when=asyncio.FIRST_COMPLETED
        )
        if over_wait in done:
            limit = "output"
        elif disk_wait in done:
            limit = "disk"
        elif not done:
            limit = "wall"
    finally:
        over_wait.cancel()
        disk_wait.cancel()
        if limit is not None or proc.returncode is None:
            _kill_group(proc.pid)
        stuck = not await _settle(proc, readers, cgroup)
        if cgroup:  # a process that left the process group (setsid) and closed its output dies here too
            kill_cgroup(cgroup)
    out, out_cut, err, err_cut = bytes(out_c.buf), out_c.cut, bytes(err_c.buf), err_c.cut
    wall = time.monotonic() - started
    status: dict[str, Any] = {}
    try:
        status = json.loads((base / "status.json").read_text())
    except (OSError, ValueError):
        pass  # the launcher was killed (wall clock or output limit)
    shutil.rmtree(base, ignore_errors=True)
    if cgroup:
        await asyncio.to_thread(remove_cgroup, cgroup)
    stdout, stderr = out.decode("utf-8", "replace"), err.decode("utf-8", "replace")
    if stuck:
        stderr += "\nsandbox: a process outlived the kill and held the output open; its output was abandoned\n"
    applied = status.get("applied", {})
    if "setup_error" in applied:
        stderr = f"sandbox setup failed: {applied['setup_error']}\n{stderr}"
    sig = status.get("signal")
    cpu = status.get("cpu_s")
    limit = limit or _which_limit(sig, cpu, stderr, limits)
    return SandboxResult(
        stdout=stdout,
        stderr=stderr,
        exit_code=status.get("exit_code") if status else (None if limit else proc.returncode),
        signal=sig,
        wall_s=round(wall, 3),
        cpu_s=round(cpu, 3) if cpu is not None else None,
        limit=limit,
        truncated=out_cut or err_cut,
        isolation=applied,
    )


def _which_limit(sig: int | None, cpu: float | None, stderr: str, limits: Limits) -> str | None:
    # RLIMIT_CPU kills on the kernel's tick-sampled time, which can run ahead of the precise time
    # that wait4 reports by a few ticks per second on a busy machine.
    if sig == signal.SIGXCPU or (sig == signal.SIGKILL and cpu is not None and cpu >= 0.8 * limits.cpu_s - 0.05):
        return "cpu"
    tail = stderr[-2000:]
    if sig == signal.SIGXFSZ or "File too large" in tail:  # Python ignores SIGXFSZ: the write fails
        return "file_size"
    if "No space left on device" in tail:  # the run's tmpfs is full
        return "disk"
    if "MemoryError" in tail or "Cannot allocate memory" in tail:
        return "memory"
    if "Resource temporarily unavailable" in tail and ("fork" in tail or "thread" in tail or "Errno 11" in tail):
        return "processes"
    return None


async def _settle(proc: asyncio.subprocess.Process, readers: asyncio.Future, cgroup: str | None) -> bool:
    """Wait, boundedly, for the launcher to exit and its output to close. A process that left the
    process group still dies with the cgroup; whatever holds the pipes open after that is
    abandoned rather than allowed to hang the rollout. False when something had to be abandoned."""
    try:
        await asyncio.wait_for(proc.wait(), SETTLE_S)
        await asyncio.wait_for(asyncio.shield(readers), SETTLE_S)
        return True
    except asyncio.TimeoutError:
        pass
    if cgroup:
        kill_cgroup(cgroup)
    try:
        await asyncio.wait_for(asyncio.shield(readers), SETTLE_S)
        return True
    except asyncio.TimeoutError:
        readers.cancel()
        return False


def run_python_sync(code: str, limits: Limits | None = None) -> SandboxResult:
    """:func:`run_python` outside an event loop (``tfgrpo sandbox run``, the isolation probe)."""
    return asyncio.run(run_python(code, limits))
