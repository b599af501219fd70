"""The ``tfgrpo`` command line. Each command group lives in its own module, parses its options,
calls ``tfgrpo.api`` and renders the result; ``main`` is the console-script entry point.
Command modules import only ``console`` and ``options`` of this package."""

from __future__ import annotations

import os

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import typer  # noqa: E402

HELP = "Training-free GRPO: improve an LLM agent with a learned experience library instead of weight updates."


def build_app() -> typer.Typer:
    from tfgrpo.cli import eval as eval_cli
    from tfgrpo.cli import grpo as grpo_cli
    from tfgrpo.cli import library as library_cli
    from tfgrpo.cli import pack as pack_cli
    from tfgrpo.cli import proxy as proxy_cli
    from tfgrpo.cli import report as report_cli
    from tfgrpo.cli import runs as runs_cli
    from tfgrpo.cli import sandbox as sandbox_cli
    from tfgrpo.cli import serve as serve_cli
    from tfgrpo.cli import train as train_cli

    app = typer.Typer(name="tfgrpo", help=HELP, no_args_is_help=True, add_completion=False,
                      pretty_exceptions_enable=False, rich_markup_mode=None)
    for module in (train_cli, eval_cli, grpo_cli, library_cli, pack_cli, proxy_cli, report_cli, runs_cli,
                   sandbox_cli, serve_cli):
        module.register(app)
    return app


def main() -> None:
    from tfgrpo.cli.console import configure_logging

    configure_logging()
    build_app()(prog_name="tfgrpo")
