"""Which run directories are the user's own, and what a run's config.yaml may still be trusted for.

A run directory someone hands you is data: its ``config.yaml`` could name their server as the
endpoint (and any environment variable as the "API key" sent there) or a Python file as the task.
So ``tfgrpo eval`` takes endpoints, key variables, task code and a library's embedder from a run
directory only when it is the user's own: tfgrpo wrote its current ``config.yaml`` on this
machine. Every ``config.yaml`` tfgrpo writes has its SHA-256 appended to ``own-runs`` in the
state folder (``$TFGRPO_STATE``, else ``$XDG_STATE_HOME/tfgrpo``, else ``~/.local/state/tfgrpo``);
a file with a digest not listed there was made elsewhere or edited since (``--trust-run``
accepts it anyway). Like direnv's allow list: the proof lives outside the directory it vouches for.

The same header line in ``config.yaml`` (:func:`signed`) lets a resume tell a hand edit from the
file the run wrote: a resumed run keeps its settings, whether changed by flag or by editor.
"""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path

log = logging.getLogger(__name__)

STATE_ENV = "TFGRPO_STATE"
OWN_RUNS = "own-runs"
HEADER = "# written by tfgrpo; sha256 of the lines below: "
_warned: set[str] = set()


def state_dir() -> Path:
    if os.environ.get(STATE_ENV):
        return Path(os.environ[STATE_ENV]).expanduser()
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base).expanduser() / "tfgrpo"


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def signed(body: str) -> str:
    """``body`` (YAML) with a first line holding its digest, as tfgrpo writes config.yaml."""
    return f"{HEADER}{digest(body.encode())}\n{body}"


def edited(text: str) -> bool:
    """Whether a config.yaml that tfgrpo signed was changed since (an unsigned file: False)."""
    head, _, body = text.partition("\n")
    if not head.startswith(HEADER):
        return False
    return head[len(HEADER) :].strip() != digest(body.encode())


def remember(written: str) -> None:
    """Record a config.yaml tfgrpo just wrote (its text, as :func:`signed` made it) as this
    user's own. A state folder that cannot be written costs only the convenience: logged once,
    the run goes on."""
    where = state_dir() / OWN_RUNS
    line = digest(written.encode()) + "\n"
    try:
        where.parent.mkdir(parents=True, exist_ok=True)
        with where.open("a", encoding="ascii") as f:
            f.write(line)
    except OSError as e:
        if str(where) not in _warned:
            _warned.add(str(where))
            log.warning(
                "cannot record this run as yours in %s (%s): evaluating it will need --trust-run",
                where,
                e.strerror or e,
            )


def is_own(config_file: Path) -> bool:
    """Whether tfgrpo wrote ``config_file`` as it is now, on this machine, for this user."""
    try:
        mine = digest(config_file.read_bytes())
        with (state_dir() / OWN_RUNS).open(encoding="ascii", errors="replace") as f:
            return any(line.strip() == mine for line in f)
    except OSError:
        return False
