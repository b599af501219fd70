"""``tfgrpo proxy``: an OpenAI-compatible endpoint that injects a pack's experiences."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from experience_store import InjectionSettings, Pack
from experience_store.settings import MODES
from tfgrpo.cli.console import err_console, user_errors
from tfgrpo.errors import UserError


def _default(name: str) -> object:
    return InjectionSettings.model_fields[name].default


def register(app: typer.Typer) -> None:
    @app.command("proxy")
    @user_errors
    def proxy_cmd(
        pack: Path = typer.Option(..., "--pack", help="Experience pack (zip or directory) to inject"),
        upstream: str = typer.Option(..., "--upstream", help="OpenAI-compatible base URL to forward to, with its /v1 (e.g. http://localhost:8000/v1)"),
        port: int = typer.Option(8100, "--port", help="Port to listen on"),
        host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on"),
        injection: Optional[str] = typer.Option(None, "--injection", help=f"{' | '.join(MODES)}; default: the pack's run's, else {_default('mode')}"),
        budget: Optional[int] = typer.Option(None, "--inject-budget", min=1, help=f"Token budget of the injected experiences (default: the pack's run's, else {_default('budget_tokens')})"),
        top_k: Optional[int] = typer.Option(None, "--top-k", min=1, help=f"Experiences retrieved per request (default: the pack's run's, else {_default('top_k')})"),
    ) -> None:
        """Serve an OpenAI-compatible endpoint that adds the pack's experiences (retrieved for the
        last user message) to the system message and forwards everything else unchanged. Point any
        agent's base URL at http://HOST:PORT/v1."""
        if injection is not None and injection not in MODES:
            raise UserError(f"unknown --injection '{injection}' (choose {', '.join(MODES)})")
        if not upstream.startswith(("http://", "https://")):
            raise UserError(f"--upstream must be an http(s) URL, got {upstream!r}")
        from experience_store.proxy import serve

        loaded = Pack.load(pack)
        given = {"mode": injection, "budget_tokens": budget, "top_k": top_k}  # checked above and by typer
        settings = loaded.injection_settings().model_copy(update={k: v for k, v in given.items() if v is not None})
        err_console.print(f"proxy: {len(loaded.active)} lessons from {pack}, {settings.mode} injection "
                          f"({settings.budget_tokens} tokens, top {settings.top_k}), "
                          f"forwarding to {upstream}; base URL http://{host}:{port}/v1")
        try:
            serve(loaded, upstream, host=host, port=port, settings=settings,
                  print_fn=lambda msg: err_console.print(msg))
        except OSError as e:
            raise UserError(f"cannot listen on {host}:{port}: {e.strerror or e}") from None
