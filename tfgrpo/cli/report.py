"""``tfgrpo report RUN``: PNG plots and a self-contained report.html for one run."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.text import Text

from tfgrpo.cli.console import err_console, plain, user_errors
from tfgrpo.errors import UserError


def register(app: typer.Typer) -> None:
    @app.command("report")
    @user_errors
    def report_cmd(
        run: Path = typer.Argument(..., help="Run directory"),
        out: Optional[Path] = typer.Option(
            None, "--out", "-o", help="Folder for the plots and report.html (default: RUN/report)"
        ),
    ) -> None:
        """Plot a run (reward, library edits, tokens and cost per step, evaluations) and write one
        self-contained report.html with the library, its most helpful and harmful lessons and the config."""
        if not run.is_dir():
            raise UserError(f"no run directory at {run}")
        from tfgrpo.rundir import CONFIG, LATEST_EVAL, LIBRARY, STEPS

        if not any((run / name).exists() for name in (CONFIG, STEPS, LIBRARY, LATEST_EVAL)):
            raise UserError(f"{run} is not a run directory (it has no {CONFIG}, {STEPS} or {LIBRARY}/)")
        from tfgrpo.report import write_report

        try:
            rep = write_report(run, out)
        except OSError as e:
            raise UserError(f"cannot write the report to {out or run / 'report'}: {e.strerror or e}") from None
        for p in rep.plots:
            err_console.print(f"plot   {p}", highlight=False)
        if rep.missing:
            err_console.print(
                f"[yellow]missing from the run, left out of the report:[/yellow] {', '.join(rep.missing)}",
                highlight=False,
                soft_wrap=True,
            )
        for d in rep.damaged:  # one line each: the file, its line or key, what is wrong
            err_console.print(Text.assemble(("damaged: ", "yellow"), plain(d)), soft_wrap=True)
        typer.echo(str(rep.html))
