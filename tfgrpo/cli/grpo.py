"""``tfgrpo grpo``: parameter mode, GRPO weight updates (``[train]`` extra). Its own command and
its own config (``ParamsConfig``), so ``--help`` shows only its options with their defaults.
``python -m tfgrpo.params`` runs the same command (also under ``accelerate launch -m``)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Optional

import typer

from tfgrpo.cli.console import configure_logging, emit, err_console, exit_interrupted, user_errors
from tfgrpo.cli.options import apply_flags, collect, describe_tasks, with_generated_options
from tfgrpo.config import build, load_yaml
from tfgrpo.params.checkpoint import run_of
from tfgrpo.params.config import ParamsConfig
from tfgrpo.rundir import CONFIG

SPECS = describe_tasks(collect(ParamsConfig))


def register(app: typer.Typer) -> None:
    @app.command("grpo")
    @with_generated_options(SPECS)
    @user_errors
    def grpo_cmd(
        flags: dict[str, Any],
        config: Optional[Path] = typer.Option(None, "--config", "-c", help="YAML file with settings (flags override it)"),
        resume: Optional[Path] = typer.Option(None, "--resume", help="Run directory or checkpoint to continue from"),
        as_json: bool = typer.Option(False, "--json", help="Print one JSON summary object as the last stdout line"),
        quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress lines"),
    ) -> None:
        """Train the policy's weights by GRPO on local hardware, with the same tasks and rewards as
        the training-free mode (needs the train extra: pip install 'tfgrpo[train]')."""
        from tfgrpo.params import train_params

        base = load_yaml(config) if config else {}
        if resume is not None and config is None:  # a run directory continues with its own config.yaml, in place
            run = run_of(resume)
            base = load_yaml(run / CONFIG) if (run / CONFIG).is_file() else {}
            base["out"] = str(run)
        cfg = build(ParamsConfig, apply_flags(base, flags, SPECS))
        try:
            summary = train_params(cfg, resume=resume, progress=not quiet)
        except KeyboardInterrupt as e:  # Ctrl-C, or SIGTERM: status.json says interrupted
            exit_interrupted(e, "grpo", cfg.run_dir)
        if os.environ.get("RANK", "0") != "0":  # one summary under torchrun / accelerate launch
            return
        if not (as_json or quiet):
            _print_summary(summary)
        emit([], summary, as_json)
        if not as_json:
            err_console.print(f"parameter-mode run finished: {summary.get('steps')} steps, run directory "
                              f"{summary.get('run_dir')}", highlight=False, markup=False)


def _print_summary(s: dict[str, Any]) -> None:
    from rich.table import Table

    table = Table(title="parameter-mode run", show_header=False)
    r = [x for x in s.get("reward_by_step", []) if x is not None]
    for k, v in [("steps", s.get("steps")), ("model", s.get("model")), ("loss", s.get("loss")),
                 ("reward first → last", f"{r[0]:.3f} → {r[-1]:.3f}" if r else "-"),
                 ("checkpoint", s.get("final_checkpoint")), ("model export", s.get("final_model")),
                 ("metrics", s.get("metrics")), ("wall", f"{s.get('wall_s')} s")]:
        table.add_row(k, str(v))
    err_console.print(table)


def standalone() -> None:
    """``python -m tfgrpo.params``: the grpo command alone, importing nothing of the training-free mode."""
    configure_logging()
    app = typer.Typer(add_completion=False, pretty_exceptions_enable=False, rich_markup_mode=None)
    register(app)
    app(prog_name="python -m tfgrpo.params")
