"""Tasks: a dataset of samples plus the rewards that score answers to them.

A task is a plain function decorated with ``@task`` that returns a :class:`Task`.
The registry keeps the name and the arguments, so a run can rebuild its task from
its own ``config.yaml``. Built-in tasks live in the top-level ``tasks/`` folder (bundled
into the wheel); a user task is named by path, ``my_tasks.py:name``.
"""

from __future__ import annotations

import functools
import importlib.util
import inspect
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from pydantic import BaseModel, ConfigDict, Field, model_validator

from tfgrpo.errors import UserError
from tfgrpo.nesting import json_loads
from tfgrpo.resources import builtin_dir, jsonl_rows
from tfgrpo.rewards import Reward


class Sample(BaseModel):
    """One query of a task. ``prompt`` or ``messages`` holds what the agent sees. An unknown
    field (``input=``, ``target=``) is an error, never a silently empty prompt."""

    model_config = ConfigDict(extra="forbid")

    id: str
    prompt: str | None = None
    messages: list[dict[str, Any]] | None = None
    answer: Any = None
    metadata: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _known_fields(cls, data: Any) -> Any:
        if isinstance(data, dict):
            unknown = sorted(str(k) for k in data if k not in cls.model_fields)
            if unknown:
                raise UserError(
                    f"Sample got unknown field(s) {', '.join(unknown)}; accepted: {', '.join(cls.model_fields)}"
                )
        return data

    def user_text(self) -> str:
        if self.prompt is not None:
            return self.prompt
        if self.messages:
            return "\n".join(str(m.get("content", "")) for m in self.messages if m.get("role") == "user")
        return ""


@dataclass
class Task:
    """What a run learns on: samples, rewards, and how the agent is prompted.

    ``pass_threshold``: a sample counts as solved (Pass@k, Mean@k) when its combined
    reward (weighted mean of the rewards) reaches this value.
    ``min_reward``/``max_reward`` bound the combined reward; groups whose mean sits
    strictly between them carry a contrast for the judge.
    """

    dataset: list[Sample]
    rewards: list[Reward]
    template: str = "agent.j2"
    instructions: str = ""
    eval_dataset: list[Sample] | None = None
    tools: list[Any] | None = None
    agent: Any = None  # the user's own agent: async def agent(sample, llm) -> str (tfgrpo.training_free.external)
    pass_threshold: float = 1.0
    min_reward: float = 0.0
    max_reward: float = 1.0
    max_tokens: int | None = None
    name: str = ""
    args: dict[str, Any] = field(default_factory=dict)

    @property
    def weights(self) -> list[float]:
        return [r.weight for r in self.rewards]

    def eval_samples(self) -> list[Sample]:
        return self.eval_dataset if self.eval_dataset is not None else self.dataset


_REGISTRY: dict[str, Callable[..., Task]] = {}


def task(fn: Callable[..., Task] | None = None, *, name: str | None = None):
    """Register a task factory: ``@task`` or ``@task(name="x")``."""

    def wrap(f: Callable[..., Task]) -> Callable[..., Task]:
        task_name = name or f.__name__

        def build(**kwargs: Any) -> Task:
            sig = inspect.signature(f)
            try:
                sig.bind(**kwargs)
            except TypeError as e:
                raise UserError(f"task '{task_name}': bad arguments {kwargs}: {e}") from None
            try:
                t = f(**kwargs)
            except (UserError, KeyboardInterrupt):
                raise
            except Exception as e:  # a task's code failing on its data is the task's author's to fix
                raise UserError(f"task '{task_name}' failed: {type(e).__name__}: {str(e)[:300]}") from None
            if not isinstance(t, Task):
                raise UserError(f"task '{task_name}' must return a Task, got {type(t).__name__}")
            t.name = task_name
            t.args = dict(kwargs)
            if not t.dataset:
                raise UserError(f"task '{task_name}' has an empty dataset")
            for part in (t.dataset, t.eval_dataset or []):
                _check_ids(task_name, part)
            return t

        build.__wrapped__ = f  # type: ignore[attr-defined]
        build.__doc__ = f.__doc__
        build.task_name = task_name  # type: ignore[attr-defined]
        _REGISTRY[task_name] = build
        return build

    return wrap(fn) if fn is not None else wrap


def _check_ids(task_name: str, samples: list[Sample]) -> None:
    """Sample ids name a problem in the cache, the split and every record: non-empty and unique."""
    seen: set[str] = set()
    for s in samples:
        if not s.id.strip():
            raise UserError(f"task '{task_name}': a sample has an empty id")
        if s.id in seen:
            raise UserError(f"task '{task_name}': sample id {s.id!r} appears twice; ids must be unique")
        seen.add(s.id)


def _load_module(path: Path, module_name: str):
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise UserError(f"cannot import task file {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as e:  # a user's file failing to import is their error to fix
        sys.modules.pop(module_name, None)
        raise UserError(f"task file {path} failed to import: {type(e).__name__}: {e}") from None
    return module


def builtin_task_names() -> list[str]:
    """Names of the built-in tasks, read from their ``@task`` decorators without importing them
    (cheap enough for ``--help``)."""
    import ast

    names = []
    for path in sorted(builtin_dir("tasks").glob("*.py")):
        if path.name.startswith("_"):
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.FunctionDef):
                continue
            for dec in node.decorator_list:
                if isinstance(dec, ast.Name) and dec.id == "task":
                    names.append(node.name)
                elif isinstance(dec, ast.Call) and getattr(dec.func, "id", None) == "task":
                    named = [
                        k.value.value for k in dec.keywords if k.arg == "name" and isinstance(k.value, ast.Constant)
                    ]
                    names.append(named[0] if named else node.name)
    return sorted(names)


def available_tasks() -> list[str]:
    _load_builtins()
    return sorted(_REGISTRY)


def _load_builtins() -> None:
    folder = builtin_dir("tasks")
    for path in sorted(folder.glob("*.py")):
        if path.name.startswith("_"):
            continue
        mod_name = f"tfgrpo_builtin_tasks.{path.stem}"
        if mod_name not in sys.modules:
            _load_module(path, mod_name)


def load_task(spec: str, **kwargs: Any) -> Task:
    """Build a task from a registered name (``demo``) or a path (``file.py:name``)."""
    if ":" in spec and spec.split(":", 1)[0].endswith(".py"):
        file, name = spec.rsplit(":", 1)
        path = Path(file).expanduser()
        if not path.is_file():
            raise UserError(f"task file not found: {path}")
        before = set(_REGISTRY)
        module = _load_module(path.resolve(), f"tfgrpo_user_task_{abs(hash(str(path.resolve())))}")
        if name in _REGISTRY and (name not in before or getattr(module, name, None) is _REGISTRY[name]):
            return _REGISTRY[name](**kwargs)
        fn = getattr(module, name, None)
        if fn is None:
            raise UserError(f"task '{name}' not found in {path}")
        if not hasattr(fn, "task_name"):
            raise UserError(f"{path}:{name} is not decorated with @task")
        return fn(**kwargs)
    _load_builtins()
    if spec not in _REGISTRY:
        raise UserError(f"unknown task '{spec}' (built-in: {', '.join(sorted(_REGISTRY))}; or use file.py:name)")
    return _REGISTRY[spec](**kwargs)


def _file_errors(read: Callable[[str | Path], list[Any]]) -> Callable[[str | Path], list[dict[str, Any]]]:
    """Every way a data file can be unreadable (not UTF-8, nested too deeply, an integer past
    Python's digit limit, a damaged Parquet file) is one error naming the file; rows are objects."""

    @functools.wraps(read)
    def checked(path: str | Path) -> list[dict[str, Any]]:
        p = Path(path).expanduser()
        try:
            rows = read(path)
        except (UserError, MemoryError):
            raise
        except UnicodeDecodeError as e:
            raise UserError(f"{p}: not UTF-8 text (byte {e.start})") from None
        except Exception as e:  # noqa: BLE001 - a parser's error on the user's file (json, pyarrow, csv)
            first = str(e).strip().splitlines()[0][:300] if str(e).strip() else type(e).__name__
            raise UserError(f"{p}: cannot read: {first}") from None
        for n, row in enumerate(rows, 1):
            if not isinstance(row, dict):
                raise UserError(f"{p}: row {n} is not an object")
        return rows

    return checked


@_file_errors
def read_rows(path: str | Path) -> list[dict[str, Any]]:
    """Rows of a local JSONL, JSON, CSV (a header row; values are text) or Parquet file; a bad
    line is an error naming it."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise UserError(f"data file not found: {p}")
    if p.suffix == ".parquet":
        try:
            import pyarrow.parquet as pq
        except ImportError:
            raise UserError("reading Parquet needs pyarrow: pip install pyarrow") from None
        return pq.read_table(p).to_pylist()
    if p.suffix == ".csv":
        import csv

        with p.open(newline="", encoding="utf-8-sig") as fh:  # -sig: the byte-order mark spreadsheets write
            return [dict(row) for row in csv.DictReader(fh)]
    if p.suffix == ".json":
        text = p.read_text(encoding="utf-8-sig")
        try:
            data = json_loads(text)
        except ValueError as e:  # not JSON, nested too deeply, an integer past Python's digit limit
            raise UserError(f"{p}: invalid JSON: {e}") from None
        if not isinstance(data, list):
            raise UserError(f"{p}: expected a JSON list of rows")
        return data
    try:
        return jsonl_rows(p)
    except ValueError as e:
        raise UserError(str(e)) from None
