"""``tfgrpo train`` (training-free GRPO): parse, call ``tfgrpo.api``, render."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import typer

from tfgrpo.cli.console import emit, err_console, exit_interrupted, progress_hooks, train_tables, user_errors
from tfgrpo.cli.options import (
    TASK_ARG_HELP,
    apply_flags,
    describe_tasks,
    collect,
    with_generated_options,
    with_task_args,
)
from tfgrpo.config import build, load_yaml
from tfgrpo.errors import UserError
from tfgrpo.training_free.config import RunConfig

SPECS = describe_tasks(collect(RunConfig))


def _config(
    flags: dict[str, Any],
    config: Path | None,
    out: Path | None,
    resume: Path | None,
    task_args: list[str] | None = None,
) -> RunConfig:
    if resume is not None:
        if config is not None or out is not None:
            raise UserError(
                "--resume continues a run with its own config.yaml and directory; drop --config/--out "
                "(change endpoints, epochs or budgets with their flags)"
            )
        stored = resume / "config.yaml"
        if not stored.is_file():
            raise UserError(f"nothing to resume: {resume} has no config.yaml")
        return build(RunConfig, with_task_args(apply_flags(load_yaml(stored), flags, SPECS), task_args))
    return build(RunConfig, with_task_args(apply_flags(load_yaml(config) if config else {}, flags, SPECS), task_args))


def run_training(cfg: RunConfig, out: Path | None, resume: bool, quiet: bool):
    from tfgrpo import api

    target = out
    try:
        with progress_hooks(not quiet) as hooks:
            result = api.train(cfg, out=out, resume=resume, hooks=hooks)
    except KeyboardInterrupt as e:  # Ctrl-C, or SIGTERM (Terminated): status.json says interrupted
        exit_interrupted(e, "train", target)
    if result.stopped:
        fix = (
            "--price-per-mtok IN,OUT"
            if "--price-per-mtok" in result.stopped  # no price: a higher limit would not help
            else "and a higher limit"
        )
        err_console.print(
            f"stopped by budget: {result.stopped}; every finished step is saved: continue with "
            f"tfgrpo train --resume {result.run_dir} {fix}",
            highlight=False,
            markup=False,
            soft_wrap=True,
        )
    if result.selection:
        chosen = result.selection["chosen"]
        scores = ", ".join(f"epoch {c['epoch']} {c['mean_at_k']:.3f}" for c in result.selection["candidates"])
        err_console.print(
            f"best-val: kept the library of epoch {chosen['epoch']} (step {chosen['step']}); validation "
            f"{result.selection['metric']}: baseline {result.selection['baseline']['mean_at_k']:.3f}, {scores}",
            highlight=False,
            markup=False,
            soft_wrap=True,
        )
    return result


def register(app: typer.Typer) -> None:
    @app.command("train")
    @with_generated_options(SPECS)
    @user_errors
    def train_cmd(
        flags: dict[str, Any],
        config: Optional[Path] = typer.Option(
            None, "--config", "-c", help="YAML file with settings (flags override it)"
        ),
        out: Optional[Path] = typer.Option(None, "--out", "-o", help="Run directory (default: runs/<task>-<time>)"),
        resume: Optional[Path] = typer.Option(None, "--resume", help="Continue the stopped run in this directory"),
        task_arg: Optional[list[str]] = typer.Option(None, "--task-arg", "-T", help=TASK_ARG_HELP),
        as_json: bool = typer.Option(False, "--json", help="Print one JSON summary object as the last stdout line"),
        quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars"),
    ) -> None:
        """Learn an experience library from groups of the model's own answers (training-free GRPO).
        Weight updates by GRPO are `tfgrpo grpo`."""
        cfg = _config(flags, config, out, resume, task_arg)
        result = run_training(cfg, resume if resume is not None else out, resume is not None, quiet)
        summary = result.summary()
        emit(train_tables(summary, result.steps), summary, as_json)
