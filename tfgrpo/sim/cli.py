"""The simulator's commands (entry point ``tfgrpo.commands: sim``): ``tfgrpo demo`` trains on the
built-in demo task with the simulated model and evaluates it; ``tfgrpo sim-server`` runs the
simulated model alone."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Optional

import typer

from tfgrpo.cli.console import (
    block_until_interrupted,
    duration,
    emit,
    eval_table,
    fail,
    in_use_hint,
    progress_hooks,
    train_tables,
    user_errors,
)
from tfgrpo.cli.train import run_training
from tfgrpo.training_free.config import EvalConfig, RunConfig


def sim_server(
    port: int = typer.Option(0, min=0, max=65535, help="Port (0: a free one)."),
    host: str = typer.Option("127.0.0.1", help="Interface to bind."),
    seed: int = typer.Option(0, help="Seed: same seed, same answers."),
) -> None:
    """Run the SIMULATED model (not a real LLM) for demos and tests, until Ctrl-C.

    An OpenAI-compatible server whose policy answers the `demo` task's problems (better when its context names the problem's skill) and whose judge fills the requested JSON schema.
    """
    from tfgrpo.sim import start_sim_server

    try:
        server = start_sim_server(seed=seed, host=host, port=port)
    except OSError as e:
        raise fail(f"cannot bind {host}:{port}: {e}{in_use_hint(e)}") from None
    started = time.monotonic()
    typer.echo("models: sim-policy, sim-judge (any OpenAI-compatible client, any API key; Ctrl-C to stop)")
    typer.echo(
        f"try: OPENAI_API_KEY=sim tfgrpo train --task demo --model openai/sim-policy-s{seed} --api-base "
        f"{server.base_url} --judge openai/sim-judge-s{seed} --judge-api-base {server.base_url}"
    )
    typer.echo(f"SIMULATED model (not a real LLM) at {server.base_url}")
    block_until_interrupted(lambda: True)
    server.stop()
    r = server.stats.requests
    typer.echo(
        f"stopped sim server after {duration(time.monotonic() - started)}: {r['policy']} policy and {r['judge']} judge "
        f"requests, {server.stats.completions} completions"
    )


def register(app: typer.Typer) -> None:
    """Add ``demo`` and ``sim-server`` to the CLI app."""
    app.command("sim-server")(sim_server)

    @app.command("demo")
    @user_errors
    def demo_cmd(
        out: Optional[Path] = typer.Option(None, "--out", "-o", help="Run directory (default: runs/demo-<time>)"),
        epochs: int = typer.Option(2, "--epochs", min=1, help="Passes over the demo training set"),
        k: int = typer.Option(
            4, "-k", min=1, max=4, help="Pass@k and Mean@k over the 4 answers per problem of the evaluation"
        ),
        as_json: bool = typer.Option(False, "--json", help="Print one JSON summary object as the last stdout line"),
        quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars"),
    ) -> None:
        """Offline demo: train on the built-in demo task with the SIMULATED model, then evaluate
        baseline vs learned library (and a placebo arm: the same prompt with neutral lessons). No
        network, no API key, a couple of minutes on a laptop."""
        from tfgrpo import api

        cfg = RunConfig(task="demo", epochs=epochs, batch_size=8, sampling={"group_size": 4}, policy={"model": "sim"})
        result = run_training(cfg, out, False, quiet)
        with progress_hooks(not quiet) as hooks:
            report = api.evaluate(
                EvalConfig(task="demo", k=k, placebo=True, sampling={"seed": cfg.sampling.seed}),
                result.run_dir,
                name="demo",
                hooks=hooks,
            ).summary
        summary = result.summary()
        summary["eval"] = report
        emit([*train_tables(summary, result.steps), eval_table(report)], summary, as_json)
