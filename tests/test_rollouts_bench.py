"""bench/rollouts.py in its smallest configuration: progress on stderr, one JSON line on stdout
whose numbers agree with each other (no timed thresholds: the ratios are the benchmark's)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from cli_helpers import ENV

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow  # a server process and three client passes; CI runs it
@pytest.mark.parametrize("ignore_n", [False, True])
def test_rollouts_bench_reports_both_paths_and_the_bare_client(ignore_n):
    cmd = [
        sys.executable,
        str(ROOT / "bench" / "rollouts.py"),
        "--groups",
        "24",
        "--latency",
        "0.05",
        "--concurrency",
        "4",
        "--json",
    ]
    proc = subprocess.run(
        cmd + (["--ignore-n"] if ignore_n else []), capture_output=True, text=True, env=ENV, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert len(proc.stdout.strip().splitlines()) == 1  # --json: only the JSON line
    phases = [line.split(":")[0] for line in proc.stderr.splitlines() if line.endswith(" s") and "done in" in line]
    assert [p.split("]")[1].strip() for p in phases] == [
        "[1/3",
        "[2/3",
        "[3/3",
    ]  # "[rollouts] [1/3] ...: done in 2.1 s"
    assert out["rollouts"] == out["rollouts_ok"] == 24 * 4
    assert out["requests"] == (24 * 4 if ignore_n else 24)  # a server ignoring n: one request per rollout
    assert out["bound_rps"] == 4 * (1 if ignore_n else 4) / 0.05
    assert out["ratio"] == pytest.approx(out["achieved_rps"] / out["bound_rps"], abs=0.002)
    assert out["litellm_ratio"] == pytest.approx(out["litellm_achieved_rps"] / out["bound_rps"], abs=0.002)
    for key in ("ratio", "litellm_ratio", "bare_client_ratio"):
        assert 0 < out[key] <= 1.05, key  # nothing beats the server's own bound
    assert out["overhead_ms"] > 0 and out["litellm_overhead_ms"] > 0
