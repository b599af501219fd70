"""Where ``tfgrpo eval`` takes its settings from: the run that learned the library (its
``config.yaml``) or a pack's manifest. Task, data, split, model and injection follow the
source unless the user overrides them; a task other than the library's is refused.

A source is data unless it is the user's own run (``tfgrpo.trust``) or ``--trust-run`` says so:
from a run made elsewhere, or a pack, only the model's name, a registered task's name, data,
split and injection are taken. Its endpoint and key variable, a task given as a Python file, and
an embedder other than the offline ones are never used: eval asks for the user's own instead.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from experience_store import Library, Pack, PackError, spec_label
from experience_store.embedding import LOCAL_KINDS

from tfgrpo import trust
from tfgrpo.errors import UserError
from tfgrpo.rundir import RunDir, library_dir, run_of_library
from tfgrpo.training_free.config import (
    AgentConfig,
    EvalConfig,
    LibraryConfig,
    PolicyConfig,
    SplitConfig,
    load_run_config,
)


@dataclass
class Source:
    """What an evaluated library was learned with; ``kind`` is run, library (a bare folder),
    pack or none (baseline only)."""

    kind: str
    where: Path | None = None
    library: Library | Pack | None = None
    run: RunDir | None = None
    task: str | None = None
    data: str | None = None
    task_args: dict[str, Any] = field(default_factory=dict)
    split: SplitConfig = field(default_factory=SplitConfig)
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    injection: LibraryConfig = field(default_factory=LibraryConfig)
    agent: AgentConfig = field(default_factory=AgentConfig)
    max_tokens: int | None = None  # the run's cap on completion tokens per answer
    foreign_task: str | None = None  # a task file named by a source that is not the user's own
    foreign_endpoint: str | None = None  # the endpoint it names (not used)

    @property
    def size(self) -> int:
        if self.library is None:
            return 0
        return len(self.library.active) if isinstance(self.library, Pack) else len(self.library)

    @property
    def step(self) -> int | None:
        if isinstance(self.library, Library):
            return self.library.state.step
        return self.library.manifest.source_step if isinstance(self.library, Pack) else None

    def lessons(self) -> list[Any]:
        if self.library is None:
            return []
        return self.library.experiences


def is_pack(path: Path) -> bool:
    return (path.is_file() and path.suffix == ".zip") or (path / "manifest.json").is_file()


def open_source(library: str | Path | None, step: int | None, trust_run: bool = False) -> Source:
    """The library to evaluate and the settings it was learned with (see the module's note on
    what is taken from a source that is not the user's own)."""
    if library is None:
        return Source(kind="none")
    where = Path(library)
    if is_pack(where):
        if step is not None:
            raise UserError("--step picks a version of a run's library; a pack holds one version")
        pack = Pack.load(where)
        try:  # retrieval embeds each query with the pack's embedder
            pack.check_embedding(pack.injection_settings())
        except PackError as e:
            raise UserError(
                f"{e}; to evaluate it, import it first: tfgrpo pack import {where} --into DIR "
                "--trust-embedding (or use a re-embedded copy)"
            ) from None
        m = pack.manifest
        return Source(
            kind="pack",
            where=where,
            library=pack,
            task=m.task,
            foreign_task=m.task if m.task and is_task_file(m.task) and not trust_run else None,
            policy=PolicyConfig(model=m.policy_model) if m.policy_model else PolicyConfig(),
            injection=LibraryConfig(injection=pack.injection_settings()),
        )
    lib_dir = library_dir(where)
    run = run_of_library(lib_dir)
    if step is None and run is not None:
        step = run.selected_step()
    lib = library_at(lib_dir, step, where)
    if run is None:
        _check_embedder(lib, LibraryConfig(), where, trust_run)
        return Source(kind="library", where=where, library=lib)
    cfg = load_run_config(run.path)
    own = trust_run or trust.is_own(run.config_path)
    _check_embedder(lib, cfg.library, where, own)
    endpoint = cfg.policy.api_base or (cfg.policy.api_key_env and f"key from ${cfg.policy.api_key_env}")
    return Source(
        kind="run",
        where=where,
        library=lib,
        run=run,
        task=cfg.task,
        data=cfg.data,
        task_args=cfg.task_args,
        split=cfg.split,
        policy=cfg.policy if own else PolicyConfig(model=cfg.policy.model),
        injection=cfg.library,
        agent=cfg.sampling.agent,
        max_tokens=cfg.sampling.max_tokens,
        foreign_task=None if own or not is_task_file(cfg.task) else cfg.task,
        foreign_endpoint=None if own else endpoint or None,
    )


def is_task_file(spec: str) -> bool:
    """``path/tasks.py:name`` (code to import) rather than a registered task's name."""
    head, sep, _ = spec.rpartition(":")
    return bool(sep) and head.endswith(".py")


def _check_embedder(lib: Library, settings: LibraryConfig, where: Path, trusted: bool) -> None:
    """A library made elsewhere is retrieved from with an offline embedder only: another one
    (``litellm:``, ``st:``) sends the queries where the library's author chose."""
    spec = lib.state.embedding
    if trusted or settings.injection.mode == "all" or spec.get("name") in LOCAL_KINDS:
        return
    raise UserError(
        f"the library in {where} was not made here and names the embedding {spec_label(spec)}, which would send "
        "your queries to a model its author chose: export it as a pack and import it with --embedding lexical, "
        "or pass --trust-run"
    )


def library_at(lib_dir: Path, step: int | None, where: str | Path) -> Library:
    lib = Library(lib_dir, at_step=step)
    have = lib.versions()
    if step is not None and step not in have:
        span = f"steps {have[0]} to {have[-1]}" if have else "no versions"
        raise UserError(f"no library version for step {step} in {where} (it has {span})")
    return lib


def task_key(spec: str) -> str:
    """``demo`` -> demo; ``path/tasks.py:mine`` -> mine (a run records the spec it was given)."""
    return spec.rpartition(":")[2] if is_task_file(spec) else spec


@dataclass
class Resolved:
    task: str
    data: str | None
    task_args: dict[str, Any]
    split: SplitConfig
    policy: PolicyConfig


def resolve(cfg: EvalConfig, src: Source) -> Resolved:
    """The eval's settings: each one given by the user, else the source's. A different task
    than the library's is an error, whatever the library holds (even nothing)."""
    task = cfg.task or src.task
    if task is None:
        raise UserError("which task? pass --task NAME (the library records none)")
    if not cfg.task and src.foreign_task:
        raise UserError(
            f"{src.where} was not made here and names its task as code ({src.foreign_task}), which eval does "
            f"not run: pass your own --task (a task name, or your file.py:{task_key(src.foreign_task)}), "
            "or --trust-run"
        )
    if cfg.policy.model is None and src.foreign_endpoint:
        raise UserError(
            f"{src.where} was not made here and names its own endpoint ({src.foreign_endpoint}), which eval "
            "does not use: pass your own --model (and --api-base), or --trust-run"
        )
    if src.task and task_key(task) != task_key(src.task):
        raise UserError(
            f"the library in {src.where} was learned on task {task_key(src.task)!r}, not "
            f"{task_key(task)!r}: evaluate it on its own task (leave out --task), or evaluate "
            "the other task without --library"
        )
    data = cfg.data if cfg.data is not None else src.data
    task_args = cfg.task_args or src.task_args
    split = cfg.split if cfg.split.fractions else src.split
    given = {k: getattr(cfg.policy, k) for k in cfg.policy.model_fields_set}
    policy = src.policy.model_copy(update=given) if src.policy.model else cfg.policy
    if policy.model is None:
        raise UserError("which model? pass --model NAME (a litellm name such as openai/gpt-4.1-mini)")
    return Resolved(task=task, data=data, task_args=task_args, split=split, policy=policy)
