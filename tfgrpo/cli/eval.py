"""``tfgrpo eval``: Mean@k and Pass@k, baseline vs library, on the same problems and seeds."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any, Optional

import typer

from experience_store import Library
from tfgrpo.cli.console import emit, err_console, eval_table, user_errors
from tfgrpo.cli.options import apply_flags, collect, with_generated_options
from tfgrpo.cli.train import build_task
from tfgrpo.config import EvalConfig, build, load_yaml
from tfgrpo.errors import UserError
from tfgrpo.evaluate import compare
from tfgrpo.llm.endpoints import open_models
from tfgrpo.prompting import Prompts

SPECS = collect(EvalConfig)


def library_dir(path: Path) -> Path:
    """A run directory (holding library/) or a library directory (holding versions/)."""
    if (path / "library" / "versions").is_dir():
        return path / "library"
    if (path / "versions").is_dir():
        return path
    raise UserError(f"no experience library in {path} (expected a run directory or its library/ folder)")


def register(app: typer.Typer) -> None:
    @app.command("eval")
    @with_generated_options(SPECS)
    @user_errors
    def eval_cmd(
        flags: dict[str, Any],
        library: Path = typer.Option(..., "--library", "-l", help="Run directory (or its library/ folder) whose experiences to inject"),
        step: Optional[int] = typer.Option(None, "--step", help="Use the library as it was after this step (default: latest)"),
        config: Optional[Path] = typer.Option(None, "--config", "-c", help="YAML file with settings (flags override it)"),
        as_json: bool = typer.Option(False, "--json", help="Print one JSON object as the last stdout line"),
        quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar"),
    ) -> None:
        """Evaluate the policy without and with a learned library: Mean@k and Pass@k side by side."""
        cfg = build(EvalConfig, apply_flags(load_yaml(config) if config else {}, flags, SPECS, EvalConfig))
        lib = Library(library_dir(library), at_step=step)
        if step is not None and step not in lib.versions():
            have = lib.versions()
            span = f"steps {have[0]} to {have[-1]}" if have else "no versions"
            raise UserError(f"no library version for step {step} in {library} (it has {span})")
        task = build_task(cfg.task, cfg.task_args, cfg.data)
        samples = task.eval_samples()[: cfg.limit] if cfg.limit else task.eval_samples()
        from rich.progress import Progress

        with open_models(cfg.policy, sim_seed=cfg.sim_seed, cache_path=Path(cfg.cache_path) if cfg.cache_path else None) as models:
            with Progress(console=err_console, disable=quiet) as progress:
                bar = progress.add_task("evaluating baseline + library", total=2 * len(samples))
                report = asyncio.run(compare(
                    models.policy, task, samples, lib.render(), Prompts(cfg.prompts_dir), k=cfg.k, seed=cfg.seed,
                    temperature=cfg.policy.temperature, max_tokens=cfg.policy.max_tokens,
                    on_advance=lambda: progress.advance(bar),
                ))
        report["library_size"] = len(lib)
        report["library_path"] = str(lib.path)
        report["usage"] = models.usage.to_dict()
        emit([eval_table(report)], report, as_json)
