"""Versioned storage of a library directory: ``versions/NNNNNN.json`` (the whole library after
step N, written atomically; the source of truth) and a lock file that serialises commits of
several processes on one directory (``filelock``: fcntl on POSIX, msvcrt on Windows)."""

from __future__ import annotations

import contextlib
import os
import uuid
from pathlib import Path
from typing import Iterator

from filelock import FileLock
from pydantic import ValidationError

from experience_store.edits import LibraryState
from experience_store.errors import StoreError


class VersionStore:
    def __init__(self, path: Path):
        self.dir = path / "versions"
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise StoreError(f"cannot create a library in {path}: {e.strerror or e}") from None
        self._lock = FileLock(str(path / ".lock"))

    def writer_id(self) -> str:
        """This directory's name in a shared commit log, kept in ``writer`` with the directory's
        path. A copy of the directory (its original still there with the same id) gets an id of
        its own, so two copies never adopt each other's commits; a moved directory keeps its id."""
        path = self.dir.parent / "writer"
        here = str(self.dir.parent.resolve())
        with self._lock:
            writer, where = _read_writer(path)
            if writer and where != here:
                original = Path(where) / "writer" if where else None
                if original is not None and original != path and _read_writer(original)[0] == writer:
                    writer = ""  # a copy: the original still uses this id
                else:
                    _write_writer(path, writer, here)  # moved (or written before paths were kept)
            if not writer:
                writer = uuid.uuid4().hex
                _write_writer(path, writer, here)
            return writer

    def steps(self) -> list[int]:
        return sorted(int(p.stem) for p in self.dir.glob("*.json") if p.stem.isdigit())

    def path(self, step: int) -> Path:
        return self.dir / f"{step:06d}.json"

    def load(self, at_step: int | None) -> LibraryState | None:
        """The latest version at or before ``at_step`` (any step: None); None when there is none."""
        steps = [s for s in self.steps() if at_step is None or s <= at_step]
        if not steps:
            return None
        path = self.path(steps[-1])
        try:
            return LibraryState.model_validate_json(path.read_bytes())
        except (ValidationError, OSError) as e:
            reason = e.errors()[0]["msg"] if isinstance(e, ValidationError) else e.strerror or str(e)
            raise StoreError(
                f"{path}: unreadable library version ({reason}); move it aside to continue from the version before it"
            ) from None

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
        before = path.read_bytes() if path.exists() else None  # a version written again (a second import into 0)
        try:
            with open(tmp, "w", encoding="utf-8") as fh:
                fh.write(state.model_dump_json(indent=1))
                fh.flush()
                os.fsync(fh.fileno())  # never a torn version after a crash
            os.replace(tmp, path)
            yield
        except BaseException:
            tmp.unlink(missing_ok=True)
            if before is None:
                path.unlink(missing_ok=True)
            else:  # the version as it was, so disk and index agree again
                restore = path.with_suffix(".restore")
                restore.write_bytes(before)
                os.replace(restore, path)
            raise


def _read_writer(path: Path) -> tuple[str, str]:
    """(id, directory) from a ``writer`` file; ("", "") when it is absent or unreadable."""
    try:
        lines = path.read_text().splitlines()
    except (OSError, UnicodeDecodeError):
        return "", ""
    return (lines[0].strip() if lines else ""), (lines[1].strip() if len(lines) > 1 else "")


def _write_writer(path: Path, writer: str, where: str) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(f"{writer}\n{where}\n")
    os.replace(tmp, path)
