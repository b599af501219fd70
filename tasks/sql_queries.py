"""``sql``: questions over a small shop database, answered with the read-only ``sql`` tool.
The final answer holds a SQL query in a ```sql block; it is run read-only and its result set
(as a multiset of rows) compared with the reference query's."""

from __future__ import annotations

import asyncio

import hashlib
import re
import sqlite3
import tempfile
from collections import Counter
from pathlib import Path

from tfgrpo.rewards import reward
from tfgrpo.task_registry import Sample, Task, read_rows, task
from tfgrpo.tools import run_query, sql_tool

HERE = Path(__file__).resolve().parent / "data"
INSTRUCTIONS = (
    "Answer the question about the shop database. You have a `sql` tool that runs SQLite queries. "
    "End with your final query in a ```sql code block."
)
_SQL_BLOCK = re.compile(r"```sql\s*(.*?)```", re.DOTALL | re.IGNORECASE)


def database() -> Path:
    """The shop database, built once from sql_shop.sql into the temp dir (named by its hash)."""
    script = (HERE / "sql_shop.sql").read_text()
    path = Path(tempfile.gettempdir()) / f"tfgrpo-sql-shop-{hashlib.sha256(script.encode()).hexdigest()[:12]}.db"
    if not path.is_file():
        tmp = path.with_suffix(f".{id(script)}.tmp")
        with sqlite3.connect(tmp) as db:
            db.executescript(script)
        db.close()
        tmp.replace(path)
    return path


def result_set(query: str) -> Counter | None:
    try:
        _, rows = run_query(database(), query, max_rows=10_000)
    except sqlite3.Error:
        return None
    return Counter(tuple(round(v, 6) if isinstance(v, float) else v for v in r) for r in rows)


@reward
async def same_result(sample: Sample, completion: str) -> float:
    """1.0 when the last ```sql block returns the same rows as the reference query (both run in
    a worker thread: a slow query must not stall the other rollouts)."""
    blocks = _SQL_BLOCK.findall(completion or "")
    if not blocks:
        return 0.0

    def compare() -> float:
        got = result_set(blocks[-1].strip())
        return 1.0 if got is not None and got == result_set(str(sample.answer)) else 0.0

    return await asyncio.to_thread(compare)


def samples(split: str) -> list[Sample]:
    return [
        Sample(id=r["id"], prompt=r["question"], answer=r["sql"])
        for r in read_rows(HERE / "sql.jsonl")
        if r["split"] == split
    ]


@task
def sql() -> Task:
    """Questions over the shop database with the sql tool: 6 train, 6 test."""
    return Task(
        dataset=samples("train"),
        eval_dataset=samples("test"),
        rewards=[same_result],
        instructions=INSTRUCTIONS,
        tools=[sql_tool(database())],
        max_tokens=512,
    )
