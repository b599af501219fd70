"""Run the real ``tfgrpo`` entry point in a subprocess, as a user would."""

from __future__ import annotations

import atexit
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

if (
    "TFGRPO_STATE" not in os.environ
):  # the runs tfgrpo wrote (tfgrpo.trust) are listed in the tests' folder, not the user's
    os.environ["TFGRPO_STATE"] = tempfile.mkdtemp(prefix="tfgrpo-test-state-")
    atexit.register(shutil.rmtree, os.environ["TFGRPO_STATE"], True)
ENV = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True", "PYTHONUNBUFFERED": "1"}
CMD = [sys.executable, "-m", "tfgrpo"]


def tfgrpo(
    *args: str, check: bool = True, timeout: float = 240, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    proc = subprocess.run([*CMD, *args], capture_output=True, text=True, env=env or ENV, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"tfgrpo {' '.join(args)} exited {proc.returncode}:\n{proc.stderr[-3000:]}")
    return proc


def last_json(proc: subprocess.CompletedProcess) -> dict[str, Any]:
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    assert lines, f"no stdout; stderr:\n{proc.stderr[-2000:]}"
    return json.loads(lines[-1])


def committed(run: Path) -> int:
    """How many steps a run directory has marked done (lines of its steps.jsonl)."""
    p = run / "steps.jsonl"
    return len(p.read_text().splitlines()) if p.exists() else 0


def ctrl_c_default() -> None:
    """``preexec_fn`` for a child a test sends SIGINT: a shell starts background jobs with SIGINT
    ignored, a child inherits that, and Python then installs no KeyboardInterrupt handler."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


class InProcess:
    """What :func:`tfgrpo_in_process` returns: the exit code, stdout and stderr apart."""

    def __init__(self, result: Any) -> None:
        self.returncode, self.stdout, self.stderr = result.exit_code, result.stdout, result.stderr


def tfgrpo_in_process(*args: str, check: bool = True) -> InProcess:
    """The real command line, run in this process (fast; no subprocess, so no SIGTERM or exit-path checks)."""
    from typer.testing import CliRunner

    from tfgrpo.cli import build_app

    proc = InProcess(CliRunner().invoke(build_app(), list(args), env={"COLUMNS": "200"}))
    if check and proc.returncode != 0:
        raise AssertionError(f"tfgrpo {' '.join(args)} exited {proc.returncode}:\n{proc.stderr[-3000:]}")
    return proc
