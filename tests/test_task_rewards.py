"""Rewards of the built-in tasks against answers that game or stall them (a review's findings)."""

from __future__ import annotations

import asyncio
import sqlite3

import pytest
from loop_watch import longest_stall

from tfgrpo.errors import UserError
from tfgrpo.task_registry import load_task, read_rows


def test_code_tests_must_run_to_their_end():
    task = load_task("code")
    sample = task.dataset[0]
    reward = task.rewards[0].fn
    right = f"```python\n{sample.answer}\n```"
    assert asyncio.run(reward(sample, right)) == 1.0
    for cheat in ("import sys; sys.exit(0)", "import os; os._exit(0)", "raise SystemExit"):
        assert asyncio.run(reward(sample, f"```python\n{cheat}\n```")) == 0.0, cheat


def test_sql_reward_cannot_attach_files_and_does_not_stall_the_loop(tmp_path):
    task = load_task("sql")
    sample = task.dataset[0]
    reward = task.rewards[0].fn
    target = tmp_path / "attached.db"
    assert asyncio.run(reward(sample, f"```sql\nATTACH DATABASE '{target}' AS x\n```")) == 0.0
    assert not target.exists()
    assert asyncio.run(reward(sample, f"```sql\n{sample.answer}\n```")) == 1.0

    slow = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 8000000) SELECT count(*) FROM c"

    _, stall = asyncio.run(longest_stall(reward(sample, f"```sql\n{slow}\n```")))
    assert stall < 0.5  # the query takes over a second; the loop's heartbeat never waits that long


def test_sql_tool_connection_refuses_attach(tmp_path):
    from tfgrpo.tools.sql import connect_readonly

    db = tmp_path / "x.db"
    sqlite3.connect(db).execute("CREATE TABLE t(a)").connection.commit()
    with pytest.raises(sqlite3.DatabaseError, match="not authorized"):
        connect_readonly(db).execute(f"ATTACH DATABASE '{tmp_path / 'y.db'}' AS y")
    assert not (tmp_path / "y.db").exists()


@pytest.mark.parametrize("text, right", [
    ("Answer: 13", True), ("Answer: 13.", True), ("Answer: 13\nsure", True), ("Answer: 13.9", False),
    ("Answer: 13/2", False), ("Answer: 13e5", False), ("Answer: 13,000", False), ("Answer: 31", False),
])  # fmt: skip
def test_digit_sums_reads_whole_numbers_only(text, right):
    task = load_task("digit_sums")
    sample = next(s for s in task.dataset if s.answer == 13)
    assert task.rewards[0].fn(sample, text) == float(right)


@pytest.mark.parametrize("heldout", [0, -5, 400])
def test_digit_sums_refuses_a_heldout_outside_its_items(heldout):
    with pytest.raises(UserError, match="heldout must be between 1 and 399"):
        load_task("digit_sums", heldout=heldout)


def test_data_files_with_a_byte_order_mark_read(tmp_path):
    csv = tmp_path / "rows.csv"
    csv.write_bytes("\ufeffproblem,answer\nWhat is 2+2?,4\n".encode("utf-8"))
    js = tmp_path / "rows.json"
    js.write_bytes('\ufeff[{"problem": "Combien font 2+2 ? é", "answer": "4"}]'.encode("utf-8"))
    assert read_rows(csv) == [{"problem": "What is 2+2?", "answer": "4"}]
    assert read_rows(js)[0]["problem"].endswith("é")
