"""Versioned storage of a library directory: ``versions/NNNNNN.json`` (the whole library after
step N, written atomically; the source of truth) and a lock file that serialises commits of
several processes on one directory (``filelock``: fcntl on POSIX, msvcrt on Windows)."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Iterator

from filelock import FileLock

from experience_store.edits import LibraryState


class VersionStore:
    def __init__(self, path: Path):
        self.dir = path / "versions"
        self.dir.mkdir(parents=True, exist_ok=True)
        self._lock = FileLock(str(path / ".lock"))

    def steps(self) -> list[int]:
        return sorted(int(p.stem) for p in self.dir.glob("*.json") if p.stem.isdigit())

    def path(self, step: int) -> Path:
        return self.dir / f"{step:06d}.json"

    def load(self, at_step: int | None) -> LibraryState | None:
        """The latest version at or before ``at_step`` (any step: None); None when there is none."""
        steps = [s for s in self.steps() if at_step is None or s <= at_step]
        return LibraryState.model_validate_json(self.path(steps[-1]).read_text()) if steps else None

    def discard_after(self, step: int) -> None:
        for s in self.steps():
            if s > step:
                self.path(s).unlink()

    def locked(self) -> FileLock:
        """An exclusive lock on the directory for the length of a commit."""
        return self._lock

    @contextlib.contextmanager
    def writing(self, state: LibraryState, step: int) -> Iterator[None]:
        """Write version ``step``; when the body (e.g. the index update) raises, take it back."""
        path = self.path(step)
        tmp = path.with_suffix(".tmp")
        existed = path.exists()
        try:
            tmp.write_text(state.model_dump_json(indent=1))
            os.replace(tmp, path)
            yield
        except BaseException:
            tmp.unlink(missing_ok=True)
            if not existed:
                path.unlink(missing_ok=True)
            raise
