"""The run directory: its layout, typed readers and writers. Both modes write through it and
``report``, ``runs``, ``eval`` and ``pack export`` read through it; no other module knows a
file name of a run.

Layout (see docs/architecture.md)::

    RUN/config.yaml       the resolved config (re-runnable as is)
        status.json       mode, status (running/finished/stopped_by_budget/interrupted), pid, steps
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

Appends are flushed line by line; a line cut short by a kill is skipped on reading (it belongs
to a step that never committed).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Iterable, Literal

import yaml
from pydantic import BaseModel

from tfgrpo.errors import UserError
from tfgrpo.records import StepRecord

Mode = Literal["training_free", "params"]

CONFIG = "config.yaml"
STATUS = "status.json"
STEPS = "steps.jsonl"
ROLLOUTS = "rollouts.jsonl"
GROUPS = "groups.jsonl"
OPS = "ops.jsonl"
LIBRARY = "library"
CACHE = "cache.sqlite"
SELECTION = "selection.json"
LATEST_EVAL = "eval.json"
EVALS = "eval"
CHECKPOINTS = "checkpoints"
FINAL_MODEL = "final"
RECORD_FILES = (ROLLOUTS, GROUPS, OPS)


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

    # -- config
    def write_config(self, cfg: BaseModel) -> None:
        """The resolved settings, so what a resume changed (epochs, budgets, endpoints) is kept."""
        _atomic_write(self.config_path, yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False))

    def read_config(self) -> dict[str, Any]:
        """config.yaml as a mapping ({} when absent or unreadable)."""
        try:
            data = yaml.safe_load(self.config_path.read_text())
        except (OSError, yaml.YAMLError):
            return {}
        return data if isinstance(data, dict) else {}

    # -- JSONL records
    def append(self, name: str, records: Iterable[BaseModel | dict[str, Any]]) -> None:
        lines = [(r.model_dump_json() if isinstance(r, BaseModel) else json.dumps(r, ensure_ascii=False)) + "\n"
                 for r in records]
        if not lines:
            return
        with self.file(name).open("a", encoding="utf-8") as f:
            f.writelines(lines)
            f.flush()

    def read(self, name: str) -> list[dict[str, Any]]:
        p = self.file(name)
        if not p.is_file():
            return []
        rows = []
        for line in p.read_text(encoding="utf-8").splitlines():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                continue  # a line cut short by a kill: it belongs to an uncommitted step
        return rows

    def steps(self) -> list[StepRecord]:
        """Training-free step records (the commit marks)."""
        return [StepRecord.model_validate(r) for r in self.read(STEPS)]

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
            keep = [r for r in self.read(name) if r.get("step", 0) <= step]
            _atomic_write(p, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in keep))

    # -- status
    def write_status(self, mode: Mode, status: str, *, steps_done: int, steps_planned: int,
                     reason: str | None = None) -> None:
        """status.json: running (with the pid, so a crashed session can be told from a live one),
        finished, stopped_by_budget or interrupted, with the reason."""
        data = {"version": 1, "mode": mode, "status": status, "reason": reason, "steps_done": steps_done,
                "steps_planned": steps_planned, "pid": os.getpid()}
        _atomic_write(self.file(STATUS), json.dumps(data, indent=1))

    def read_status(self) -> dict[str, Any] | None:
        try:
            data = json.loads(self.file(STATUS).read_text())
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
            data = json.loads(self.file(SELECTION).read_text())
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
            data = json.loads(self.file(LATEST_EVAL).read_text())
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) else None

    def saved_evals(self) -> dict[str, dict[str, Any]]:
        """Every ``eval/<name>/summary.json``, by name (oldest first)."""
        out: dict[str, dict[str, Any]] = {}
        for p in sorted((self.path / EVALS).glob("*/summary.json"), key=lambda p: p.stat().st_mtime):
            try:
                out[p.parent.name] = json.loads(p.read_text())
            except (OSError, json.JSONDecodeError):
                continue
        return out


def save_eval(directory: Path, summary: dict[str, Any], answers: list[dict[str, Any]]) -> Path:
    """``results.jsonl`` (one line per answer) and ``summary.json`` in ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    _atomic_write(directory / "results.jsonl", "".join(json.dumps(a, ensure_ascii=False) + "\n" for a in answers))
    _atomic_write(directory / "summary.json", json.dumps(summary, indent=1, ensure_ascii=False))
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


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)
