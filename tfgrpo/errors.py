"""Errors a user can cause and fix: the CLI prints them as one line and exits 2."""

from __future__ import annotations

import errno

_SQLITE_NO_SPACE = (13, 4874)  # SQLITE_FULL; SQLITE_IOERR_SHMSIZE (its shared-memory file could not grow)
_NO_SPACE_TEXT = ("No space left on device", "database or disk is full")  # also as Chroma wraps SQLite's


class UserError(Exception):
    """Bad config, task file, data row, pack or endpoint: the message says what to fix."""


class EndpointError(UserError):
    """A model endpoint stayed unreachable or kept failing after all retries."""


def disk_full(e: BaseException) -> str | None:
    """``no space left on device (...)`` when ``e``, or an error behind it, is a write that found
    the disk full: ENOSPC or EDQUOT from any file, SQLite's full database (the response cache,
    MLflow's store) or Chroma's error wrapping it; None for any other error. A full disk is the
    user's to fix, so it is one line, never a traceback; the caller adds what to do next."""
    seen: set[int] = set()
    cause: BaseException | None = e
    while cause is not None and id(cause) not in seen:
        seen.add(id(cause))
        if isinstance(cause, OSError) and cause.errno in (errno.ENOSPC, errno.EDQUOT):
            where = f" (writing {cause.filename})" if cause.filename else ""
            return f"{(cause.strerror or 'no space left on device').lower()}{where}"
        text = (str(cause).splitlines() or [""])[0][:200]
        if getattr(cause, "sqlite_errorcode", None) in _SQLITE_NO_SPACE or any(t in text for t in _NO_SPACE_TEXT):
            return f"no space left on device ({text})"
        cause = cause.__cause__ or cause.__context__
    return None
