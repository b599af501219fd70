"""bench/agent_rollouts.py runs and its JSON agrees with itself (slow: it starts two stub servers
and agent processes). The figures are measured by running the script, not by this test."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_agent_rollouts_bench_reports_consistent_json():
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "agent_rollouts.py"), "--json", "--rollouts", "64",
                           "--calls", "20", "--commands", "2", "--latency", "0.05", "--concurrency", "8"],
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert "[3/3]" in proc.stderr  # progress on stderr, the JSON alone on stdout
    assert out["rollouts_ok"] == out["rollouts"] == 64
    assert abs(out["overhead_ms"] - (out["gateway_call_ms"] - out["direct_call_ms"])) < 0.01
    assert out["bound_rps"] == 8 / 0.05 and abs(out["ratio"] - out["achieved_rps"] / out["bound_rps"]) < 0.01
    assert out["process_start_ms"] > 0 and out["command_rollout_ms"] > out["process_start_ms"]
