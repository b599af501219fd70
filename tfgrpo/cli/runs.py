"""``tfgrpo runs [DIR]``: every run under a folder as one table."""

from __future__ import annotations

import sys
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from tfgrpo.cli.console import user_errors
from tfgrpo.errors import UserError
from tfgrpo.rundir import CONFIG


def register(app: typer.Typer) -> None:
    @app.command("runs")
    @user_errors
    def runs_cmd(
        folder: Path = typer.Argument(Path("runs"), help="Folder holding run directories"),
    ) -> None:
        """List runs: task, models, steps, library size, best eval, cost and status
        (finished, stopped by budget, running, crashed-resumable)."""
        from tfgrpo.report import best_eval, load_run, run_status

        if not folder.is_dir():
            raise UserError(f"no folder {folder}")
        paths = sorted(p for p in folder.iterdir() if (p / CONFIG).is_file())
        t = Table(title=f"Runs in {folder}", title_justify="left")
        for col in ("run", "task", "policy / judge", "steps", "library", "best eval (library vs baseline)", "cost", "status"):
            t.add_column(col, justify="right" if col in ("steps", "library", "cost") else "left")
        for p in paths:
            run = load_run(p)
            cfg = run.config or {}
            policy, judge = run.models
            best = best_eval(run)
            score = (f"{best['library']['mean_at_k']:.3f} vs {best['baseline']['mean_at_k']:.3f} (Mean@{best.get('k')})"
                     if best else "-")
            spend = run.spend
            cost = "-" if not run.steps or run.params_mode else (f"${spend.cost:.4f}" if not spend.unpriced else f"{spend.tokens:,} tok")
            steps = f"{len(run.steps)}/{(run.status or {}).get('steps_planned', '?')}"
            t.add_row(p.name, str(cfg.get("task")), f"{policy} / {judge or '-'}", steps,
                      str(run.steps[-1].get("library_size", "-")) if run.steps else "-", score, cost, run_status(run))
        if not paths:
            typer.echo(f"no runs in {folder}")
            return
        Console(width=None if sys.stdout.isatty() else 160).print(t)  # piped: wide enough for every column
