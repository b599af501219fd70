"""``tfgrpo sandbox``: run a file in exactly the sandbox the ``python`` tool uses."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from tfgrpo.cli.console import user_errors
from tfgrpo.errors import UserError


def register(app: typer.Typer) -> None:
    group = typer.Typer(help="The sandbox that runs model-written code (the python tool).", no_args_is_help=True)
    app.add_typer(group, name="sandbox")

    @group.command("run")
    @user_errors
    def run_cmd(
        file: Path = typer.Argument(..., help="Python file to run"),
        timeout: float = typer.Option(10.0, "--timeout", help="Wall-clock seconds"),
        cpu: int = typer.Option(5, "--cpu", help="CPU seconds"),
        memory_mb: int = typer.Option(1024, "--memory-mb", help="Address-space limit in MiB"),
        processes: int = typer.Option(32, "--processes", help="Most processes and threads at once"),
        max_output: int = typer.Option(64 * 1024, "--max-output", help="Bytes kept per stream; more stops the run"),
    ) -> None:
        """Run FILE.py in the sandbox; print one JSON object: stdout, stderr, exit status, time,
        which limit was hit, and what this machine isolates."""
        from tfgrpo.tools.sandbox import Limits, isolation, run_file

        if not file.is_file():
            raise UserError(f"file not found: {file}")
        for name, value in (("--timeout", timeout), ("--cpu", cpu), ("--memory-mb", memory_mb),
                            ("--processes", processes), ("--max-output", max_output)):
            if value <= 0:
                raise UserError(f"{name} must be positive, got {value}")
        limits = Limits(wall_s=timeout, cpu_s=cpu, memory_mb=memory_mb, processes=processes, output_bytes=max_output)
        result = run_file(file, limits).to_dict()
        result["isolation"] = isolation()
        typer.echo(json.dumps(result))
