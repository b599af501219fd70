"""Whole runs with an external agent (slow: one process per rollout): a command agent learns what
the built-in agent learns on the demo task, eval --agent reports its three arms, and a run killed
mid-group resumes to the library an uninterrupted run ends with. Upstream is the simulator, so
these check the plumbing, not what a real model learns."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cli_helpers import CMD, ENV, committed, last_json, tfgrpo
from experience_store import Library
from tfgrpo.sim.skills import skill_in_text

pytestmark = pytest.mark.slow
AGENT = f"{sys.executable} {Path(__file__).parent / 'agents' / 'plain_agent.py'}"
TRAIN = [
    "train",
    "--task",
    "demo",
    "--model",
    "sim",
    "--epochs",
    "1",
    "--limit",
    "16",
    "--batch-size",
    "4",
    "--group-size",
    "4",
    "--json",
    "-q",
]


def skills(run: Path) -> set[str]:
    return {s.name for e in Library(run / "library").experiences if (s := skill_in_text(e.text))}


def lessons(run: Path) -> list[str]:
    return [e.text for e in Library(run / "library").experiences]


def test_a_command_agent_learns_what_the_built_in_agent_learns_and_eval_reports_its_arms(tmp_path):
    agent = last_json(tfgrpo(*TRAIN, "--agent", AGENT, "--out", str(tmp_path / "agent"), timeout=600))
    built_in = last_json(tfgrpo(*TRAIN, "--out", str(tmp_path / "builtin")))
    assert agent["rollout_failures"] == 0 and agent["library_size"] > 0
    learned, reference = skills(tmp_path / "agent"), skills(tmp_path / "builtin")
    assert len(learned & reference) >= 3 and len(learned & reference) >= 0.6 * len(learned | reference), (
        learned,
        reference,
    )
    assert agent["usage"]["policy"]["calls"] == 4 * 16  # one model call per rollout of this agent
    ev = last_json(
        tfgrpo(
            "eval",
            "--library",
            str(tmp_path / "agent"),
            "--agent",
            AGENT,
            "--placebo",
            "-k",
            "2",
            "--limit",
            "8",
            "--json",
            "-q",
            timeout=600,
        )
    )
    for arm in ("baseline", "library", "placebo"):
        assert len(ev[arm]["ci95"]) == 2 and 0 <= ev[arm]["mean_at_k"] <= 1 and ev[arm]["failures"] == 0
    assert "ci95" in ev["diff"] and "diff" in ev["placebo"]


def test_a_run_killed_mid_group_resumes_to_the_uninterrupted_library(tmp_path):
    whole = last_json(tfgrpo(*TRAIN, "--agent", AGENT, "--out", str(tmp_path / "whole"), timeout=600))
    run = tmp_path / "killed"
    proc = subprocess.Popen(
        [*CMD, *TRAIN, "--agent", AGENT, "--out", str(run)],
        env=ENV,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 300
    while committed(run) < 1 and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)
    time.sleep(1.0)  # into step 2's group rollouts
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert 1 <= committed(run) < whole["steps"]
    resumed = last_json(tfgrpo("train", "--resume", str(run), "--json", "-q", timeout=600))
    assert resumed["steps"] == whole["steps"] and resumed["status"] == "finished"
    assert lessons(run) == lessons(tmp_path / "whole")
