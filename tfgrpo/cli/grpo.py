"""``tfgrpo grpo``: parameter mode, GRPO weight updates (``[train]`` extra). Its own command and
its own config (``ParamsConfig``), so ``--help`` shows only its options with their defaults.
``python -m tfgrpo.params`` runs the same command (also under ``accelerate launch -m``)."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any, Iterator, Optional

import typer

from tfgrpo.cli.console import configure_logging, emit, err_console, exit_interrupted, notice, user_errors
from tfgrpo.cli.options import apply_flags, collect, describe_tasks, with_generated_options
from tfgrpo.config import build, load_yaml
from tfgrpo.hooks import Hooks
from tfgrpo.params.checkpoint import run_of
from tfgrpo.params.config import ParamsConfig, default_run_dir, without_out
from tfgrpo.params.metrics import format_step
from tfgrpo.rundir import CONFIG

SPECS = describe_tasks(collect(ParamsConfig))


def register(app: typer.Typer) -> None:
    @app.command("grpo")
    @with_generated_options(SPECS)
    @user_errors
    def grpo_cmd(
        flags: dict[str, Any],
        config: Optional[Path] = typer.Option(
            None, "--config", "-c", help="YAML file with settings (flags override it)"
        ),
        out: Optional[Path] = typer.Option(
            None,
            "--out",
            "-o",
            help="Run directory (default: runs/grpo-<task>-<time>); an existing run is continued only with --resume",
        ),
        resume: Optional[Path] = typer.Option(None, "--resume", help="Run directory or checkpoint to continue from"),
        as_json: bool = typer.Option(False, "--json", help="Print one JSON summary object as the last stdout line"),
        quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress lines (notices still print)"),
    ) -> None:
        """Train the policy's weights by GRPO on local hardware, with the same tasks and rewards as
        the training-free mode (needs the train extra: pip install 'tfgrpo[train]')."""
        from tfgrpo.params import train_params

        # `out:` in a YAML file (config.yaml of earlier runs recorded it) is the run directory, as --out is
        base, file_out = without_out(load_yaml(config)) if config else ({}, None)
        if resume is not None and config is None:  # a run directory continues with its own config.yaml, in place
            run = run_of(resume)
            base = without_out(load_yaml(run / CONFIG))[0] if (run / CONFIG).is_file() else {}
        cfg = build(ParamsConfig, apply_flags(base, flags, SPECS))
        target = out if out is not None else Path(file_out) if file_out is not None else None
        if resume is None and target is None:
            target = default_run_dir(cfg.task)  # chosen here, so an interrupted run can say where it is
        try:
            with _hooks(not quiet) as hooks:
                result = train_params(cfg, out=target, resume=resume if resume is not None else False, hooks=hooks)
        except KeyboardInterrupt as e:  # Ctrl-C, or SIGTERM: status.json says interrupted
            exit_interrupted(e, "grpo", target if resume is None else run_of(resume))
        if os.environ.get("RANK", "0") != "0":  # one summary under torchrun / accelerate launch
            return
        summary = result.summary()
        if not (as_json or quiet):
            _print_summary(summary)
        emit([], summary, as_json)
        if not as_json:
            err_console.print(
                f"parameter-mode run finished: {summary['steps']} steps, run directory {summary['run_dir']}",
                highlight=False,
                markup=False,
            )


@contextlib.contextmanager
def _hooks(enabled: bool) -> Iterator[Hooks]:
    """The grpo command's progress on stderr: a bar over the steps and one line per step (the
    metrics of steps.jsonl); notices print either way."""
    if not enabled:
        yield Hooks(on_notice=notice)
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    progress = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err_console,
        transient=True,
    )
    bars: dict[str, Any] = {}

    def on_phase(phase: str, total: int) -> None:
        key = phase.rsplit(" ", 1)[-1]
        if key in bars:
            progress.remove_task(bars[key])
        bars[key] = progress.add_task(phase, total=max(total, 0))

    def on_advance(key: str) -> None:
        if key in bars:
            progress.advance(bars[key])

    def line(text: str) -> None:
        progress.console.print(text, highlight=False, markup=False, soft_wrap=True)

    with progress:
        yield Hooks(
            on_phase=on_phase, on_advance=on_advance, on_step=lambda metrics: line(format_step(metrics)), on_notice=line
        )


def _print_summary(s: dict[str, Any]) -> None:
    from rich.table import Table

    table = Table(title="parameter-mode run", show_header=False)
    r = [x for x in s.get("reward_by_step", []) if x is not None]
    for k, v in [
        ("steps", s.get("steps")),
        ("model", s.get("model")),
        ("loss", s.get("loss")),
        ("reward first → last", f"{r[0]:.3f} → {r[-1]:.3f}" if r else "-"),
        ("checkpoint", s.get("final_checkpoint")),
        ("model export", s.get("final_model")),
        ("metrics", s.get("metrics")),
        ("wall", f"{s.get('wall_s')} s"),
    ]:
        table.add_row(k, str(v))
    err_console.print(table)


def standalone() -> None:
    """``python -m tfgrpo.params``: the grpo command alone, importing nothing of the training-free mode."""
    configure_logging()
    app = typer.Typer(add_completion=False, pretty_exceptions_enable=False, rich_markup_mode=None)
    register(app)
    app(prog_name="python -m tfgrpo.params")
