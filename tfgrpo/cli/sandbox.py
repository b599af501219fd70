"""``tfgrpo sandbox``: run a file in exactly the sandbox the ``python`` tool uses."""

from __future__ import annotations

import json
import math
from pathlib import Path

import typer

from tfgrpo.cli.console import user_errors
from tfgrpo.errors import UserError

# Upper bounds on the options: beyond these a value is a typo, and some would overflow the kernel's limits.
MOST = {
    "--timeout": 86400,
    "--cpu": 86400,
    "--memory-mb": 1 << 22,
    "--processes": 1 << 15,
    "--max-output": 1 << 30,
    "--disk-mb": 1 << 20,
}


def read_code(file: Path, disk_mb: int) -> str:
    """The file's text, or a one-line error saying why it cannot be run."""
    if not file.exists():
        raise UserError(f"file not found: {file}")
    if not file.is_file():
        raise UserError(f"not a regular file: {file}")
    try:
        size = file.stat().st_size
        if size > disk_mb << 20:
            raise UserError(
                f"{file} is {size / 2**20:.1f} MiB, more than the sandbox's disk limit (--disk-mb {disk_mb})"
            )
        return file.read_bytes().decode("utf-8")
    except UnicodeDecodeError as e:
        raise UserError(f"{file} is not UTF-8 text (byte {e.start}): the sandbox runs Python source files") from None
    except OSError as e:
        raise UserError(f"cannot read {file}: {e.strerror or e}") from None


def register(app: typer.Typer) -> None:
    group = typer.Typer(help="The sandbox that runs model-written code (the python tool).", no_args_is_help=True)
    app.add_typer(group, name="sandbox")

    @group.command("run")
    @user_errors
    def run_cmd(
        file: Path = typer.Argument(..., help="Python file to run"),
        timeout: float = typer.Option(10.0, "--timeout", help="Wall-clock seconds"),
        cpu: int = typer.Option(5, "--cpu", help="CPU seconds (per process)"),
        memory_mb: int = typer.Option(1024, "--memory-mb", help="Address-space limit in MiB (per process)"),
        processes: int = typer.Option(32, "--processes", help="Most processes and threads at once"),
        max_output: int = typer.Option(64 * 1024, "--max-output", help="Bytes kept per stream; more stops the run"),
        disk_mb: int = typer.Option(64, "--disk-mb", help="MiB all files of the run may take together"),
    ) -> None:
        """Run FILE.py in the sandbox; print one JSON object: stdout, stderr, exit status, time,
        which limit was hit, and what this machine isolates."""
        from tfgrpo.tools.sandbox import Limits, isolation, run_python_sync

        for name, value in (
            ("--timeout", timeout),
            ("--cpu", cpu),
            ("--memory-mb", memory_mb),
            ("--processes", processes),
            ("--max-output", max_output),
            ("--disk-mb", disk_mb),
        ):
            if not math.isfinite(value) or not 0 < value <= MOST[name]:
                raise UserError(f"{name} must be a number above 0 and at most {MOST[name]}, got {value}")
        code = read_code(file, disk_mb)
        limits = Limits(
            wall_s=timeout,
            cpu_s=cpu,
            memory_mb=memory_mb,
            processes=processes,
            output_bytes=max_output,
            disk_mb=disk_mb,
        )
        result = run_python_sync(code, limits).to_dict()
        result["isolation"] = isolation()
        typer.echo(json.dumps(result))
