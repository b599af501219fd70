"""The ``sql`` tool: queries against a SQLite database opened read-only."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

from tfgrpo.errors import UserError
from tfgrpo.tools.base import Tool, tool


def connect_readonly(path: str | Path) -> sqlite3.Connection:
    """A read-only connection (``mode=ro`` and ``query_only``): no statement can change the file."""
    p = Path(path).expanduser().resolve()
    if not p.is_file():
        raise UserError(f"SQLite database not found: {p}")
    db = sqlite3.connect(f"file:{p}?mode=ro", uri=True, check_same_thread=False)
    db.execute("PRAGMA query_only = ON")
    db.set_authorizer(_no_attach)  # ATTACH would create a file wherever the query names
    return db


def _no_attach(action: int, *_: object) -> int:
    return sqlite3.SQLITE_DENY if action in (sqlite3.SQLITE_ATTACH, sqlite3.SQLITE_DETACH) else sqlite3.SQLITE_OK


def run_query(
    path: str | Path, query: str, *, max_rows: int | None = None, timeout_s: float = 5.0
) -> tuple[list[str], list[tuple]]:
    """(column names, rows) of ``query``; a query running past ``timeout_s`` is interrupted."""
    db = connect_readonly(path)
    deadline = time.monotonic() + timeout_s
    db.set_progress_handler(lambda: 1 if time.monotonic() > deadline else 0, 10_000)
    try:
        cur = db.execute(query)
        rows = cur.fetchmany(max_rows) if max_rows else cur.fetchall()
        return [d[0] for d in cur.description or []], rows
    finally:
        db.close()


def format_table(columns: list[str], rows: list[tuple], max_rows: int) -> str:
    if not columns:
        return "(the statement returned no result set)"
    lines = [" | ".join(columns)] + [" | ".join("NULL" if v is None else str(v) for v in r) for r in rows[:max_rows]]
    more = f"\n[only the first {max_rows} rows are shown]" if len(rows) > max_rows else ""
    return "\n".join(lines) + f"\n({min(len(rows), max_rows)} row{'s' if len(rows) != 1 else ''})" + more


def sql_tool(path: str | Path, *, max_rows: int = 50, timeout_s: float = 5.0) -> Tool:
    """A ``sql`` tool over the database at ``path`` (checked now, opened read-only per call)."""
    connect_readonly(path).close()

    def sql(query: str) -> str:
        """Run one SQLite query against the database (read-only) and return the result table.
        `SELECT name, sql FROM sqlite_master` lists the tables and their columns.

        Args:
            query: One SQLite statement.
        """
        try:
            columns, rows = run_query(path, query, max_rows=max_rows + 1, timeout_s=timeout_s)
        except sqlite3.Error as e:
            return f"SQL error: {e}"
        return format_table(columns, rows, max_rows)

    return tool(sql, timeout_s=timeout_s + 5)
