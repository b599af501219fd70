"""``tfgrpo eval --placebo`` (issue 11, defect 9): a third arm with the library's prompt and
neutral lessons of equal token length, so the lessons' content is told apart from the prompt
format. On the honest simulator the lessons, not the preamble, carry the gain."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cli_helpers import tfgrpo
from experience_store import estimate_tokens
from tfgrpo import api
from tfgrpo.cli.console import eval_table
from tfgrpo.sim.skills import ALL_SKILLS, advice
from tfgrpo.training_free.placebo import NEUTRAL, placebo_block


def test_placebo_block_keeps_preamble_ids_and_token_lengths():
    block = (
        "Lessons learned so far:\n[E1] When a problem mixes units, convert everything to one unit first.\n"
        "[E12] When counting fence posts, remember that n gaps need n + 1 posts, so add one."
    )
    out = placebo_block(block, estimate_tokens)
    lines, before = out.split("\n"), block.split("\n")
    assert lines[0] == before[0] and lines[1].startswith("[E1] ") and lines[2].startswith("[E12] ")
    for new, old in zip(lines[1:], before[1:]):
        assert abs(estimate_tokens(new) - estimate_tokens(old)) <= 2, (new, old)
        assert new != old
    assert placebo_block(block, estimate_tokens) == out  # deterministic


def test_neutral_text_advises_nothing_on_any_simulated_skill():
    for text in NEUTRAL:
        assert all(advice(text, s) is None for s in ALL_SKILLS), text


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "demo"
    api.train({"task": "demo", "epochs": 2, "policy": {"model": "sim"}}, out=out)
    return out


def test_eval_placebo_arm_json_and_table(run):
    r = api.evaluate({"task": "demo", "k": 4, "n": 8, "placebo": True}, run, name="placebo").summary
    base, lib, pla = r["baseline"], r["library"], r["placebo"]
    assert set(pla) == set(base) | {"diff"} and pla["samples"] == base["samples"]
    assert set(pla["diff"]) == set(r["diff"])
    assert pla["diff"]["mean"] == pytest.approx(lib["mean_at_k"] - pla["mean_at_k"], abs=1e-5)
    # The honest simulator gains from what the lessons say, not from the preamble around them.
    assert pla["diff"]["significant"] and pla["diff"]["mean"] > 0
    assert pla["mean_at_k"] <= base["mean_at_k"] + 0.05
    rows = [json.loads(line) for line in (run / "eval" / "placebo" / "results.jsonl").read_text().splitlines()]
    assert {row["arm"] for row in rows} == {"baseline", "library", "placebo"}
    labels = [c for c in eval_table(r).columns[0].cells]
    assert labels[-2:] == ["placebo", "library - placebo"]
    without = api.evaluate({"task": "demo", "k": 4, "n": 8}, run, name="plain").summary
    assert "placebo" not in without


def test_report_shows_the_placebo_arm(run, tmp_path):
    api.evaluate({"task": "demo", "k": 2, "n": 4, "placebo": True}, run, name="with-placebo")
    api.evaluate({"task": "demo", "k": 2, "n": 4}, run, name="without")
    saved = {
        name: json.loads((run / "eval" / name / "summary.json").read_text()) for name in ("with-placebo", "without")
    }
    page = tfgrpo("report", str(run), "--out", str(tmp_path / "rep")).stdout.strip().splitlines()[-1]
    text = Path(page).read_text()
    assert "placebo Mean@k" in text and "library - placebo" in text
    pla = saved["with-placebo"]["placebo"]
    row = text.split("<td>with-placebo</td>", 1)[1].split("</tr>", 1)[0]
    assert f"{pla['mean_at_k']:.3f}" in row and f"{pla['diff']['mean']:.3f}" in row
    plain = text.split("<td>without</td>", 1)[1].split("</tr>", 1)[0]
    assert plain.count("<td></td>") == 4  # no placebo arm in that eval: its four columns are empty, not zero
