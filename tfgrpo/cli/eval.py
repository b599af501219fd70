"""``tfgrpo eval``: Mean@k and Pass@k, baseline vs library, on the same problems and seeds."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import typer

from tfgrpo.cli.console import emit, eval_table, progress_hooks, user_errors
from tfgrpo.cli.options import apply_flags, collect, with_generated_options
from tfgrpo.config import build, load_yaml
from tfgrpo.training_free.config import EvalConfig

# -n is eval's answers per problem; the run's agent limits apply.
SPECS = collect(EvalConfig, exclude=frozenset({"group-size", "max-turns", "agent-max-tokens", "agent-wall-s"}))


def register(app: typer.Typer) -> None:
    @app.command("eval")
    @with_generated_options(SPECS)
    @user_errors
    def eval_cmd(
        flags: dict[str, Any],
        library: Path = typer.Option(..., "--library", "-l", help="Run directory (or its library/ folder) whose experiences to inject"),
        step: Optional[int] = typer.Option(None, "--step", help="Use the library as it was after this step (default: the one --select best-val kept, else the latest)"),
        name: Optional[str] = typer.Option(None, "--name", help="Save results under eval/NAME/ (default: <split>-k<k>-n<n>-step<step>)"),
        save_dir: Optional[Path] = typer.Option(None, "--save-dir", help="Folder holding eval/ results (default: the run directory, else the current one)"),
        config: Optional[Path] = typer.Option(None, "--config", "-c", help="YAML file with settings (flags override it)"),
        as_json: bool = typer.Option(False, "--json", help="Print one JSON object as the last stdout line"),
        quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar"),
    ) -> None:
        """Evaluate the policy without and with a learned library on the same problems and seeds:
        Mean@k and Pass@k with 95% intervals, and the paired difference with its p-value."""
        from tfgrpo import api

        cfg = build(EvalConfig, apply_flags(load_yaml(config) if config else {}, flags, SPECS))
        with progress_hooks(not quiet) as hooks:
            result = api.evaluate(cfg, library, step=step, name=name, save_dir=save_dir, hooks=hooks)
        emit([eval_table(result.summary)], result.summary, as_json)
