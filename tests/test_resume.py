"""Stopped with SIGTERM or Ctrl-C the run is marked interrupted and resumes; a resume may extend
the epochs but not change the task. (SIGKILL at any moment, with or without --store, and resumes
after a cut step are rows of the hostile-input table, tests/hostile/test_hostile_runs.py.)"""

import json
import os
import signal
import subprocess
import time

import pytest

from cli_helpers import CMD, ENV, committed, ctrl_c_default, last_json, tfgrpo


@pytest.mark.slow  # keeps the default run under 5 minutes; CI runs it
@pytest.mark.parametrize("sig, code, reason", [(signal.SIGTERM, 143, "SIGTERM"), (signal.SIGINT, 130, "Ctrl-C")])
def test_sigterm_and_ctrl_c_mark_the_run_interrupted(tmp_path, sim_server, sig, code, reason):
    server, url = sim_server
    run = tmp_path / "run"
    proc = subprocess.Popen([*CMD, "train", "--task", "demo", "--epochs", "1", "--model", "openai/sim-policy-s0",
                             "--api-base", url, "--out", str(run), "--quiet"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, env=ENV, preexec_fn=ctrl_c_default)  # fmt: skip
    deadline = time.monotonic() + 120
    while committed(run) < 1 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    os.kill(server.pid, signal.SIGSTOP)  # the run is now waiting inside a step
    try:
        assert json.loads((run / "status.json").read_text())["status"] == "running"
        proc.send_signal(sig)
        assert proc.wait(60) == code, proc.stderr.read()[-2000:]
    finally:
        os.kill(server.pid, signal.SIGCONT)
    assert f"interrupted; continue with: tfgrpo train --resume {run}" in proc.stderr.read()
    status = json.loads((run / "status.json").read_text())
    assert status["status"] == "interrupted" and status["reason"] == reason
    assert status["steps_done"] == committed(run) >= 1 and status["steps_planned"] == 4
    assert "interrupted" in tfgrpo("runs", str(tmp_path)).stdout
    resumed = last_json(tfgrpo("train", "--resume", str(run), "--json", "--api-base", url))
    assert resumed["steps"] == 4 and json.loads((run / "status.json").read_text())["status"] == "finished"


@pytest.mark.slow
def test_resume_may_extend_epochs_but_not_change_the_task(tmp_path):
    run = tmp_path / "run"
    tfgrpo("train", "--task", "demo", "--model", "sim", "--epochs", "1", "--out", str(run), "--quiet")
    more = last_json(tfgrpo("train", "--resume", str(run), "--epochs", "2", "--json"))
    assert more["steps"] == 8 and more["resumed_from_step"] == 4
    proc = tfgrpo("train", "--resume", str(run), "--group-size", "3", check=False)
    assert proc.returncode == 2 and "cannot change --group-size" in proc.stderr
