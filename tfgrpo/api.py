"""The Python API: what the CLI calls, usable without it. Functions return result objects and
never print; progress goes to the optional ``hooks``.

    import tfgrpo
    result = tfgrpo.train(tfgrpo.RunConfig(task="demo", epochs=1), out="runs/demo")
    report = tfgrpo.evaluate(tfgrpo.EvalConfig(task="demo"), library=result.run_dir)
    pack = tfgrpo.export_pack(result.run_dir, "demo.zip")

Parameter mode (``[train]`` extra) is :func:`train_params` with a ``ParamsConfig`` (it lives in
``tfgrpo.params``, which imports nothing of the training-free mode).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from experience_store import Library, OpResult, Pack, StoreError
from pydantic import ValidationError

from tfgrpo.config import build, setting_name
from tfgrpo.errors import EndpointError, UserError
from tfgrpo.eval_source import library_at, open_source, resolve, task_key
from tfgrpo.llm.endpoints import Models, open_models
from tfgrpo.llm.providers import provider_for
from tfgrpo.rundir import EVALS, OPS, STEPS, RunDir, check_writable, library_dir, run_of_library, save_eval
from tfgrpo.task_registry import Sample, Task, load_task
from tfgrpo.tracking import parse_report_to, step_metrics, trackers
from tfgrpo.training_free.budget import parse_price
from tfgrpo.training_free.config import EvalConfig, RunConfig, SamplingConfig, load_run_config
from tfgrpo.training_free.evaluate import Evaluator
from tfgrpo.hooks import Hooks
from tfgrpo.params import train_params
from tfgrpo.training_free.loop import TrainResult, train_loop
from tfgrpo.training_free.prompting import Prompts
from tfgrpo.training_free.placebo import placebo_injector
from tfgrpo.training_free.external import ExternalPolicy, agent_policy
from tfgrpo.training_free.policy import PromptPolicy
from tfgrpo.training_free.rollout import Scorer, injector
from tfgrpo.training_free.split import Splits, split_task
from tfgrpo.version import __version__

__all__ = ["EvalResult", "Hooks", "TrainResult", "evaluate", "export_pack", "train", "train_params"]

# Settings a resumed run may change (dotted config paths): how models are reached, how long it
# trains, what it may spend, and what it keeps.
RESUMABLE = frozenset(
    {
        "policy.api_base",
        "policy.api_key_env",
        "policy.concurrency",
        "policy.timeout",
        "policy.max_retries",
        "judge.api_base",
        "judge.api_key_env",
        "judge.concurrency",
        "judge.timeout",
        "judge.max_retries",
        "judge.max_tokens",
        "judge.check",
        "epochs",
        "cache",
        "cache_path",
        "serve",
        "serve_args",
        "select",
        "val_n",
        "report_to",
        "budget.cost",
        "budget.tokens",
        "budget.calls",
        "budget.price_per_mtok",
    }
)


def build_task(name: str, task_args: dict[str, Any], data: str | None) -> Task:
    kwargs = dict(task_args)
    if data is not None:
        kwargs["data"] = data
    return load_task(name, **kwargs)


def new_run_dir(out: str | Path | None, task: str) -> RunDir:
    """A fresh run directory: ``out``, or ``runs/<task>-<time>``; refuses one that holds a run
    (a finished step; what a failed start left is started over)."""
    path = (
        Path(out)
        if out is not None
        else Path("runs") / f"{task.replace(':', '-').replace('/', '-')}-{time.strftime('%Y%m%d-%H%M%S')}"
    )
    rd = RunDir(path)
    if rd.exists() and rd.has_steps():
        raise UserError(
            f"{path} already holds a run: continue it with tfgrpo train --resume {path}, or choose another --out"
        )
    return rd


def _changed(old: dict[str, Any], new: dict[str, Any], prefix: str = "") -> set[str]:
    out = set()
    for key in old.keys() | new.keys():
        a, b, path = old.get(key), new.get(key), f"{prefix}{key}"
        if isinstance(a, dict) and isinstance(b, dict) and path not in RESUMABLE:
            out |= _changed(a, b, path + ".")
        elif a != b:
            out.add(path)
    return out


# ---------------------------------------------------------------------------- training-free


def train(
    config: RunConfig | dict[str, Any],
    *,
    out: str | Path | None = None,
    resume: bool = False,
    hooks: Hooks | None = None,
) -> TrainResult:
    """Run training-free GRPO. ``out`` is the run directory (default ``runs/<task>-<time>``).
    With ``resume=True``, ``out`` holds a stopped or killed run to continue: ``config`` may only
    differ from its ``config.yaml`` in the :data:`RESUMABLE` settings."""
    started = time.monotonic()  # wall time includes the set-up (library, endpoints, servers), not just the loop
    cfg = build(RunConfig, config)
    if resume:
        if out is None:
            raise UserError("resume needs the run directory (out=...)")
        rd = RunDir(out)
        if not rd.exists():
            raise UserError(f"nothing to resume: {out} has no config.yaml")
        if rd.config_edited():
            raise UserError(
                f"{rd.config_path} was edited after tfgrpo wrote it, and a resumed run keeps its settings: "
                "restore the file and pass what may change as flags (e.g. --epochs, budgets, endpoints), "
                "or start a new run"
            )
        fixed = sorted(_changed(load_run_config(out).model_dump(mode="json"), cfg.model_dump(mode="json")) - RESUMABLE)
        if fixed:
            raise UserError(
                f"a resumed run keeps its settings; cannot change {', '.join(setting_name(RunConfig, f) for f in fixed)} "
                "(start a new run instead)"
            )
        try:  # a damaged step record stops the resume here, before anything is written
            rd.steps()
        except (ValueError, RecursionError) as e:  # pydantic's ValidationError is a ValueError
            raise UserError(
                f"{rd.file(STEPS)}: a step record is damaged ({str(e).splitlines()[0][:120]}); "
                "restore the file or start a new run"
            ) from None
    else:
        rd = new_run_dir(out, cfg.task)
    hooks = hooks or Hooks()
    task = build_task(cfg.task, cfg.task_args, cfg.data)
    splits = split_task(task, cfg.split.fractions, cfg.split.seed)
    task.dataset, task.eval_dataset = splits.part("train"), splits.test
    if cfg.select == "best-val" and not splits.validation:
        raise UserError("--select best-val needs a validation split: add --split, e.g. --split 70/15/15")
    prompts = Prompts(cfg.prompts_dir)
    if cfg.policy.model is None and not cfg.serve:
        raise UserError(
            "which model? pass --model NAME (a litellm name such as openai/gpt-4.1-mini), or name it as "
            "policy.model in --config"
        )
    check_provider(cfg.policy.model, task, task.dataset, hooks)
    created_dir = not rd.path.exists()
    with rd.create().locked():
        if not resume:
            new_run_dir(rd.path, cfg.task)  # again, under the lock: another start may have won meanwhile
        created_cache = not rd.cache_path.exists()
        try:
            result = _train(cfg, task, splits, prompts, rd, hooks)
            result.wall_s = time.monotonic() - started
            return result
        except Exception:
            if not resume and not rd.has_steps():  # a retry with the same --out starts afresh
                rd.forget_failed_start(created_dir=created_dir, created_cache=created_cache)
            raise


def _train(cfg: RunConfig, task: Task, splits: Splits, prompts: Prompts, rd: RunDir, hooks: Hooks) -> TrainResult:
    cache_path = (Path(cfg.cache_path) if cfg.cache_path else rd.cache_path) if cfg.cache else None
    try:
        with (
            rd.interrupts_marked("training_free"),
            open_models(
                cfg.policy,
                cfg.judge,
                serve=cfg.serve,
                serve_args=cfg.serve_args,
                log_dir=rd.path,
                cache_path=cache_path,
                price_per_mtok=parse_price(cfg.budget.price_per_mtok),
            ) as models,
            trackers(parse_report_to(cfg.report_to), rd.path, cfg.model_dump(mode="json")) as log,
        ):
            shown = hooks.on_step
            hooks = replace(hooks, on_step=lambda record: (shown(record), log(record.step, step_metrics(record))))

            async def session() -> TrainResult:
                async with agent_policy(cfg.agent or task.agent, models.policy, cfg.sampling) as agent:
                    result = await train_loop(cfg, task, models, rd, prompts=prompts, hooks=hooks, policy=agent)
                    if cfg.select == "best-val" and not result.stopped:
                        result.selection = await _select(cfg, task, splits, models, rd, prompts, hooks, agent)
                return result

            return asyncio.run(session())
    except (EndpointError, StoreError) as e:  # StoreError: e.g. another writer committed to the shared library first
        if not rd.has_steps():
            raise UserError(
                f"{e}; no step finished, so nothing was kept: fix the cause and run the same command again"
            ) from None
        raise UserError(f"{e}; every finished step is saved: tfgrpo train --resume {rd.path}") from None


async def _select(
    cfg: RunConfig,
    task: Task,
    splits: Splits,
    models: Models,
    rd: RunDir,
    prompts: Prompts,
    hooks: Hooks,
    agent: ExternalPolicy | None,
) -> dict[str, Any]:
    """--select best-val: score each epoch's library on the validation split, write selection.json."""
    epoch_steps = {s.epoch: s.step for s in rd.steps()}
    hooks.on_phase("validation: each epoch's library", len(splits.validation) * (len(epoch_steps) + 1))
    sampling = cfg.sampling.model_copy(update={"group_size": cfg.val_n})
    evaluator = Evaluator(
        agent.with_sampling(sampling) if agent else PromptPolicy(models.policy, task, prompts, sampling),
        Scorer(task),
        cfg.val_n,
        [sampling.seed],
        on_advance=lambda: hooks.on_advance("library"),
    )
    versions = {epoch: (step, Library(rd.library_path, at_step=step)) for epoch, step in epoch_steps.items()}
    selection = await evaluator.select_best_epoch(
        splits.validation, versions, lambda lib: injector(lib, cfg.library, models.policy.count_tokens)
    )
    rd.write_selection(selection)
    return selection


@dataclass
class EvalResult:
    """What ``evaluate`` measured (``summary`` is ``tfgrpo eval --json``'s object) and where it went."""

    summary: dict[str, Any]
    saved: Path


def evaluate(
    config: EvalConfig | dict[str, Any],
    library: str | Path | None = None,
    *,
    step: int | None = None,
    name: str | None = None,
    save_dir: str | Path | None = None,
    hooks: Hooks | None = None,
    baseline_only: bool = False,
    on_training_problems: bool = False,
    trust_run: bool = False,
) -> EvalResult:
    """Baseline vs library on the same problems and seeds (Mean@k, Pass@k, intervals, paired test).

    ``library`` is a run directory, a library folder or a pack (zip or folder); None, or
    ``baseline_only``, scores the policy alone. Task, data, split, model and injection come from
    the library's run (or the pack's manifest) unless ``config`` sets them; another task than
    the library's is an error. ``step`` picks the library version (default: the one ``--select
    best-val`` kept, else the latest). Scoring the problems the library was trained on needs
    ``on_training_problems`` and is labelled so. Results go under ``eval/NAME/`` of the run (or
    ``save_dir``); a run's newest summary of its own task is also its ``eval.json``. A run not
    made here is data: its endpoint, key variable, task code and embedder are used only with
    ``trust_run`` (``tfgrpo.eval_source``)."""
    cfg = build(EvalConfig, config)
    hooks = hooks or Hooks()
    n = cfg.n or cfg.k
    if cfg.k > n:
        raise UserError(f"-k {cfg.k} is larger than -n {n}: sample at least k answers per problem")
    src = open_source(library, step, trust_run)
    got = resolve(cfg, src)
    task = build_task(got.task, got.task_args, got.data)
    _check_task(src.lessons(), task.name, src.where)
    learned = src.library is not None and not baseline_only
    if not got.split.fractions and cfg.eval_on != "test":
        raise UserError(
            f"--eval-on {cfg.eval_on} needs a --split (this run was trained without one, so there is no "
            f"{cfg.eval_on} part: only the task's test problems)"
        )
    part = cfg.eval_on if got.split.fractions else "test"
    trained_on = learned and (
        part == "train"
        or (not got.split.fractions and task.eval_dataset is None and src.kind == "run" and got.data == src.data)
    )
    if trained_on and not on_training_problems:
        why = (
            "--eval-on train" if part == "train" else f"task {task.name!r} has no test set and no --split holds any out"
        )
        raise UserError(
            f"these are the problems the library was trained on ({why}): pass held-out problems with "
            "--data, or score them anyway, labelled as training problems, with --on-training-problems"
        )
    root = Path(save_dir) if save_dir is not None else (src.run.path if src.run is not None else Path("."))
    check_writable(root / EVALS, "pass --save-dir DIR (save_dir=...) to keep the results elsewhere")
    samples = split_task(task, got.split.fractions, got.split.seed).part(part)
    samples = samples[: cfg.limit] if cfg.limit else samples
    if not samples:
        raise UserError("no problems to evaluate")
    check_provider(got.policy.model, task, samples, hooks)
    if learned and src.size == 0:
        which = "all three arms (placebo too)" if cfg.placebo else "both arms"
        hooks.on_notice(f"warning: the library in {src.where} holds no lessons; {which} will see the same prompt")
    # the run's cap on tokens per answer, unless this command sets one: the arms answer as the run's rollouts did
    max_tokens = cfg.sampling.max_tokens or src.max_tokens
    sampling = SamplingConfig(**{**cfg.sampling.model_dump(), "max_tokens": max_tokens}, group_size=n, agent=src.agent)
    seeds = [sampling.seed + i for i in range(cfg.seeds)]
    with open_models(got.policy, cache_path=Path(cfg.cache_path) if cfg.cache_path else None) as models:

        async def run() -> Any:
            async with agent_policy(cfg.agent or task.agent, models.policy, sampling) as agent:
                policy = agent or PromptPolicy(models.policy, task, Prompts(cfg.prompts_dir), sampling)
                evaluator = Evaluator(
                    policy,
                    Scorer(task),
                    n,
                    seeds,
                    on_advance=lambda: hooks.on_advance("library" if learned else "baseline"),
                )
                if not learned:
                    hooks.on_phase("evaluating baseline", len(samples) * len(seeds))
                    return await evaluator.baseline(samples, cfg.k)
                inject = injector(src.library, src.injection, models.policy.count_tokens)
                placebo = placebo_injector(inject, models.policy.count_tokens) if cfg.placebo else None
                arms = 3 if cfg.placebo else 2
                hooks.on_phase(
                    "evaluating baseline + library" + (" + placebo" if cfg.placebo else ""),
                    arms * len(samples) * len(seeds),
                )
                return await evaluator.compare(samples, inject, cfg.k, placebo=placebo)

        report = asyncio.run(run())
    summary = report.summary
    label = "train" if trained_on else part
    summary.update(split=label, on_training_problems=trained_on, model=got.policy.model, usage=models.usage.to_dict())
    if learned:
        summary.update(library_size=src.size, library_path=str(src.where), library_step=src.step, library_kind=src.kind)
    name = name or f"{label}-k{cfg.k}-n{n}" + (f"-step{src.step}" if learned else "-baseline")
    run, dest = src.run, root / EVALS / name
    if (saved := save_eval(dest, summary, report.answers)) != dest:
        hooks.on_notice(f"warning: could not write {dest}; the results are in {saved}")
    elif run is not None and save_dir is None and learned:  # the run's latest eval, which `pack export` records
        run.write_latest_eval(summary)
    return EvalResult(summary=summary, saved=saved)


def check_provider(model: str | None, task: Task, samples: list[Sample], hooks: Hooks) -> None:
    """A model served by a provider of its own (tfgrpo.llm.providers) may refuse problems it cannot
    answer, or name a line the user must see, before anything is sent."""
    provider = provider_for(model)
    if provider is not None and (line := provider.check(task.name, [s.user_text() for s in samples[:200]])):
        hooks.on_notice(line)


def _check_task(lessons: list[Any], task_name: str, where: Path | None) -> None:
    """A library learned on another task is a user error, not a silent comparison."""
    learned = sorted({e.provenance.task for e in lessons if e.provenance.task} - {task_name})
    if learned:
        raise UserError(
            f"the library in {where} was learned on task {', '.join(map(repr, learned))}, not {task_name!r} "
            "(pass the matching --task)"
        )


# ---------------------------------------------------------------------------- packs


def export_pack(
    run: str | Path,
    out: str | Path,
    *,
    step: int | None = None,
    eval_summary: dict[str, Any] | None = None,
    name: str | None = None,
) -> Pack:
    """Write the library of ``run`` (at ``step``; default: the step ``--select best-val`` kept,
    else the latest) with the ops that built it and the run's metadata as a pack (``x.zip`` or a
    directory). The manifest records ``eval_summary``, else the run's ``eval.json`` when it
    evaluated the exported step."""
    pack = pack_from_run(run, step, eval_summary, name)
    try:
        pack.write(Path(out))
    except OSError as e:
        raise UserError(f"cannot write the pack to {out}: {e.strerror or e}") from None
    return pack


def pack_from_run(
    run: str | Path, step: int | None = None, eval_summary: dict[str, Any] | None = None, name: str | None = None
) -> Pack:
    path = library_dir(run)
    rd = run_of_library(path) or RunDir(path.parent)
    if step is None:
        step = rd.selected_step()
    lib = library_at(path, step, run)
    if not lib.versions():
        raise UserError(f"{run}: the library has no versions yet")
    cfg = load_run_config(rd.path) if rd.exists() else None
    history = []
    for row in rd.read(OPS):
        if (
            row.get("status") in ("applied", "rejected", "noop")
            and row.get("step", 0) <= lib.state.step
            and not str(row.get("error") or "").startswith("leak")
        ):  # a leak record quotes training problems
            try:
                history.append(OpResult.model_validate(row))
            except ValidationError:
                continue  # another record kind
    if eval_summary is None:
        latest = rd.read_latest_eval()
        eval_summary = (
            latest if latest and latest.get("library_step") == lib.state.step else None
        )  # else another version's
    policy = cfg.policy.model if cfg else None
    injection = cfg.library.injection if cfg is not None else None
    return Pack.build(
        lib.state.experiences,
        history,
        name=name or rd.path.name,
        toolkit_version=__version__,
        task=task_key(cfg.task) if cfg else None,  # a task file's path means nothing elsewhere
        policy_model=policy,
        judge_model=(cfg.judge.model or policy) if cfg else None,
        source_run=rd.path.name,
        source_step=lib.state.step,
        embedding=lib.state.embedding,
        injection=injection,
        eval=eval_summary,
    )
