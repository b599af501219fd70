"""``tfgrpo eval``: Mean@k and Pass@k, baseline vs library, on the same problems and seeds."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any, Optional

import typer

from experience_store import Library
from tfgrpo.cli.console import emit, err_console, eval_table, user_errors
from tfgrpo.cli.options import apply_flags, collect, with_generated_options
from tfgrpo.cli.train import build_task
from tfgrpo.training_free.config import EvalConfig, RunConfig, build, load_run_config, load_yaml
from tfgrpo.errors import UserError
from tfgrpo.training_free.evaluate import LATEST_EVAL, compare, save, selected_step
from tfgrpo.llm.endpoints import open_models
from tfgrpo.training_free.prompting import Prompts
from tfgrpo.training_free.rollout import injector
from tfgrpo.training_free.split import split_task

SPECS = collect(EvalConfig)


def library_dir(path: Path) -> Path:
    """A run directory (holding library/) or a library directory (holding versions/)."""
    if (path / "library" / "versions").is_dir():
        return path / "library"
    if (path / "versions").is_dir():
        return path
    raise UserError(f"no experience library in {path} (expected a run directory or its library/ folder)")


def check_task(lib: Library, task_name: str, where: Path) -> None:
    """A library learned on another task is a user error, not a silent comparison."""
    learned = sorted({e.provenance.task for e in lib.experiences if e.provenance.task} - {task_name})
    if learned:
        raise UserError(f"the library in {where} was learned on task {', '.join(map(repr, learned))}, not {task_name!r} "
                        "(pass the matching --task)")


def evaluate_library(cfg: EvalConfig, library: Path, *, step: int | None = None, name: str | None = None,
                     save_dir: Path | None = None, quiet: bool = False) -> dict[str, Any]:
    """Baseline vs library on the same problems and seeds; results saved under eval/NAME/ (and,
    for a run directory, its latest summary as eval.json). Returns the summary."""
    n = cfg.n or cfg.k
    if cfg.k > n:
        raise UserError(f"-k {cfg.k} is larger than -n {n}: sample at least k answers per problem")
    lib_dir = library_dir(library)
    run_dir = lib_dir.parent if lib_dir.name == "library" and (lib_dir.parent / "config.yaml").is_file() else None
    if step is None and run_dir is not None:
        step = selected_step(run_dir)
    lib = Library(lib_dir, at_step=step)
    if step is not None and step not in lib.versions():
        have = lib.versions()
        span = f"steps {have[0]} to {have[-1]}" if have else "no versions"
        raise UserError(f"no library version for step {step} in {library} (it has {span})")
    task = build_task(cfg.task, cfg.task_args, cfg.data)
    check_task(lib, task.name, library)
    # Inject, and run tool-calling agents, as the run that learned the library did.
    run_cfg = load_run_config(run_dir) if run_dir is not None else RunConfig()
    # By default the run's own split, so a run's training problems are never scored as test ones.
    split = cfg.split if cfg.split.fractions else run_cfg.split
    part = cfg.eval_on if split.fractions else "test"
    samples = split_task(task, split.fractions, split.seed).part(part)
    samples = samples[: cfg.limit] if cfg.limit else samples
    seeds = [cfg.seed + i for i in range(cfg.seeds)]
    from rich.progress import Progress

    with open_models(cfg.policy, sim_seed=cfg.sim_seed, cache_path=Path(cfg.cache_path) if cfg.cache_path else None) as models:
        with Progress(console=err_console, disable=quiet) as progress:
            bar = progress.add_task("evaluating baseline + library", total=2 * len(samples) * len(seeds))
            report = asyncio.run(compare(
                models.policy, task, samples, injector(lib, run_cfg.library, models.policy_name),
                Prompts(cfg.prompts_dir), k=cfg.k, n=n, seeds=seeds, temperature=cfg.policy.temperature,
                max_tokens=cfg.policy.max_tokens, agent=run_cfg.agent, on_advance=lambda: progress.advance(bar),
            ))
    summary = report.summary
    used_step = lib.state.step
    summary.update(split=part, library_size=len(lib), library_path=str(lib.path), library_step=used_step,
                   usage=models.usage.to_dict())
    name = name or f"{part}-k{cfg.k}-n{n}-step{used_step}"
    root = save_dir or run_dir or Path(".")
    dest = root / "eval" / name
    summary["saved"] = str(dest)
    save(report, dest)
    if root == run_dir:  # the run's latest eval, where `tfgrpo pack export` looks for the manifest's eval
        (run_dir / LATEST_EVAL).write_text(json.dumps(summary, indent=1))
    return summary


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
        cfg = build(EvalConfig, apply_flags(load_yaml(config) if config else {}, flags, SPECS, EvalConfig))
        summary = evaluate_library(cfg, library, step=step, name=name, save_dir=save_dir, quiet=quiet)
        emit([eval_table(summary)], summary, as_json)
