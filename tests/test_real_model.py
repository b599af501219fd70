"""A real model in the loop, offline: SmolLM2-135M-Instruct (converted from the pinned GGUF by
``tfgrpo.model_files``) behind ``transformers serve`` on 127.0.0.1, as policy and judge of a
``tfgrpo train`` run, which is then resumed for a second step and evaluated.

It asserts what a 135M model can honestly give: every request answered, no rollout lost to a
server that ignores ``n``, judge output it cannot parse recorded and not fatal, the run finishes
and resumes. It prints the numbers the README quotes (requests per rollout, wall time per step).
"""

import json
import re
import time

import pytest

from cli_helpers import last_json, tfgrpo
from tfgrpo.llm.launcher import TransformersServer
from tfgrpo.rundir import GROUPS, OPS, ROLLOUTS, RunDir

PROBLEMS = [
    {"id": "add", "problem": "What is 2 + 3?", "answer": "5"},
    {"id": "double", "problem": "What is 4 + 4?", "answer": "8"},
]


@pytest.mark.slow
def test_real_model_trains_resumes_and_evaluates(tmp_path, smollm2):
    model = smollm2
    data = tmp_path / "problems.jsonl"
    data.write_text("".join(json.dumps(p) + "\n" for p in PROBLEMS))
    config = tmp_path / "run.yaml"
    # Every group is judged (a 135M model rarely gives a group contrast); short judge replies.
    config.write_text("judge:\n  max_tokens: 160\n  skip_equal_groups: false\n")
    log = tmp_path / "server.log"
    run = tmp_path / "run"
    with TransformersServer(str(model), threads=1, log_path=log, health_timeout=600) as server:
        endpoint = ["--model", server.client_model, "--api-base", server.base_url, "--timeout", "600"]
        common = ["--task", "math", "--data", str(data), "--json", "-q"]
        started = time.monotonic()
        first = last_json(
            tfgrpo(
                "train",
                *common,
                *endpoint,
                "-c",
                str(config),
                "--epochs",
                "1",
                "--batch-size",
                "2",
                "--group-size",
                "2",
                "--max-tokens",
                "48",
                "--out",
                str(run),
                timeout=1800,
            )
        )
        resumed = last_json(tfgrpo("train", "--resume", str(run), "--epochs", "2", "--json", "-q", *endpoint,
                                   timeout=1800))  # fmt: skip
        train_wall = time.monotonic() - started
        evaluated = last_json(tfgrpo("eval", "--library", str(run), *common, *endpoint, "-k", "1",
                                     "--max-tokens", "48", "--on-training-problems", timeout=1800))  # fmt: skip
    codes = re.findall(r'"POST /v1/chat/completions HTTP/1\.1" (\d+)', log.read_text())

    rd = RunDir(run)
    rollouts = rd.read(ROLLOUTS)
    steps = rd.steps()
    sent = sum(s.usage.get("policy", {}).get("calls", 0) for s in steps)
    judge_sent = sum(s.usage.get("judge", {}).get("calls", 0) for s in steps)
    judge_failed = [o for o in rd.read(OPS) if o.get("status") == "judge_failed"]
    print(f"\nreal model: {len(steps)} steps, {len(rollouts)} rollouts, {sent} policy requests "
          f"({sent / len(rollouts):.2f} per rollout), {judge_sent} judge requests, "
          f"{sum(s.rollout_failures for s in steps)} rollouts failed, {len(judge_failed)} judge failures, "
          f"wall per step {[s.wall_s for s in steps]} s, train+resume {train_wall:.0f} s")  # fmt: skip

    # The run finishes, and resumes into a second step.
    assert first["steps"] == 1 and first["status"] == "finished"
    assert resumed["steps"] == 2 and resumed["resumed_from_step"] == 1 and resumed["status"] == "finished"
    assert json.loads((run / "status.json").read_text())["status"] == "finished"
    # Every request was answered, and no rollout was lost to n: each got its own request.
    assert codes and set(codes) == {"200"}, codes
    assert len(rollouts) == 2 * 2 * 2 and all(r["text"] is not None for r in rollouts)
    assert sum(s.rollout_failures for s in steps) == 0 and first["usage"]["policy"]["failures"] == 0
    assert sent >= len(rollouts)  # the server ignores n: one request per answer (plus the n=2 probe's)
    # Judge output it could not use is recorded, never fatal.
    assert resumed["judge_failures"] == len(judge_failed) and all(j["error"] for j in judge_failed)
    assert all(g["judged"] or g["skip_reason"] for g in rd.read(GROUPS))
    # The evaluation ran on the same server: baseline and library, every answer there.
    assert evaluated["k"] == 1 and evaluated["n_problems"] == 2
    for arm in ("baseline", "library"):
        assert evaluated[arm]["samples"] == 2 and evaluated[arm]["failures"] == 0
