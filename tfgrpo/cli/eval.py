"""``tfgrpo eval``: Mean@k and Pass@k, baseline vs library, on the same problems and seeds."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import typer

from tfgrpo.cli.console import emit, eval_table, notice, progress_hooks, user_errors
from tfgrpo.cli.options import (
    TASK_ARG_HELP,
    apply_flags,
    describe_tasks,
    collect,
    with_generated_options,
    with_task_args,
)
from tfgrpo.config import build, load_yaml
from tfgrpo.training_free.config import EvalConfig

# -n is eval's answers per problem; the run's agent limits apply.
SPECS = describe_tasks(
    collect(EvalConfig, exclude=frozenset({"group-size", "max-turns", "agent-max-tokens", "agent-wall-s"}))
)


def register(app: typer.Typer) -> None:
    @app.command("eval")
    @with_generated_options(SPECS)
    @user_errors
    def eval_cmd(
        flags: dict[str, Any],
        library: Optional[Path] = typer.Option(
            None,
            "--library",
            "-l",
            help="Run directory, its library/ folder, or a pack (.zip or folder) whose lessons to inject; task, data, split, model and injection follow it unless given (without it: baseline only)",
        ),
        baseline_only: bool = typer.Option(
            False, "--baseline-only", help="Score the policy alone, on the --library's task and data"
        ),
        on_training_problems: bool = typer.Option(
            False,
            "--on-training-problems",
            help="Allow scoring the problems the library was trained on (labelled TRAINING problems)",
        ),
        step: Optional[int] = typer.Option(
            None,
            "--step",
            help="Use the library as it was after this step (default: the one --select best-val kept, else the latest)",
        ),
        trust_run: bool = typer.Option(
            False,
            "--trust-run",
            help="Use the --library run's endpoint, key variable, task file and embedder although tfgrpo did not write its config.yaml here (a run someone handed you)",
        ),
        name: Optional[str] = typer.Option(
            None, "--name", help="Save results under eval/NAME/ (default: <split>-k<k>-n<n>-step<step>)"
        ),
        save_dir: Optional[Path] = typer.Option(
            None, "--save-dir", help="Folder holding eval/ results (default: the run directory, else the current one)"
        ),
        config: Optional[Path] = typer.Option(
            None, "--config", "-c", help="YAML file with settings (flags override it)"
        ),
        task_arg: Optional[list[str]] = typer.Option(None, "--task-arg", "-T", help=TASK_ARG_HELP),
        as_json: bool = typer.Option(False, "--json", help="Print one JSON object as the last stdout line"),
        quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar"),
    ) -> None:
        """Evaluate the policy without and with a learned library on the same problems and seeds:
        Mean@k and Pass@k with 95% intervals, and the paired difference with its p-value.
        Without --library (or with --baseline-only): the policy alone."""
        from tfgrpo import api

        cfg = build(
            EvalConfig, with_task_args(apply_flags(load_yaml(config) if config else {}, flags, SPECS), task_arg)
        )
        with progress_hooks(not quiet) as hooks:
            result = api.evaluate(
                cfg,
                library,
                step=step,
                name=name,
                save_dir=save_dir,
                hooks=hooks,
                baseline_only=baseline_only,
                on_training_problems=on_training_problems,
                trust_run=trust_run,
            )
        emit([eval_table(result.summary)], result.summary, as_json)
        notice(f"results saved in {result.saved}")
