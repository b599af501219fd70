"""Each agentic task, offline, through the real command line and the simulated model: rollouts
with tool calls, summaries of the trajectories, and a learned library."""

import json

import pytest

from cli_helpers import last_json, tfgrpo
from tfgrpo.task_registry import load_task


def rows(path):
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@pytest.mark.parametrize(
    "task,tool",
    [
        ("math-tools", "python"),
        pytest.param("docqa", "search", marks=pytest.mark.slow),
        pytest.param("sql", "sql", marks=pytest.mark.slow),
        pytest.param("code", "python", marks=pytest.mark.slow),
    ],
)
def test_offline_run(tmp_path, task, tool):
    out = tmp_path / "run"
    summary = last_json(
        tfgrpo(
            "train",
            "--task",
            task,
            "--model",
            "sim",
            "--epochs",
            "2",
            "--group-size",
            "4",
            # a small judge context: the trajectories fill more than half of it, so they are summarised
            "--judge-context",
            "256",
            "--out",
            str(out),
            "--json",
            "--quiet",
        )
    )
    assert summary["steps"] == 2 and summary["library_size"] >= 1
    first, last = summary["reward_by_step"]
    assert last > first  # the lesson about the tool is learned and used
    rollouts = rows(out / "rollouts.jsonl")
    calls = [c for r in rollouts for t in r["trajectory"]["turns"] for c in t["tool_calls"]]
    assert calls and all(c["name"] == tool for c in calls)
    assert all(r["trajectory"]["messages"][0]["role"] == "system" for r in rollouts)
    judged = [g for g in rows(out / "groups.jsonl") if g["judged"]]
    assert judged and all(len(g["summaries"]) == 4 and all(g["summaries"]) for g in judged)
    assert any(f"called {tool}" in s for g in judged for s in g["summaries"])


def test_docqa_without_ground_truth_uses_self_consistency_and_a_blind_judge(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("task: docqa\ntask_args:\n  reward: consistency\njudge:\n  ground_truth: false\n")
    out = tmp_path / "run"
    summary = last_json(
        tfgrpo("train", "--config", str(cfg), "--model", "sim", "--epochs", "1", "--out", str(out), "--json", "--quiet")
    )
    assert summary["steps"] == 1
    assert all(s.answer is None for s in load_task("docqa", reward="consistency").dataset)
    groups = rows(out / "groups.jsonl")
    assert all(g["judged"] for g in groups)  # without ground truth every group is judged
    rewards = [r for g in groups for r in g["rewards"]]
    assert set(rewards) <= {0.0, 0.5, 1.0} and 1.0 in rewards


async def test_llm_grader_reward_asks_the_runs_judge_through_its_client_stack():
    from tfgrpo.llm.endpoints import open_models
    from tfgrpo.training_free.config import JudgeConfig, PolicyConfig

    task = load_task("docqa", reward="grader")
    sample = task.dataset[0]
    grade = task.rewards[0]
    assert await grade.score(sample, ["Answer: x"]) == [None]  # outside a run there is no model to ask: no score
    with open_models(PolicyConfig(model="sim"), JudgeConfig()) as models:
        assert await grade.score(sample, [f"Answer: {sample.answer}", "Answer: nobody knows"]) == [1.0, 0.0]
        assert models.usage.to_dict()["judge"]["calls"] == 2  # counted with the run's judge calls


def test_bad_task_argument_is_one_line(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("task: docqa\ntask_args:\n  reward: vibes\n")
    proc = tfgrpo("train", "--config", str(cfg), "--model", "sim", check=False)
    assert proc.returncode == 2 and "reward must be exact, grader or consistency" in proc.stderr
