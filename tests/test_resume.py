"""Killed at any moment and resumed: no step applied twice, no finished call paid twice, and
the same library as an uninterrupted run."""

import hashlib
import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest

from cli_helpers import CMD, ENV, last_json, tfgrpo


def final_state(run: Path) -> dict:
    versions = sorted((run / "library" / "versions").glob("*.json"))
    state = json.loads(versions[-1].read_text())
    for e in state["experiences"]:  # the run's name and how the judge was addressed may differ
        e["provenance"].pop("run")
        e["provenance"].pop("judge_model")
    return state


def committed(run: Path) -> int:
    p = run / "steps.jsonl"
    return len(p.read_text().splitlines()) if p.exists() else 0


def comparable(run: Path, name: str) -> list:
    rows = [json.loads(line) for line in (run / name).read_text().splitlines()]
    for r in rows:
        r.pop("cached", None)
        r.pop("wall_s", None)
        r.pop("usage", None)
    return rows


@pytest.fixture
def sim_server():
    """The simulated model in its own process, so the test can freeze it mid-request."""
    proc = subprocess.Popen([*CMD, "sim-server", "--port", "0", "--seed", "0"], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=ENV)
    url = None
    deadline = time.monotonic() + 60
    while url is None and time.monotonic() < deadline:
        line = proc.stdout.readline()
        m = re.search(r"(http://127\.0\.0\.1:\d+/v1)", line)
        if m:
            url = m.group(1)
    assert url, "sim-server did not print its URL"
    yield proc, url
    os.kill(proc.pid, signal.SIGCONT)
    proc.terminate()
    proc.wait(10)


@pytest.mark.slow  # keeps the default run under 5 minutes; CI runs it
@pytest.mark.parametrize("sig, code, reason", [(signal.SIGTERM, 143, "SIGTERM"), (signal.SIGINT, 130, "Ctrl-C")])
def test_sigterm_and_ctrl_c_mark_the_run_interrupted(tmp_path, sim_server, sig, code, reason):
    server, url = sim_server
    run = tmp_path / "run"
    proc = subprocess.Popen([*CMD, "train", "--task", "demo", "--epochs", "1", "--model", "openai/sim-policy-s0",
                             "--api-base", url, "--out", str(run), "--quiet"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, env=ENV)  # fmt: skip
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


def store_args(request, store: bool, name: str) -> list[str]:
    """--store on the test's Chroma server, a collection of its own (or nothing)."""
    if not store:
        return []
    case = hashlib.sha1(request.node.name.encode()).hexdigest()[:12]
    return ["--store", request.getfixturevalue("chroma_server"), "--store-collection", f"c{case}-{name}"]


def shared_steps(request, store: bool, name: str) -> list[int]:
    """The steps of a shared collection's commit log, in commit order."""
    import chromadb
    from urllib.parse import urlparse

    url = urlparse(store_args(request, store, name)[1])
    client = chromadb.HttpClient(host=url.hostname, port=url.port, settings=chromadb.Settings(anonymized_telemetry=False))
    got = client.get_collection(f"{store_args(request, store, name)[3]}-commits").get(include=["metadatas"])
    return [m["step"] for _, m in sorted(zip(got["ids"], got["metadatas"]))]


@pytest.mark.slow
@pytest.mark.parametrize("kill_after,store", [(1, False), (4, False), (2, True), (5, True)])
def test_sigkill_mid_step_then_resume_gives_the_uninterrupted_library(request, tmp_path, sim_server, kill_after, store):
    server, url = sim_server
    common = ["train", "--task", "demo", "--epochs", "2", "--json"]
    reference = tmp_path / "reference"
    ref = last_json(tfgrpo(*common, "--model", "sim", "--out", str(reference), *store_args(request, store, "ref")))
    common += store_args(request, store, "run")

    run = tmp_path / "killed"
    remote = ["--model", "openai/sim-policy-s0", "--api-base", url, "--judge", "openai/sim-judge-s0",
              "--judge-api-base", url]
    env = {**ENV, "OPENAI_API_KEY": "sim"}  # the simulator takes any key; the openai client wants one
    proc = subprocess.Popen([*CMD, *common, *remote, "--out", str(run), "--quiet"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, env=env)
    deadline = time.monotonic() + 120
    while committed(run) < kill_after and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    os.kill(server.pid, signal.SIGSTOP)  # every request in flight now hangs: the run is inside a step
    time.sleep(0.3)
    proc.kill()
    proc.wait()
    os.kill(server.pid, signal.SIGCONT)
    done_before = committed(run)
    assert kill_after <= done_before < ref["steps"], f"the kill did not land mid-run: {proc.stderr.read()[-2000:]}"

    resumed = last_json(tfgrpo("train", "--resume", str(run), "--json", "--api-base", url, "--judge-api-base", url, env=env))
    assert resumed["steps"] == ref["steps"]
    assert resumed["resumed_from_step"] == done_before
    # finished calls come back from the cache: the resumed run only pays for the steps it had left
    assert resumed["usage"]["policy"]["calls"] <= (ref["steps"] - done_before) * 8
    assert final_state(run)["experiences"] == final_state(reference)["experiences"]
    for name in ("rollouts.jsonl", "groups.jsonl", "steps.jsonl"):
        assert comparable(run, name) == comparable(reference, name), name
    ops = [json.loads(line) for line in (run / "ops.jsonl").read_text().splitlines()]
    assert [o["step"] for o in ops] == sorted(o["step"] for o in ops)  # no step applied twice
    if store:  # one shared commit per step, as in the uninterrupted run
        assert shared_steps(request, store, "run") == shared_steps(request, store, "ref") == list(range(1, ref["steps"] + 1))


@pytest.mark.slow
@pytest.mark.parametrize("store,window", [(False, "after the library version"), (True, "after the shared commit"),
                                          (True, "after the library version")])
def test_resume_discards_what_an_unfinished_step_wrote(request, tmp_path, store, window):
    run = tmp_path / "run"
    first = last_json(tfgrpo("train", "--task", "demo", "--model", "sim", "--epochs", "1", "--out", str(run), "--json",
                             *store_args(request, store, "run")))
    assert first["steps"] == 4
    # Pretend step 4 was cut off after writing its records and its (shared) library commit.
    steps = (run / "steps.jsonl").read_text().splitlines()
    (run / "steps.jsonl").write_text("\n".join(steps[:3]) + "\n")
    with (run / "rollouts.jsonl").open("a") as f:
        f.write('{"step": 4, "half a line')
    if window == "after the shared commit":  # the local version file was not written yet
        (run / "library" / "versions" / "000004.json").unlink()
    clean = last_json(tfgrpo("train", "--task", "demo", "--model", "sim", "--epochs", "1", "--out", str(tmp_path / "clean"),
                             "--json", *store_args(request, store, "clean")))
    resumed = last_json(tfgrpo("train", "--resume", str(run), "--json"))
    assert resumed["resumed_from_step"] == 3 and resumed["steps"] == 4
    assert resumed["usage"]["policy"]["calls"] == 0 and resumed["usage"]["policy"]["cache_hits"] == 8 * 5
    assert final_state(run)["experiences"] == final_state(tmp_path / "clean")["experiences"]
    assert comparable(run, "rollouts.jsonl") == comparable(tmp_path / "clean", "rollouts.jsonl")
    assert clean["library_size"] == resumed["library_size"]
    assert comparable(run, "ops.jsonl") == comparable(tmp_path / "clean", "ops.jsonl")
    if store:  # the step's shared commit was adopted, not made again
        assert shared_steps(request, store, "run") == shared_steps(request, store, "clean") == [1, 2, 3, 4]


@pytest.mark.slow
def test_resume_may_extend_epochs_but_not_change_the_task(tmp_path):
    run = tmp_path / "run"
    tfgrpo("train", "--task", "demo", "--model", "sim", "--epochs", "1", "--out", str(run), "--quiet")
    more = last_json(tfgrpo("train", "--resume", str(run), "--epochs", "2", "--json"))
    assert more["steps"] == 8 and more["resumed_from_step"] == 4
    proc = tfgrpo("train", "--resume", str(run), "--group-size", "3", check=False)
    assert proc.returncode == 2 and "cannot change --group-size" in proc.stderr
