"""``tfgrpo proxy``: an OpenAI-compatible endpoint that injects a pack's experiences."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import typer

from experience_store import InjectionSettings, Pack
from experience_store.settings import MODES
from tfgrpo.cli.console import err_console, in_use_hint, plain, user_errors
from tfgrpo.errors import UserError


def _default(name: str) -> object:
    return InjectionSettings.model_fields[name].default


def register(app: typer.Typer) -> None:
    @app.command("proxy")
    @user_errors
    def proxy_cmd(
        pack: Path = typer.Option(..., "--pack", help="Experience pack (zip or directory) to inject"),
        upstream: str = typer.Option(
            ...,
            "--upstream",
            help="OpenAI-compatible base URL to forward to, with its /v1 (e.g. http://localhost:8000/v1)",
        ),
        port: int = typer.Option(
            8100, "--port", min=0, max=65535, help="Port to listen on (0: a free one, printed when listening)"
        ),
        host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on"),
        token: Optional[str] = typer.Option(
            None,
            "--token",
            envvar="TFGRPO_PROXY_TOKEN",
            show_envvar=True,
            help="Require 'Authorization: Bearer TOKEN' (the agent's API key) on every request; better given by the environment variable",
        ),
        upstream_key_env: Optional[str] = typer.Option(
            None,
            "--upstream-key-env",
            help="With --token: environment variable holding the upstream's API key (the client's is not forwarded)",
        ),
        upstream_timeout: float = typer.Option(
            600.0,
            "--upstream-timeout",
            min=1,
            help="Seconds to wait for upstream data before answering 504 (or cutting a stream)",
        ),
        max_body_mb: int = typer.Option(
            64, "--max-body-mb", min=1, help="Largest request body accepted, in MiB (413 beyond it)"
        ),
        injection: Optional[str] = typer.Option(
            None, "--injection", help=f"{' | '.join(MODES)}; default: the pack's run's, else {_default('mode')}"
        ),
        budget: Optional[int] = typer.Option(
            None,
            "--inject-budget",
            min=1,
            help=f"Token budget of the injected experiences (default: the pack's run's, else {_default('budget_tokens')})",
        ),
        top_k: Optional[int] = typer.Option(
            None,
            "--top-k",
            min=1,
            help=f"Experiences retrieved per request (default: the pack's run's, else {_default('top_k')})",
        ),
        trust_embedding: bool = typer.Option(
            False,
            "--trust-embedding",
            help="Use the pack's own embedder when it is not "
            "the offline lexical or e5 ones (its model name chooses where queries are sent)",
        ),
    ) -> None:
        """Serve an OpenAI-compatible endpoint that adds the pack's experiences (retrieved for the
        last user message) to the system message and forwards everything else unchanged. Point any
        agent's base URL at http://HOST:PORT/v1."""
        if not 0 <= port < 65536:
            raise UserError(f"--port {port}: a port is 1 to 65535 (0: a free one)")
        if injection is not None and injection not in MODES:
            raise UserError(f"unknown --injection '{injection}' (choose {', '.join(MODES)})")
        if not upstream.startswith(("http://", "https://")):
            raise UserError(f"--upstream must be an http(s) URL, got {upstream!r}")
        from experience_store.proxy import serve  # aiohttp only for this command

        loaded = Pack.load(pack, trust_embedding=trust_embedding)
        if not loaded.active:
            err_console.print(plain(f"warning: {pack} holds no lessons: requests are forwarded unchanged"),
                              highlight=False, soft_wrap=True)  # fmt: skip
        given = {"mode": injection, "budget_tokens": budget, "top_k": top_k}  # checked above and by typer
        settings = loaded.injection_settings().model_copy(update={k: v for k, v in given.items() if v is not None})
        loaded.check_embedding(
            settings
        )  # before listening: retrieval embeds every user message with the pack's embedder
        token = token or None  # an empty TFGRPO_PROXY_TOKEN is no token
        upstream_key = None
        if upstream_key_env:
            upstream_key = os.environ.get(upstream_key_env)
            if not upstream_key:
                raise UserError(f"--upstream-key-env {upstream_key_env}: that environment variable is not set")
            if token is None:
                raise UserError("--upstream-key-env needs --token (without one, the client's own key goes upstream)")
        if token is None and host not in ("127.0.0.1", "localhost", "::1"):
            err_console.print(
                plain(f"warning: listening on {host} without --token: anyone who can reach it can use {upstream}")
            )
        err_console.print(
            plain(
                f"proxy: {len(loaded.active)} lessons from {pack}, {settings.mode} injection "
                f"({settings.budget_tokens} tokens, top {settings.top_k}), forwarding to {upstream}"
                + (", token required" if token else "")
            )
        )
        try:
            serve(
                loaded,
                upstream,
                host=host,
                port=port,
                settings=settings,
                token=token,
                upstream_key=upstream_key,
                read_timeout=upstream_timeout,
                max_body=max_body_mb << 20,
                on_ready=lambda url: err_console.print(plain(f"proxy: listening; base URL {url}")),
            )
        except OSError as e:
            raise UserError(f"cannot listen on {host}:{port}: {e.strerror or e}{in_use_hint(e)}") from None
