"""``tfgrpo runs [DIR]``: every run under a folder as one table."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from tfgrpo.cli.console import err_console, plain, user_errors
from tfgrpo.errors import UserError
from tfgrpo.rundir import CONFIG

COLUMNS = ("run", "task", "policy / judge", "steps", "library", "best eval (library vs baseline)", "cost", "status")


def register(app: typer.Typer) -> None:
    @app.command("runs")
    @user_errors
    def runs_cmd(
        folder: Path = typer.Argument(Path("runs"), help="Folder holding run directories"),
        as_json: bool = typer.Option(False, "--json", help="One JSON list of runs on stdout instead of the table"),
    ) -> None:
        """List runs: task, models, steps, library size, best eval, cost and status
        (finished, stopped by budget, running, interrupted)."""
        from tfgrpo.report import best_eval, load_run, run_status

        if not folder.is_dir():
            raise UserError(f"no folder {folder}")
        paths = sorted(p for p in folder.iterdir() if (p / CONFIG).is_file())
        rows, records = [], []
        for p in paths:
            try:  # a damaged record is named in run.damaged and left out; the rest is listed
                run = load_run(p)
            except UserError as e:  # steps.jsonl cannot be read: one damaged run does not hide the others
                rows.append((p.name, "", "", "", "", "", "", f"unreadable: {e}"))
                records.append({"run": p.name, "path": str(p), "status": "unreadable", "error": str(e)})
                continue
            cfg = run.config or {}
            policy, judge = run.models
            best = best_eval(run)
            score = (
                f"{best['library']['mean_at_k']:.3f} vs {best['baseline']['mean_at_k']:.3f} (Mean@{best.get('k')})"
                if best
                else "-"
            )
            spend = run.spend
            priced = bool(run.steps) and not run.params_mode and not spend.unpriced
            cost = (
                "-"
                if not run.steps or run.params_mode
                else (f"${spend.cost:.4f}" if priced else f"{spend.tokens:,} tok")
            )
            planned = (run.status or {}).get("steps_planned")
            library = run.steps[-1].get("library_size") if run.steps else None
            status = run_status(run)
            if run.damaged:
                status += f", unreadable: {', '.join(sorted({_file_of(d) for d in run.damaged}))}"
            rows.append(
                (
                    p.name,
                    str(cfg.get("task")),
                    f"{policy} / {judge or '-'}",
                    f"{len(run.steps)}/{planned or '?'}",
                    "-" if library is None else str(library),
                    score,
                    cost,
                    status,
                )
            )
            records.append(
                {
                    "run": p.name,
                    "path": str(p),
                    "mode": "params" if run.params_mode else "training_free",
                    "task": cfg.get("task"),
                    "policy": policy,
                    "judge": judge,
                    "steps": len(run.steps),
                    "steps_planned": planned,
                    "library_size": library,
                    "status": status,
                    "best_eval": {
                        "k": best.get("k"),
                        "library": best["library"].get("mean_at_k"),
                        "baseline": best["baseline"].get("mean_at_k"),
                    }
                    if best
                    else None,
                    "cost_usd": spend.cost if priced else None,
                    "tokens": spend.tokens if run.steps and not run.params_mode else None,
                    "damaged": run.damaged,
                }
            )
        if as_json:
            sys.stdout.write(json.dumps(records) + "\n")
            return
        if not paths:
            typer.echo(f"no runs in {folder}")
            return
        t = Table(title=plain(f"Runs in {folder}"), title_justify="left")
        for col in COLUMNS:
            t.add_column(col, justify="right" if col in ("steps", "library", "cost") else "left")
        for row in rows:
            t.add_row(*(plain(cell) for cell in row))
        Console(width=None if sys.stdout.isatty() else 160).print(t)  # piped: wide enough for every column
        for p, r in zip(paths, records):  # one line each: the run, the file, its line or key, what is wrong
            for d in r.get("damaged", []):
                err_console.print(Text.assemble(("damaged: ", "yellow"), plain(p.name, "/", d)), soft_wrap=True)


def _file_of(damage: str) -> str:
    """The file a line of ``RunData.damaged`` names (``eval/x/summary.json:3: ...`` -> ``summary.json``)."""
    return Path(damage.split(":", 1)[0]).name
