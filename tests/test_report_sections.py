"""Issue 13, "the report is wrong in places": each section of ``tfgrpo report`` on run
directories of both modes, failing on an empty chart (an axis with nothing drawn on it)."""

from __future__ import annotations

import json
import re

import pytest
import yaml

import tfgrpo.report_plots as plots
from tfgrpo.report import write_report
from tfgrpo.rundir import RunDir


def _drawn(ax) -> int:
    """How many things with data an axis shows: lines with points, bars of some height, filled areas."""
    lines = sum(1 for line in ax.get_lines() if len(line.get_xdata()) and "axvline" not in line.get_label())
    bars = sum(1 for p in ax.patches if getattr(p, "get_height", lambda: 0)())
    areas = sum(1 for c in ax.collections if len(getattr(c, "get_paths", lambda: [])()))
    return lines + bars + areas


@pytest.fixture
def figures(monkeypatch):
    """Every figure the report saves, by file name, with how much each of its axes shows."""
    seen: dict[str, list[int]] = {}
    save = plots._save

    def record(fig, path):
        seen[path.name] = [_drawn(ax) for ax in fig.axes]
        return save(fig, path)

    monkeypatch.setattr(plots, "_save", record)
    return seen


def _usage(priced: bool) -> dict:
    return {
        "policy": {"calls": 8, "prompt_tokens": 900, "completion_tokens": 300, "cost_usd": 0.002 if priced else None},
        "judge": {"calls": 2, "prompt_tokens": 700, "completion_tokens": 100, "cost_usd": 0.001 if priced else None},
    }


# the rest of a step record (tfgrpo.records.StepRecord), which the report checks each line against
FILLER = {
    "sample_ids": ["q1", "q2", "q3"],
    **dict.fromkeys(("groups", "judged", "proposals", "ops_applied", "ops_rejected"), 0),
    **dict.fromkeys(("judge_failures", "rollout_failures", "wall_s"), 0),
}


def _training_free_run(root, priced: bool = True, ops: bool = True):
    rd = RunDir(root)
    rd.path.mkdir(parents=True)
    rd.config_path.write_text(yaml.safe_dump({"task": "demo", "policy": {"model": "sim"}}))
    rd.write_status("training_free", "finished", steps_done=2, steps_planned=2)
    rd.append(
        "steps.jsonl",
        [
            {
                **FILLER,
                "step": i,
                "epoch": 1,
                "mean_reward": 0.3 + 0.1 * i,
                "group_mean_rewards": [0.2, 0.4 + 0.1 * i, 0.6],
                "ops_by_kind": {"ADD": 2} if ops else {},
                "library_size": 2 * i if ops else 0,
                "usage": _usage(priced),
            }
            for i in (1, 2)
        ],
    )
    if ops:
        rd.append("ops.jsonl", [{"step": 1, "status": "applied", "op": "ADD"}])
    versions = rd.library_path / "versions"
    versions.mkdir(parents=True)
    lesson = {
        "id": "E1",
        "text": "When units differ, convert first <script>x</script>.",
        "status": "active",
        "created_step": 1,
        "updated_step": 1,
        "provenance": {"step": 1, "epoch": 1, "query_ids": [f"query-{i}" for i in range(40)]},
        "stats": {"retrieved": 3, "cited": 2, "helpful": 2, "harmful": 0},
    }
    (versions / "000002.json").write_text(json.dumps({"version": 1, "step": 2, "experiences": [lesson] if ops else []}))
    summary = {
        "k": 2,
        "n": 4,
        "seeds": [0],
        "n_problems": 5,
        "baseline": {"mean_at_k": 0.31234567, "ci95": [0.1, 0.5], "pass_at_k": 0.5, "pass_ci95": [0.3, 0.7]},
        "library": {"mean_at_k": 0.6, "ci95": [0.4, 0.8], "pass_at_k": 0.8, "pass_ci95": [0.6, 1.0]},
        "diff": {"mean": 0.28765433, "ci95": [0.1, 0.4], "p_value": 0.0625},
    }
    (rd.path / "eval" / "test-k2").mkdir(parents=True)
    (rd.path / "eval" / "test-k2" / "summary.json").write_text(json.dumps(summary))
    return rd.path


def test_reward_chart_of_a_parameter_mode_run_has_its_line(tmp_path, figures):
    rd = RunDir(tmp_path / "p")
    rd.path.mkdir()
    rd.config_path.write_text(yaml.safe_dump({"task": "toy", "model": "tiny"}))
    rd.write_status("params", "finished", steps_done=3, steps_planned=3)
    rd.append("steps.jsonl", [{"step": i, "reward_mean": 0.1 * i, "reward_std": 0.1, "loss": 0.5} for i in (1, 2, 3)])
    report = write_report(rd.path)
    assert figures["reward.png"] == [1]  # the mean-reward line (params writes reward_mean)
    assert report.missing == [] and set(figures) == {"reward.png"}  # no library, no per-call price
    text = report.html.read_text()
    assert "parameter mode" in text and "0.100 → 0.300" in text
    assert "LLM calls" not in text and "No library version found" not in text and "Evaluations" not in text


def test_training_free_sections_draw_data(tmp_path, figures):
    report = write_report(_training_free_run(tmp_path / "r"))
    assert set(figures) == {"reward.png", "library.png", "usage.png", "eval.png"}
    for name, axes in figures.items():
        assert axes and all(n > 0 for n in axes), (name, axes)  # no empty chart
    assert report.missing == []


def test_unpriced_run_has_no_empty_cost_axis(tmp_path, figures):
    write_report(_training_free_run(tmp_path / "r", priced=False))
    assert len(figures["usage.png"]) == 1 and figures["usage.png"][0] > 0


def test_run_without_ops_is_not_flagged_missing(tmp_path, figures):
    report = write_report(_training_free_run(tmp_path / "r", ops=False))
    assert "ops.jsonl" not in report.missing


def test_tables_round_values_cut_at_words_and_have_no_empty_header(tmp_path, figures):
    text = write_report(_training_free_run(tmp_path / "r")).html.read_text()
    assert "0.31234567" not in text and "0.312" in text and "0.288" in text
    assert "<tr><th></th><th></th></tr>" not in text
    assert "<script>" not in text and "&lt;script&gt;" in text  # user text is escaped
    sources = re.search(r"(query-0, [^<]*)</td>", text).group(1)
    assert sources.endswith(" …") and re.fullmatch(r"(query-\d+, )*query-\d+ …", sources), sources
