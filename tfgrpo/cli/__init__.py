"""The ``tfgrpo`` command line. Each command group lives in its own module, parses its options,
calls ``tfgrpo.api`` and renders the result; ``main`` is the console-script entry point.
Command modules import only ``console`` and ``options`` of this package."""

from __future__ import annotations

import contextlib
import os
from typing import Any, Iterator

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import typer  # noqa: E402
from typer.core import TyperGroup  # noqa: E402

try:  # newer typer carries its own copy of click
    from typer._click.exceptions import ClickException, NoArgsIsHelpError, UsageError
except ImportError:  # pragma: no cover - typer on the click package
    from click.exceptions import ClickException, NoArgsIsHelpError, UsageError

HELP = "Training-free GRPO: improve an LLM agent with a learned experience library instead of weight updates."


class OneLineUsageError(ClickException):
    """A bad flag value, a missing option or argument, an unknown option: one line, exit 2."""

    exit_code = 2

    def show(self, file: Any = None) -> None:
        from tfgrpo.cli.console import fail

        fail(self.message)


@contextlib.contextmanager
def _one_line() -> Iterator[None]:
    try:
        yield
    except NoArgsIsHelpError:
        raise  # a bare group prints its help
    except UsageError as e:
        where = f" (see: {e.ctx.command_path} --help)" if e.ctx is not None else ""
        raise OneLineUsageError(e.format_message() + where) from None


class Commands(TyperGroup):
    """The command tree; usage errors of every command end in one line like all other errors."""

    def make_context(self, *args: Any, **kwargs: Any) -> Any:
        with _one_line():
            return super().make_context(*args, **kwargs)

    def invoke(self, ctx: Any) -> Any:
        with _one_line():
            return super().invoke(ctx)


def build_app() -> typer.Typer:
    from importlib.metadata import entry_points

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

    from tfgrpo.task_registry import builtin_task_names

    app = typer.Typer(
        name="tfgrpo",
        help=f"{HELP} Built-in tasks: {', '.join(builtin_task_names())}.",
        no_args_is_help=True,
        add_completion=False,
        pretty_exceptions_enable=False,
        rich_markup_mode=None,
    )

    @app.callback()
    def root(
        version: bool = typer.Option(
            False, "--version", help="Print the version and exit", is_eager=True, callback=_print_version
        ),
        verbose: bool = typer.Option(
            False,
            "--verbose",
            "-v",
            help="Log what the toolkit does (INFO); TFGRPO_LOG=DEBUG in the environment logs more",
        ),
    ) -> None:
        if verbose:
            import logging

            logging.getLogger().setLevel(logging.INFO)
            logging.getLogger("tfgrpo").setLevel(logging.INFO)

    for module in (
        train_cli,
        eval_cli,
        grpo_cli,
        library_cli,
        pack_cli,
        proxy_cli,
        report_cli,
        runs_cli,
        sandbox_cli,
        serve_cli,
    ):
        module.register(app)
    for plugin in entry_points(group="tfgrpo.commands"):  # command groups of plugins (pyproject.toml)
        plugin.load()(app)
    app.info.cls = Commands
    return app


def _print_version(value: bool) -> None:
    if value:
        from tfgrpo.version import __version__

        typer.echo(f"tfgrpo {__version__}")
        raise typer.Exit()


def main() -> None:
    from tfgrpo.cli.console import configure_logging

    configure_logging()
    build_app()(prog_name="tfgrpo")
