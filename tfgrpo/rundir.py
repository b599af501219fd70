"""The run directory: its layout, typed readers and writers. Both modes write through it and
``report``, ``runs``, ``eval`` and ``pack export`` read through it; no other module knows a
file name of a run.

Layout (see docs/architecture.md)::

    RUN/config.yaml       the resolved config (re-runnable as is)
        status.json       mode, status (running/finished/stopped_by_budget/interrupted), pid, steps
        run.lock          held by the process training in the directory (a second one is refused)
        steps.jsonl       one line per finished step: the step's commit mark
        rollouts.jsonl    training-free: every answer with rewards and advantage
        groups.jsonl      training-free: every group, judged or skipped, with the judge's analysis
        ops.jsonl         training-free: every library op (applied/rejected), judge failures, leaks
        library/          training-free: experience_store versions (one per step) and index
        cache.sqlite      training-free: the response cache
        selection.json    --select best-val: the epoch kept
        eval.json         the newest evaluation saved in the run (what a pack's manifest carries)
        eval/NAME/        summary.json and results.jsonl of each evaluation
        checkpoints/      parameter mode: step-N/ checkpoints
        final/            parameter mode: the trained model
        tensorboard/, wandb/, mlflow.db   --report-to: the trackers' own files (tfgrpo.tracking)

JSONL lines end in "\n" only: U+2028, U+2029 and NEL inside a value are written escaped, and
readers split on "\n" alone, so no text can break a record in two. Appends are flushed line by
line; a last line cut short by a kill (no "\n" yet) is skipped on reading (it belongs to a step
that never committed). Any other line that cannot be read stops the reader with a one-line
error naming the file and line: a resume never deletes what it cannot read. So does a step,
rollout or group record of another version than ``records.RECORD_VERSION`` (a run written by
an older tfgrpo is refused, not converted).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import tempfile
import threading
from pathlib import Path
from typing import Any, Iterable, Iterator, Literal

import yaml
from filelock import FileLock, Timeout
from pydantic import BaseModel, ValidationError

from tfgrpo import trust
from tfgrpo.errors import UserError
from tfgrpo.nesting import json_loads
from tfgrpo.records import StepRecord, version_problem

Mode = Literal["training_free", "params"]

CONFIG = "config.yaml"
STATUS = "status.json"
STEPS = "steps.jsonl"
ROLLOUTS = "rollouts.jsonl"
GROUPS = "groups.jsonl"
OPS = "ops.jsonl"
LIBRARY = "library"
CACHE = "cache.sqlite"
CACHE_FILES = (CACHE, f"{CACHE}-wal", f"{CACHE}-shm")  # with SQLite's write-ahead log and shared memory
SELECTION = "selection.json"
LATEST_EVAL = "eval.json"
EVALS = "eval"
EVAL_SUMMARY = "summary.json"
CHECKPOINTS = "checkpoints"
FINAL_MODEL = "final"
LOCK = "run.lock"
RECORD_FILES = (ROLLOUTS, GROUPS, OPS)
VERSIONED = (STEPS, ROLLOUTS, GROUPS)  # records.RECORD_VERSION; any other version is refused


class Terminated(KeyboardInterrupt):
    """SIGTERM while a run trains: handled as Ctrl-C is (the run is marked interrupted, resumable)."""


class RunDir:
    """The files of one run, in either mode."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    # -- layout
    def file(self, name: str) -> Path:
        return self.path / name

    @property
    def config_path(self) -> Path:
        return self.path / CONFIG

    @property
    def library_path(self) -> Path:
        return self.path / LIBRARY

    @property
    def cache_path(self) -> Path:
        return self.path / CACHE

    @property
    def checkpoints_path(self) -> Path:
        return self.path / CHECKPOINTS

    @property
    def final_model_path(self) -> Path:
        return self.path / FINAL_MODEL

    def exists(self) -> bool:
        return self.config_path.is_file()

    def create(self) -> "RunDir":
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise UserError(f"cannot create run directory {self.path}: {e.strerror or e}") from None
        if not self.path.is_dir():
            raise UserError(f"run directory {self.path} is not a directory")
        return self

    @contextlib.contextmanager
    def locked(self) -> Iterator["RunDir"]:
        """Held while a process trains here; a second process is refused with one line (its
        appends would interleave with the first's)."""
        lock = FileLock(str(self.file(LOCK)), timeout=0)
        try:
            lock.acquire()
        except Timeout:
            pid = self._lock_holder()
            raise UserError(
                f"{self.path} is in use by another tfgrpo process{f' (pid {pid})' if pid else ''}: "
                "wait for it to end or stop it, or choose another --out"
            ) from None
        except OSError as e:
            raise UserError(f"cannot lock run directory {self.path}: {e.strerror or e}") from None
        with contextlib.suppress(OSError):  # the holder's pid, in the lock file itself (status.json's may be old)
            self.file(LOCK).write_text(str(os.getpid()))
        try:
            yield self
        finally:
            lock.release()

    def _lock_holder(self) -> int | None:
        """The pid the lock's holder wrote, if that process is alive (and not this one)."""
        with contextlib.suppress(OSError, ValueError):
            os.kill(pid := int(self.file(LOCK).read_text().strip()), 0)
            return pid if pid != os.getpid() else None
        return None

    def has_steps(self) -> bool:
        """Whether a step has finished here (a run to resume, not a failed start)."""
        return bool(self.read(STEPS))

    def forget_failed_start(self, *, created_dir: bool, created_cache: bool) -> None:
        """After a start that finished no step: remove what it wrote (config, status, lock,
        records, a library with no version, the response cache it created) and the directory it
        created when nothing else is in it (a model server's log, an imported pack stay)."""
        for name in (CONFIG, STATUS, LOCK, *RECORD_FILES, STEPS, *(CACHE_FILES if created_cache else [])):
            with contextlib.suppress(OSError):
                self.file(name).unlink()
        versions = self.library_path / "versions"
        if versions.is_dir() and not any(versions.iterdir()):
            shutil.rmtree(self.library_path, ignore_errors=True)
        if created_dir:
            with contextlib.suppress(OSError):
                self.path.rmdir()

    # -- config
    def write_config(self, cfg: BaseModel) -> None:
        """The resolved settings, so what a resume changed (epochs, budgets, endpoints) is kept;
        signed and recorded as this user's own (``tfgrpo.trust``)."""
        text = trust.signed(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False))
        _atomic_write(self.config_path, text)
        trust.remember(text)

    def config_edited(self) -> bool:
        """Whether config.yaml was changed since tfgrpo wrote it (a hand edit)."""
        return self.config_path.is_file() and trust.edited(self.config_path.read_text(errors="replace"))

    def read_config(self) -> dict[str, Any]:
        """config.yaml as a mapping ({} when absent or unreadable)."""
        try:
            data = yaml.safe_load(self.config_path.read_text())
        except (OSError, yaml.YAMLError):
            return {}
        return data if isinstance(data, dict) else {}

    # -- JSONL records
    def append(self, name: str, records: Iterable[BaseModel | dict[str, Any]]) -> None:
        lines = [jsonl_line(r) for r in records]
        if not lines:
            return
        with self.file(name).open("a", encoding="utf-8") as f:
            f.writelines(lines)
            f.flush()

    def read(self, name: str) -> list[dict[str, Any]]:
        return [row for _, _, row in self.lines(name)]

    def lines(self, name: str) -> list[tuple[int, str, dict[str, Any]]]:
        """(line number, line, record) of every complete line of a JSONL file."""
        p = self.file(name)
        try:
            data = p.read_bytes()
        except FileNotFoundError:
            return []
        except OSError as e:
            raise UserError(f"cannot read {p}: {e.strerror or e}") from None
        # after the last "\n": nothing, or a line cut short by a kill (a step that never committed)
        data = data[: data.rfind(b"\n") + 1]
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as e:
            lineno = data.count(b"\n", 0, e.start) + 1
            raise UserError(
                f"{p}:{lineno}: unreadable record (not UTF-8); fix or remove that line, then retry"
            ) from None
        out = []
        for n, line in enumerate(text.split("\n")[:-1], start=1):
            if not line.strip():
                continue
            try:
                row = json_loads(line)
            except ValueError as e:
                raise UserError(
                    f"{p}:{n}: unreadable record ({str(e)[:80] or type(e).__name__}); "
                    "fix or remove that line, then retry"
                ) from None
            if not isinstance(row, dict):
                raise UserError(f"{p}:{n}: unreadable record (not a JSON object); fix or remove that line, then retry")
            if name in VERSIONED and (problem := version_problem(row)):
                raise UserError(f"{p}:{n}: {problem}")
            out.append((n, line, row))
        return out

    def steps(self) -> list[StepRecord]:
        """Training-free step records (the commit marks)."""
        out = []
        for n, _, row in self.lines(STEPS):
            try:
                out.append(StepRecord.model_validate(row))
            except ValidationError as e:
                where = ".".join(str(x) for x in e.errors()[0]["loc"]) or "record"
                raise UserError(
                    f"{self.file(STEPS)}:{n}: unreadable step record ({where}: {e.errors()[0]['msg'][:80]}); "
                    "fix or remove that line, then retry"
                ) from None
        return out

    def step_rows(self) -> list[dict[str, Any]]:
        """Step lines of either mode, with ``mean_reward`` filled in for parameter mode (which
        writes ``reward_mean``)."""
        rows = self.read(STEPS)
        for r in rows:
            if "mean_reward" not in r and "reward_mean" in r:
                r["mean_reward"] = r["reward_mean"]
        return rows

    def discard_after(self, step: int) -> None:
        """Drop every record an unfinished step wrote (steps after ``step``), and torn lines."""
        for name in (*RECORD_FILES, STEPS):
            p = self.file(name)
            if not p.is_file():
                continue
            keep = [line for _, line, r in self.lines(name) if not isinstance(r.get("step"), int) or r["step"] <= step]
            _atomic_write(p, "".join(_escape_separators(line) + "\n" for line in keep))

    # -- status
    def write_status(
        self, mode: Mode, status: str, *, steps_done: int, steps_planned: int, reason: str | None = None
    ) -> None:
        """status.json: running (with the pid, so a crashed session can be told from a live one),
        finished, stopped_by_budget or interrupted, with the reason."""
        data = {
            "version": 1,
            "mode": mode,
            "status": status,
            "reason": reason,
            "steps_done": steps_done,
            "steps_planned": steps_planned,
            "pid": os.getpid(),
        }
        _atomic_write(self.file(STATUS), json.dumps(data, indent=1))

    @contextlib.contextmanager
    def interrupts_marked(self, mode: Mode) -> Iterator[None]:
        """While the block runs, SIGTERM raises :class:`Terminated` (where nobody else handles it,
        in the main thread) as Ctrl-C raises KeyboardInterrupt; either marks the run
        ``interrupted`` in status.json before it propagates."""
        previous = None
        if threading.current_thread() is threading.main_thread() and signal.getsignal(signal.SIGTERM) == signal.SIG_DFL:
            previous = signal.signal(signal.SIGTERM, _raise_terminated)
        try:
            yield
        except KeyboardInterrupt as e:
            if self.path.is_dir():  # not when stopped before the run directory existed
                planned = (self.read_status() or {}).get("steps_planned")
                self.write_status(
                    mode,
                    "interrupted",
                    reason="SIGTERM" if isinstance(e, Terminated) else "Ctrl-C",
                    steps_done=len(self.step_rows()),
                    steps_planned=planned if isinstance(planned, int) else 0,
                )
            raise
        finally:
            if previous is not None:
                signal.signal(signal.SIGTERM, previous)

    def read_status(self) -> dict[str, Any] | None:
        try:
            data = json_loads(self.file(STATUS).read_text())
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) else None

    @property
    def mode(self) -> Mode:
        status = self.read_status() or {}
        if status.get("mode") in ("training_free", "params"):
            return status["mode"]
        return "params" if (self.path / CHECKPOINTS).is_dir() or (self.path / FINAL_MODEL).is_dir() else "training_free"

    # -- best-val selection
    def write_selection(self, selection: dict[str, Any]) -> None:
        _atomic_write(self.file(SELECTION), json.dumps(selection, indent=1))

    def read_selection(self) -> dict[str, Any] | None:
        try:
            data = json_loads(self.file(SELECTION).read_text())
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) else None

    def selected_step(self) -> int | None:
        """The library step a ``--select best-val`` run kept, or None (then the latest counts)."""
        try:
            return int((self.read_selection() or {})["chosen"]["step"])
        except (KeyError, TypeError, ValueError):
            return None

    # -- evaluations
    def eval_dir(self, name: str) -> Path:
        return self.path / EVALS / name

    def write_latest_eval(self, summary: dict[str, Any]) -> None:
        _atomic_write(self.file(LATEST_EVAL), json.dumps(summary, indent=1))

    def read_latest_eval(self) -> dict[str, Any] | None:
        try:
            data = json_loads(self.file(LATEST_EVAL).read_text())
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) else None

    def eval_summaries(self) -> list[Path]:
        """Every saved evaluation's ``eval/<name>/summary.json``, oldest first (the reader names
        one it cannot read)."""
        return sorted((self.path / EVALS).glob(f"*/{EVAL_SUMMARY}"), key=lambda p: p.stat().st_mtime)


def check_writable(directory: Path, advice: str) -> None:
    """UserError (with ``advice``) unless files can be made in ``directory``, or in its nearest
    existing parent when it is not there yet: asked before hours of work, not after."""
    probe = next(p for p in (directory, *directory.parents) if p.exists() or p == p.parent)
    try:
        tempfile.TemporaryFile(dir=probe).close()  # NotADirectoryError for a file
    except OSError as e:
        raise UserError(f"cannot save results in {directory} ({probe}: {e.strerror or e}); {advice}") from None


def save_eval(directory: Path, summary: dict[str, Any], answers: list[dict[str, Any]]) -> Path:
    """``results.jsonl`` (one line per answer) and ``summary.json`` (its ``saved`` key naming
    where) in ``directory``; when that fails (a disk filled meanwhile), in a new temporary folder
    instead. Returns where they went: the caller says so when it is not ``directory``."""
    try:
        return _write_eval(directory, summary, answers)
    except OSError:
        return _write_eval(Path(tempfile.mkdtemp(prefix="tfgrpo-eval-")), summary, answers)


def _write_eval(directory: Path, summary: dict[str, Any], answers: list[dict[str, Any]]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    summary["saved"] = str(directory)
    _atomic_write(directory / "results.jsonl", "".join(jsonl_line(a) for a in answers))
    _atomic_write(directory / EVAL_SUMMARY, json.dumps(summary, indent=1, ensure_ascii=False))
    return directory


def library_dir(path: str | Path) -> Path:
    """A run directory (holding library/) or a library directory (holding versions/)."""
    p = Path(path)
    if (p / LIBRARY / "versions").is_dir():
        return p / LIBRARY
    if (p / "versions").is_dir():
        return p
    raise UserError(f"no experience library in {p} (expected a run directory or its library/ folder)")


def run_of_library(lib_dir: Path) -> RunDir | None:
    """The run a library directory belongs to, if it is a run's ``library/``."""
    if lib_dir.name == LIBRARY and (lib_dir.parent / CONFIG).is_file():
        return RunDir(lib_dir.parent)
    return None


def _raise_terminated(signum: int, frame: Any) -> None:
    raise Terminated()


_SEPARATORS = {"\u2028": "\\u2028", "\u2029": "\\u2029", "\x85": "\\u0085"}


def _escape_separators(line: str) -> str:
    """JSON text with U+2028, U+2029 and NEL escaped (raw, they can only be inside strings)."""
    for raw, escaped in _SEPARATORS.items():
        line = line.replace(raw, escaped)
    return line


def jsonl_line(record: BaseModel | dict[str, Any]) -> str:
    """One JSONL line ending in "\n", with nothing inside it that any reader takes for a line break
    (control characters are escaped by JSON itself)."""
    text = record.model_dump_json() if isinstance(record, BaseModel) else json.dumps(record, ensure_ascii=False)
    return _escape_separators(text) + "\n"


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    try:
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(path)
    except BaseException:  # e.g. a full disk: no half-written file is left beside the old one
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
