"""The ``tfgrpo`` command line. Each command group lives in its own module and only calls the
public API; ``main`` is the console-script entry point."""

from __future__ import annotations

import logging
import os

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import typer  # noqa: E402

app = typer.Typer(
    name="tfgrpo",
    help="Training-free GRPO: improve an LLM agent with a learned experience library instead of weight updates.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _register() -> None:
    from tfgrpo.cli import eval as eval_cli
    from tfgrpo.cli import library as library_cli
    from tfgrpo.cli import pack as pack_cli
    from tfgrpo.cli import proxy as proxy_cli
    from tfgrpo.cli import report as report_cli
    from tfgrpo.cli import runs as runs_cli
    from tfgrpo.cli import sandbox as sandbox_cli
    from tfgrpo.cli import train as train_cli

    train_cli.register(app)
    eval_cli.register(app)
    library_cli.register(app)
    pack_cli.register(app)
    proxy_cli.register(app)
    report_cli.register(app)
    runs_cli.register(app)
    sandbox_cli.register(app)
    try:
        from tfgrpo.cli import serve as serve_cli
    except ImportError:
        return
    serve_cli.register(app)


_register()


def main() -> None:
    logging.basicConfig(level=os.environ.get("TFGRPO_LOG", "WARNING"), format="%(levelname)s %(name)s: %(message)s")
    for noisy in ("LiteLLM", "litellm", "httpx", "chromadb"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    app()
