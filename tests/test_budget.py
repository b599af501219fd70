"""Budgets stop a run at a step boundary, say so, and resume with a higher limit."""

import json
import re

import pytest

from cli_helpers import last_json, tfgrpo
from tfgrpo.training_free.budget import Budget, parse_price
from tfgrpo.training_free.config import BudgetConfig
from tfgrpo.errors import UserError


def usage(calls, tokens, cost=None):
    return {"policy": {"calls": calls, "prompt_tokens": tokens, "completion_tokens": 0, "cost_usd": cost}}


def test_next_step_is_judged_by_the_largest_step_so_far():
    b = Budget(BudgetConfig(calls=25))
    assert b.stop_reason([]) is None  # nothing known yet: the first step runs
    assert b.stop_reason([usage(10, 0)]) is None  # 10 + 10 <= 25
    reason = b.stop_reason([usage(10, 0), usage(8, 0)])  # 18 + 10 > 25
    assert reason and "--budget-calls 25 would be passed" in reason and "spent 18" in reason
    assert Budget(BudgetConfig(tokens=100)).stop_reason([usage(1, 100)]).startswith("--budget-tokens 100")
    assert Budget(BudgetConfig()).stop_reason([usage(10**6, 10**9)]) is None


def test_cost_budget_needs_a_price():
    b = Budget(BudgetConfig(cost=1.0))
    assert "--price-per-mtok" in b.stop_reason([usage(3, 10)])
    assert b.stop_reason([usage(3, 10, cost=0.2)]) is None
    assert b.stop_reason([usage(3, 10, cost=0.2), usage(3, 10, cost=0.4)]) is None  # 0.6 + 0.4 = 1.0 fits
    assert "spent $0.7000" in b.stop_reason([usage(3, 10, cost=0.2), usage(3, 10, cost=0.5)])  # 0.7 + 0.5 > 1.0
    assert parse_price("0.15,0.6") == (0.15, 0.6)
    with pytest.raises(UserError, match="IN,OUT"):
        parse_price("cheap")


@pytest.mark.slow
def test_run_stops_at_a_step_boundary_and_resumes_with_a_higher_limit(tmp_path):
    out = tmp_path / "run"
    first = tfgrpo(
        "train", "--model", "sim", "--epochs", "1", "--budget-calls", "30", "--out", str(out), "--json", "-q"
    )
    s = last_json(first)
    assert s["status"] == "stopped_by_budget" and 0 < s["steps"] < 4
    assert "stopped by budget" in first.stderr and "--budget-calls 30 would be passed" in first.stderr
    assert f"--resume {out}" in first.stderr
    assert sum(s["calls"].values()) <= 30
    status = json.loads((out / "status.json").read_text())
    assert status["status"] == "stopped_by_budget" and status["steps_done"] == s["steps"]
    again = last_json(tfgrpo("train", "--resume", str(out), "--budget-calls", "1000", "--json", "-q"))
    assert again["status"] == "finished" and again["steps"] == 4 and again["leaks"] == 0
    assert json.loads((out / "status.json").read_text())["status"] == "finished"


def test_price_per_mtok_prices_an_unpriced_model_and_caps_cost(tmp_path):
    out = tmp_path / "run"
    s = last_json(
        tfgrpo(
            "train",
            "--model",
            "sim",
            "--epochs",
            "1",
            "--price-per-mtok",
            "1,2",
            "--budget-cost",
            "0.01",
            "--out",
            str(out),
            "--json",
            "-q",
        )
    )
    u = s["usage"]["policy"]
    assert u["cost_usd"] == pytest.approx((u["prompt_tokens"] * 1 + u["completion_tokens"] * 2) / 1e6, rel=0.01)
    total = sum(r["cost_usd"] for r in s["usage"].values())
    assert s["status"] == "stopped_by_budget" and total <= 0.01


@pytest.mark.slow  # keeps the default run under 5 minutes; CI runs it
def test_cost_limit_without_a_price_stops_after_the_first_step_and_says_why(tmp_path):
    proc = tfgrpo(
        "train", "--model", "sim", "--epochs", "1", "--budget-cost", "5", "--out", str(tmp_path / "r"), "--json", "-q"
    )
    assert last_json(proc)["steps"] == 1 and "--price-per-mtok" in proc.stderr
    # The advice is true: the suggested command (not "a higher limit") continues the run.
    suggested = re.search(
        r"continue with tfgrpo (train --resume \S+ --price-per-mtok IN,OUT)", " ".join(proc.stderr.split())
    )
    assert suggested, proc.stderr
    args = suggested.group(1).replace("IN,OUT", "1,2").split()
    again = last_json(tfgrpo(*args, "--json", "-q"))
    assert again["steps"] > 1
