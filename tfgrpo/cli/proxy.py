"""``tfgrpo proxy``: an OpenAI-compatible endpoint that injects a pack's experiences."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from experience_store import Pack
from tfgrpo.cli.console import err_console, user_errors
from tfgrpo.errors import UserError


def register(app: typer.Typer) -> None:
    @app.command("proxy")
    @user_errors
    def proxy_cmd(
        pack: Path = typer.Option(..., "--pack", help="Experience pack (zip or directory) to inject"),
        upstream: str = typer.Option(..., "--upstream", help="OpenAI-compatible base URL to forward to, with its /v1 (e.g. http://localhost:8000/v1)"),
        port: int = typer.Option(8100, "--port", help="Port to listen on"),
        host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on"),
        injection: Optional[str] = typer.Option(None, "--injection", help="all | retrieve | auto (all while the pack fits the budget); default: the pack's run's, else auto"),
        budget: Optional[int] = typer.Option(None, "--inject-budget", min=1, help="Token budget of the injected experiences (default: the pack's run's, else 1500)"),
        top_k: Optional[int] = typer.Option(None, "--top-k", min=1, help="Experiences retrieved per request (default: the pack's run's, else 8)"),
    ) -> None:
        """Serve an OpenAI-compatible endpoint that adds the pack's experiences (retrieved for the
        last user message) to the system message and forwards everything else unchanged. Point any
        agent's base URL at http://HOST:PORT/v1."""
        if injection is not None and injection not in ("all", "retrieve", "auto"):
            raise UserError(f"unknown --injection '{injection}' (choose all, retrieve or auto)")
        if not upstream.startswith(("http://", "https://")):
            raise UserError(f"--upstream must be an http(s) URL, got {upstream!r}")
        from experience_store.proxy import serve

        loaded = Pack.load(pack)
        settings = loaded.injection_settings()
        injection = injection or settings.mode
        budget = settings.budget_tokens if budget is None else budget
        top_k = settings.top_k if top_k is None else top_k
        err_console.print(f"proxy: {len(loaded.active)} lessons from {pack}, {injection} injection "
                          f"({budget} tokens, top {top_k}), "
                          f"forwarding to {upstream}; base URL http://{host}:{port}/v1")
        try:
            serve(loaded, upstream, host=host, port=port, mode=injection, budget=budget, k=top_k,  # type: ignore[arg-type]
                  print_fn=lambda msg: err_console.print(msg))
        except OSError as e:
            raise UserError(f"cannot listen on {host}:{port}: {e.strerror or e}") from None
