"""SQLite response cache: a resumed or repeated run pays no call twice.

Keyed by the canonical request (model, messages, sampling parameters, response format) and
the sample index within the group, so sample 3 of a group of 5 is one row. Each row is
committed as soon as it arrives, so a run killed mid-step keeps every finished call. A full
disk is the ``OSError`` of one (ENOSPC, naming the cache's file), not SQLite's own error.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import sqlite3
import threading
from pathlib import Path
from typing import Any, Iterator

from tfgrpo.errors import disk_full


def request_key(request: dict[str, Any]) -> str:
    """sha256 of the request in canonical JSON (sorted keys, no whitespace)."""
    canon = json.dumps(request, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return hashlib.sha256(canon.encode()).hexdigest()


class ResponseCache:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        with self._no_space():
            self._db = sqlite3.connect(str(self.path), check_same_thread=False, isolation_level=None)
        try:
            with self._no_space():
                self._db.execute("PRAGMA journal_mode=WAL")
                self._db.execute("PRAGMA synchronous=NORMAL")
                self._db.execute(
                    "CREATE TABLE IF NOT EXISTS responses (key TEXT NOT NULL, idx INTEGER NOT NULL, "
                    "payload TEXT NOT NULL, PRIMARY KEY (key, idx))"
                )
        except BaseException:
            self._db.close()  # closed, so a failed start can remove the file and its -wal and -shm
            raise

    @contextlib.contextmanager
    def _no_space(self) -> Iterator[None]:
        """SQLite's "database or disk is full" as the OSError a full disk is everywhere else."""
        try:
            yield
        except sqlite3.Error as e:
            if disk_full(e) is None:
                raise
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(self.path)) from e

    def get_many(self, key: str, indices: list[int]) -> dict[int, dict[str, Any]]:
        if not indices:
            return {}
        marks = ",".join("?" * len(indices))
        with self._lock, self._no_space():
            rows = self._db.execute(
                f"SELECT idx, payload FROM responses WHERE key = ? AND idx IN ({marks})", [key, *indices]
            ).fetchall()
        return {idx: json.loads(payload) for idx, payload in rows}

    def put(self, key: str, idx: int, payload: dict[str, Any]) -> None:
        with self._lock, self._no_space():
            self._db.execute(
                "INSERT OR REPLACE INTO responses (key, idx, payload) VALUES (?, ?, ?)",
                (key, idx, json.dumps(payload, ensure_ascii=False)),
            )

    def __len__(self) -> int:
        with self._lock:
            return self._db.execute("SELECT COUNT(*) FROM responses").fetchone()[0]

    def close(self) -> None:
        with self._lock:
            self._db.close()
