"""Issue 23, item 13 for the user's own agent: an agent command outlives no tfgrpo that died
by SIGKILL mid-rollout (the kernel's parent-death signal, as for served models)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
from hostile_rows import Case, rows

from cli_helpers import CMD, ENV

AGENT = "import os, pathlib, time; pathlib.Path(os.environ['AGENT_PIDS'], str(os.getpid())).touch(); time.sleep(120)"


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as f:  # a zombie waiting for its reaper is gone
        return f.read().rsplit(")", 1)[1].split()[0] != "Z"


def agent_dies_with_tfgrpo(ctx) -> None:
    pids = ctx.tmp / "pids"
    pids.mkdir()
    train = subprocess.Popen(
        [*CMD, "train", "--task", "demo", "--model", "sim", "--limit", "2", "--batch-size", "2", "--group-size", "2",
         "--agent", f"{sys.executable} -c \"{AGENT}\"", "--out", str(ctx.tmp / "run"), "-q"],
        env={**ENV, "AGENT_PIDS": str(pids)}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while len(list(pids.iterdir())) < 4 and time.monotonic() < deadline:
            time.sleep(0.1)
        agents = [int(p.name) for p in pids.iterdir()]
        assert len(agents) == 4, "the agents did not start"
        train.send_signal(signal.SIGKILL)
        train.wait()
        deadline = time.monotonic() + 10
        while any(alive(p) for p in agents) and time.monotonic() < deadline:
            time.sleep(0.1)
        left = [p for p in agents if alive(p)]
        assert not left, f"agent processes outlived tfgrpo: {left}"
    finally:
        train.kill()
        for p in pids.iterdir():
            try:
                os.kill(int(p.name), signal.SIGKILL)
            except ProcessLookupError:
                pass


CASES = [
    Case("r3 13 serve children", "tfgrpo SIGKILLed while 4 agent commands run",
         "every agent process ends within seconds", agent_dies_with_tfgrpo, slow=True),
]  # fmt: skip


@pytest.mark.parametrize("case", rows(CASES))
def test_hostile_agent_parent(case, ctx):
    case.run(ctx)
