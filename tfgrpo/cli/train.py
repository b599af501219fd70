"""``tfgrpo train`` (training-free, or ``--mode params``) and ``tfgrpo demo``."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any, Optional

import typer

from tfgrpo.cli.console import emit, err_console, eval_table, progress_hooks, train_tables, user_errors
from tfgrpo.cli.options import FlagSpec, apply_flags, collect, with_generated_options
from tfgrpo.training_free.budget import parse_price
from tfgrpo.training_free.config import EvalConfig, RunConfig, build, load_yaml
from experience_store import StoreError
from tfgrpo.errors import EndpointError, UserError
from tfgrpo.training_free.evaluate import SELECTION_FILE, select_best_epoch
from tfgrpo.llm.endpoints import open_models
from tfgrpo.training_free.prompting import Prompts
from tfgrpo.training_free.split import split_task
from tfgrpo.task_registry import Task, load_task
from tfgrpo.training_free.loop import RunDir, TrainResult, train

# Settings a resumed run may change: how models are reached, and how long it trains.
RESUMABLE = {"api-base", "api-key-env", "judge-api-base", "concurrency", "judge-concurrency", "timeout",
             "max-retries", "epochs", "cache", "cache-path", "serve",
             "max-cost", "max-tokens", "max-calls", "price-per-mtok", "select", "val-n"}
OWN_OPTIONS = {"out"}


def _params_config_model():
    try:
        from tfgrpo.params.config import ParamsConfig
    except ImportError:
        return None
    return ParamsConfig


def _specs() -> dict[str, FlagSpec]:
    models: list[Any] = [RunConfig]
    pm = _params_config_model()
    if pm is not None:
        models.append(pm)
    specs = collect(*models)
    for name in OWN_OPTIONS:
        specs.pop(name, None)
    return specs


SPECS = _specs()


def build_task(name: str, task_args: dict[str, Any], data: str | None) -> Task:
    kwargs = dict(task_args)
    if data is not None:
        kwargs["data"] = data
    return load_task(name, **kwargs)


def _new_run_dir(out: Path | None, task: str) -> RunDir:
    path = out or Path("runs") / f"{task.replace(':', '-').replace('/', '-')}-{time.strftime('%Y%m%d-%H%M%S')}"
    rd = RunDir(path)
    if rd.exists():
        raise UserError(f"{path} already holds a run: continue it with --resume {path}, or choose another --out")
    return rd


def resolve_run(flags: dict[str, Any], config: Path | None, out: Path | None, resume: Path | None) -> tuple[RunConfig, RunDir]:
    if resume is not None:
        if config is not None or out is not None:
            raise UserError("--resume continues a run with its own config.yaml and directory; drop --config/--out "
                            "(change endpoints, epochs or budgets with their flags)")
        rd = RunDir(resume)
        if not rd.exists():
            raise UserError(f"nothing to resume: {resume} has no config.yaml")
        fixed = sorted(f for f in flags if f not in RESUMABLE and SPECS[f].paths.get(RunConfig))
        if fixed:
            raise UserError(f"a resumed run keeps its settings; cannot change --{', --'.join(fixed)} (start a new run instead)")
        data = apply_flags(load_yaml(rd.config_path), flags, SPECS, RunConfig)
        cfg = build(RunConfig, data)
        return cfg, rd
    data = load_yaml(config) if config else {}
    cfg = build(RunConfig, apply_flags(data, flags, SPECS, RunConfig))
    return cfg, _new_run_dir(out, cfg.task)


def run_training(cfg: RunConfig, rd: RunDir, *, show_progress: bool = True) -> tuple[TrainResult, Task]:
    task = build_task(cfg.task, cfg.task_args, cfg.data)
    splits = split_task(task, cfg.split.fractions, cfg.split.seed)
    task.dataset, task.eval_dataset = splits.part("train"), splits.test
    if cfg.select == "best-val" and not splits.validation:
        raise UserError("--select best-val needs a validation split: add --split, e.g. --split 70/15/15")
    prompts = Prompts(cfg.prompts_dir)
    price = parse_price(cfg.budget.price_per_mtok)
    rd.path.mkdir(parents=True, exist_ok=True)
    cache_path = (Path(cfg.cache_path) if cfg.cache_path else rd.path / "cache.sqlite") if cfg.cache else None
    try:
        with open_models(cfg.policy, cfg.judge, sim_seed=cfg.sim_seed, serve=cfg.serve, serve_args=cfg.serve_args,
                         log_dir=rd.path, cache_path=cache_path, price_per_mtok=price) as models, \
                progress_hooks(show_progress) as hooks:

            async def session() -> TrainResult:
                result = await train(cfg, task, models, rd, prompts=prompts, hooks=hooks)
                if cfg.select == "best-val" and not result.stopped:
                    result.extra["selection"] = await _select(cfg, task, splits.validation, models, rd, prompts, hooks)
                return result

            result = asyncio.run(session())
    except EndpointError as e:
        raise UserError(f"{e}; every finished step is saved: tfgrpo train --resume {rd.path}") from None
    except StoreError as e:  # e.g. another writer committed to the shared library first
        raise UserError(f"{e}; every finished step is saved: tfgrpo train --resume {rd.path}") from None
    except KeyboardInterrupt:
        err_console.print(f"interrupted; continue with: tfgrpo train --resume {rd.path}")
        raise typer.Exit(130) from None
    if result.stopped:
        err_console.print(f"[yellow]stopped by budget:[/yellow] {result.stopped}; every finished step is saved: "
                          f"continue with tfgrpo train --resume {rd.path} and a higher limit", highlight=False, soft_wrap=True)
    return result, task


async def _select(cfg: RunConfig, task: Task, validation: list, models: Any, rd: RunDir, prompts: Prompts, hooks: Any) -> dict[str, Any]:
    """--select best-val: score each epoch's library on the validation split, write selection.json."""
    import json

    epoch_steps = {s.epoch: s.step for s in rd.steps()}
    hooks.on_phase("validation: each epoch's library", len(validation) * (len(epoch_steps) + 1))
    selection = await select_best_epoch(
        models.policy, task, validation, rd.path / "library", epoch_steps, prompts, n=cfg.val_n, seed=cfg.seed,
        temperature=cfg.policy.temperature, max_tokens=cfg.policy.max_tokens, injection=cfg.library,
        model=models.policy_name, agent=cfg.agent, on_advance=lambda: hooks.on_advance("library"),
    )
    rd.file(SELECTION_FILE).write_text(json.dumps(selection, indent=1))
    chosen = selection["chosen"]
    scores = ", ".join(f"epoch {c['epoch']} {c['mean_at_k']:.3f}" for c in selection["candidates"])
    err_console.print(f"best-val: kept the library of epoch {chosen['epoch']} (step {chosen['step']}); "
                      f"validation {selection['metric']}: baseline {selection['baseline']['mean_at_k']:.3f}, {scores}",
                      highlight=False, soft_wrap=True)
    return selection


def _run_params(flags: dict[str, Any], config: Path | None, out: Path | None, resume: Path | None, as_json: bool) -> None:
    pm = _params_config_model()
    if pm is None:
        raise UserError("parameter mode needs the [train] extra: pip install 'tfgrpo[train]'")
    foreign = sorted(f for f in flags if pm not in SPECS[f].paths)
    if foreign:
        raise UserError(f"--{', --'.join(foreign)} only applies to the training-free mode (--mode free)")
    from tfgrpo.params import run as run_params

    data = load_yaml(config) if config else {}
    data = apply_flags(data, flags, SPECS, pm)
    if out is not None:
        data["out"] = str(out)
    cfg = build(pm, data)
    summary = run_params(cfg, resume=str(resume) if resume else None)
    emit([], summary, as_json)
    if not as_json:
        err_console.print(f"parameter-mode run finished: {summary.get('steps')} steps, run directory {summary.get('run_dir')}")


def register(app: typer.Typer) -> None:
    @app.command("train")
    @with_generated_options(SPECS)
    @user_errors
    def train_cmd(
        flags: dict[str, Any],
        config: Optional[Path] = typer.Option(None, "--config", "-c", help="YAML file with settings (flags override it)"),
        out: Optional[Path] = typer.Option(None, "--out", "-o", help="Run directory (default: runs/<task>-<time>)"),
        resume: Optional[Path] = typer.Option(None, "--resume", help="Continue the stopped run in this directory"),
        mode: str = typer.Option("free", "--mode", help="free: training-free GRPO (experience library); params: GRPO weight updates (needs the train extra)"),
        as_json: bool = typer.Option(False, "--json", help="Print one JSON summary object as the last stdout line"),
        quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars"),
    ) -> None:
        """Learn an experience library from groups of the model's own answers (training-free GRPO),
        or with --mode params train the weights by GRPO."""
        if mode not in ("free", "params"):
            raise UserError(f"unknown --mode '{mode}' (choose free or params)")
        if mode == "params":
            _run_params(flags, config, out, resume, as_json)
            return
        foreign = sorted(f for f in flags if RunConfig not in SPECS[f].paths)
        if foreign:
            raise UserError(f"--{', --'.join(foreign)} only applies with --mode params")
        cfg, rd = resolve_run(flags, config, out, resume)
        result, _ = run_training(cfg, rd, show_progress=not quiet)
        summary = result.summary()
        if "selection" in result.extra:
            summary["selected_step"] = result.extra["selection"]["chosen"]["step"]
        emit(train_tables(summary, result.steps), summary, as_json)

    @app.command("demo")
    @user_errors
    def demo_cmd(
        out: Optional[Path] = typer.Option(None, "--out", "-o", help="Run directory (default: runs/demo-<time>)"),
        epochs: int = typer.Option(2, "--epochs", help="Passes over the demo training set"),
        k: int = typer.Option(4, "-k", help="Answers per problem in the evaluation"),
        as_json: bool = typer.Option(False, "--json", help="Print one JSON summary object as the last stdout line"),
        quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars"),
    ) -> None:
        """Offline demo: train on the built-in demo task with the SIMULATED model, then evaluate
        baseline vs learned library. No network, no API key, a couple of minutes on a laptop."""
        cfg = RunConfig(task="demo", epochs=epochs, batch_size=8, group_size=4)
        rd = _new_run_dir(out, "demo")
        result, task = run_training(cfg, rd, show_progress=not quiet)
        from tfgrpo.cli.eval import evaluate_library

        report = evaluate_library(EvalConfig(task="demo", k=k, seed=cfg.seed), rd.path, name="demo", quiet=quiet)
        summary = result.summary()
        summary["eval"] = report
        emit([*train_tables(summary, result.steps), eval_table(report)], summary, as_json)
