"""Other ways a training-free run meets the world: a launched vLLM (substitute executable),
a judge that fails, an endpoint that throws 429/500/timeouts, an installed wheel."""

import asyncio
import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from cli_helpers import ENV, last_json, tfgrpo
from tfgrpo.training_free.config import RunConfig
from tfgrpo.llm.endpoints import open_models
from tfgrpo.sim import start_sim_server
from tfgrpo.training_free.prompting import Prompts
from tfgrpo.task_registry import load_task
from tfgrpo.rundir import RunDir
from tfgrpo.training_free.loop import train_loop

ROOT = Path(__file__).resolve().parent.parent
FAKE_VLLM = Path(__file__).resolve().parent / "fake_vllm.py"


@pytest.mark.slow  # keeps the default run under 5 minutes; CI runs it
def test_train_with_serve_launches_and_stops_vllm(tmp_path):
    exe = tmp_path / "vllm"
    exe.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{FAKE_VLLM}" "$@"\n')
    exe.chmod(0o755)
    out = tmp_path / "run"
    env = {**ENV, "TFGRPO_VLLM_EXECUTABLE": str(exe)}
    summary = last_json(
        tfgrpo(
            "train", "--task", "demo", "--serve", "Qwen/Qwen3-8B", "--epochs", "1", "--out", str(out), "--json", env=env
        )
    )
    assert summary["steps"] == 4 and summary["calls"]["policy"] == 32 and summary["calls"]["judge"] > 0
    log = (out / "vllm.log").read_text()
    assert "Qwen/Qwen3-8B" in log and "--enable-prefix-caching" in log
    assert "hosted_vllm/Qwen/Qwen3-8B" in (out / "steps.jsonl").read_text() or summary["library_size"] > 0


def _run(tmp_path, faults, **cfg_kw):
    """A run against an external simulator with injected faults, through the Python API."""
    with start_sim_server(
        seed=0, faults=faults, timeout_delay=5.0
    ) as sim:  # past 4x the 1 s timeout (a cold local endpoint)
        cfg = RunConfig(task="demo", epochs=1, batch_size=8, sampling={"group_size": 4}, **cfg_kw)
        cfg.policy.model, cfg.policy.api_base, cfg.policy.timeout = "openai/sim-policy-s0", sim.base_url, 1.0
        cfg.judge.model, cfg.judge.api_base = "openai/sim-judge-s0", sim.base_url
        for side in (cfg.policy, cfg.judge):
            side.api_key_env, side.retry_timeouts = (
                "SIM_KEY",
                True,
            )  # a local server: timeouts are not resent by default
        rd = RunDir(tmp_path / "run")
        with open_models(cfg.policy, cfg.judge, cache_path=rd.path / "cache.sqlite") as models:
            return asyncio.run(train_loop(cfg, load_task("demo"), models, rd, prompts=Prompts())), rd, sim


def test_injected_429_500_timeouts_are_recovered(tmp_path, monkeypatch):
    monkeypatch.setenv("SIM_KEY", "sim")
    result, rd, sim = _run(tmp_path, ["429", "500", "timeout", "503"], judge={"check": False})
    summary = result.summary()
    assert summary["steps"] == 4 and summary["rollout_failures"] == 0
    assert summary["usage"]["policy"]["retries"] + summary["usage"]["judge"]["retries"] == 4
    assert sim.stats.faults_injected == 4


def test_failed_judge_calls_are_recorded_and_library_unchanged(tmp_path, monkeypatch):
    """A judge that writes prose for about half of the groups (and NONE for the others):
    every call for those asks for a repair, and a repair that still does not parse is a recorded
    failure with the bad output kept; the run goes on."""
    from openai_stub import StubServer

    none = json.dumps({"reasoning": "Only a slip.", "ops": [{"op": "NONE", "reason": "a slip"}]})

    def answer(messages, i):  # the same for a group's first request and its repair
        import zlib

        first = next(m["content"] for m in messages if m["role"] == "user")
        return "What a lovely set of attempts." if zlib.crc32(first.encode()) % 2 else none

    monkeypatch.setenv("SIM_KEY", "sim")
    with StubServer(answer=answer) as judge, start_sim_server(seed=0) as sim:
        cfg = RunConfig(task="demo", epochs=1, batch_size=8, sampling={"group_size": 4}, judge={"check": False})
        cfg.policy.model, cfg.policy.api_base, cfg.policy.api_key_env = "openai/sim-policy-s0", sim.base_url, "SIM_KEY"
        cfg.judge.model, cfg.judge.api_base, cfg.judge.api_key_env = "openai/prose", judge.base_url, "SIM_KEY"
        rd = RunDir(tmp_path / "run")
        with open_models(cfg.policy, cfg.judge) as models:
            result = asyncio.run(train_loop(cfg, load_task("demo"), models, rd, prompts=Prompts()))
    summary = result.summary()
    assert summary["judge_failures"] >= 1 and summary["library_size"] == 0
    ops = [json.loads(line) for line in (rd.path / "ops.jsonl").read_text().splitlines()]
    failures = [o for o in ops if o.get("status") == "judge_failed"]
    assert len(failures) == summary["judge_failures"]
    assert all("after one repair" in f["error"] and f["raw"][0] for f in failures)  # bad output kept
    groups = [json.loads(line) for line in (rd.path / "groups.jsonl").read_text().splitlines()]
    assert sum(1 for g in groups if g["error"]) == sum(1 for f in failures if f["stage"] == "group_comparison")
    assert any(g["judged"] and not g["error"] for g in groups)  # the other groups were judged


def test_blind_judging_judges_every_group(tmp_path, monkeypatch):
    monkeypatch.setenv("SIM_KEY", "sim")
    cfg_judge = {"judge": {"ground_truth": False}}
    result, rd, _ = _run(tmp_path, [], **cfg_judge)
    assert all(s.judged == s.groups for s in result.steps)


@pytest.mark.slow
def test_wheel_carries_builtin_tasks_and_prompts(tmp_path):
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path), str(ROOT)],
        check=True,
        env=ENV,
        capture_output=True,
    )
    wheel = next(tmp_path.glob("tfgrpo-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    for name in (
        "tfgrpo/_builtin/tasks/demo.py",
        "tfgrpo/_builtin/tasks/data/demo.jsonl",
        "tfgrpo/_builtin/tasks/math_answers.py",
        "tfgrpo/_builtin/prompts/agent.j2",
        "tfgrpo/_builtin/prompts/compare.j2",
        "experience_store/library.py",
    ):
        assert name in names, name
    target = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target), str(wheel)],
        check=True,
        env=ENV,
        capture_output=True,
    )
    code = (
        "import tfgrpo.task_registry as t; from tfgrpo.training_free.prompting import Prompts; "
        "print(t.builtin_dir('tasks')); print(len(t.load_task('demo').dataset)); "
        "print(Prompts().render('agent.j2', instructions='x', experiences='[E1] y')[:1])"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        env={**ENV, "PYTHONPATH": str(target)},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    assert out[0].startswith(str(target)) and out[1] == "32" and out[2] == "x"


def test_two_replicas_one_stopped_mid_run_the_run_finishes_and_loses_no_rollout(tmp_path):
    """--api-base with two simulators of the same seed; the second stops after step 1."""
    from tfgrpo.hooks import Hooks

    with start_sim_server(seed=0) as a, start_sim_server(seed=0) as b:
        cfg = RunConfig(task="demo", epochs=1, batch_size=8, sampling={"group_size": 4})
        cfg.policy.model, cfg.policy.api_base = "openai/sim-policy-s0", f"{a.base_url},{b.base_url}"
        cfg.judge.model, cfg.judge.api_base = "openai/sim-judge-s0", cfg.policy.api_base
        stopped = []

        def on_step(record):
            if record.step == 1:
                b.stop()
                stopped.append(b.stats.requests["policy"] + b.stats.requests["judge"])

        rd = RunDir(tmp_path / "run")
        with open_models(cfg.policy, cfg.judge, cache_path=rd.path / "cache.sqlite") as models:
            result = asyncio.run(
                train_loop(cfg, load_task("demo"), models, rd, prompts=Prompts(), hooks=Hooks(on_step=on_step))
            )
        summary = result.summary()
        b_total = b.stats.requests["policy"] + b.stats.requests["judge"]
    assert summary["steps"] == 4 and summary["status"] == "finished"
    assert summary["rollout_failures"] == 0 and summary["judge_failures"] == 0
    assert len([r for r in rd.read("rollouts.jsonl") if r["text"] is not None]) == 4 * 8 * 4
    policy = summary["usage"]["policy"]
    assert set(policy["replicas"]) == {a.base_url, b.base_url} and stopped and stopped[0] > 0
    # After the stop only requests already on their way can reach it (the next step's first wave,
    # at most the concurrency); everything after that goes to the live replica.
    assert b_total - stopped[0] <= cfg.policy.concurrency
    assert policy["replicas"][a.base_url] > policy["replicas"][b.base_url]


def test_a_steps_wall_time_counts_its_rollouts(tmp_path):
    from openai_stub import StubServer

    with StubServer(latency=0.4, answer=lambda messages, i: f"Answer: {i}") as policy:
        proc = tfgrpo("train", "--task", "demo", "--model", "openai/slow", "--api-base", policy.base_url, "--judge",
                      "sim", "--epochs", "1", "--limit", "8", "--out", str(tmp_path / "run"), "--json", "-q")  # fmt: skip
    step = json.loads((tmp_path / "run" / "steps.jsonl").read_text().splitlines()[0])
    assert step["wall_s"] >= 0.4 and last_json(proc)["steps"] == 1
