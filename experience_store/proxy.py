"""An OpenAI-compatible proxy that adds a pack's experiences to every chat request.

``POST /v1/chat/completions`` (streaming or not): the pack's experiences for the request's
last user message are added to the system message (a new system message when there is none),
and the request goes upstream; the response (status, body, usage, errors; a stream chunk by
chunk) comes back unchanged. Every other path (``GET /v1/models``, embeddings, ...) is
forwarded unchanged. An agent gets the learned experience by changing its base URL.

Needs aiohttp (imported here only, not by ``experience_store``).
"""

from __future__ import annotations

import json
import logging
from typing import Any

import aiohttp
from aiohttp import web

from experience_store.pack import Pack
from experience_store.settings import InjectionSettings

log = logging.getLogger(__name__)

PREAMBLE = ("Below are lessons learned from earlier attempts at similar problems. Check which of them apply "
            "and follow those; ignore the ones that do not fit. When a lesson guides your answer, cite its id "
            "in brackets, for example [E3].\n\n<experiences>\n{block}\n</experiences>")
# Hop-by-hop headers and those aiohttp sets itself are not copied.
_SKIP = {"host", "content-length", "transfer-encoding", "connection", "keep-alive", "upgrade",
         "proxy-connection", "te", "trailer"}


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(str(p.get("text", "")) for p in content if isinstance(p, dict) and p.get("type") == "text")
    return ""


def inject_messages(messages: list[dict[str, Any]], block: str) -> list[dict[str, Any]]:
    """``messages`` with ``block`` appended to the first system message (or prepended as one)."""
    if not block:
        return messages
    addition = PREAMBLE.format(block=block)
    out = [dict(m) for m in messages]
    for m in out:
        if m.get("role") in ("system", "developer"):
            content = m.get("content")
            if isinstance(content, list):
                m["content"] = [*content, {"type": "text", "text": addition}]
            else:
                m["content"] = f"{_text(content)}\n\n{addition}".strip()
            return out
    return [{"role": "system", "content": addition}, *out]


class InjectingProxy:
    def __init__(self, pack: Pack, upstream: str, settings: InjectionSettings | None = None):
        """``settings`` default to the pack's (``Pack.injection_settings``)."""
        self.pack = pack
        self.upstream = upstream.rstrip("/")
        self.settings = settings or pack.injection_settings()
        self._session: aiohttp.ClientSession | None = None

    def app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self.handle)
        app.on_startup.append(self._start)
        app.on_cleanup.append(self._stop)
        return app

    async def _start(self, app: web.Application) -> None:
        self.pack.index()  # build the index before the first request
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None, sock_connect=30),
                                              auto_decompress=False)

    async def _stop(self, app: web.Application) -> None:
        if self._session is not None:
            await self._session.close()

    def target(self, path: str, query: str) -> str:
        """``/v1/x`` on the proxy is ``<upstream>/x`` (the upstream URL includes its ``/v1``)."""
        rest = path[3:] if path.startswith("/v1/") or path == "/v1" else path
        return f"{self.upstream}{rest}" + (f"?{query}" if query else "")

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        if request.method == "POST" and request.path.rstrip("/").endswith("/chat/completions"):
            body = self.rewrite(body)
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _SKIP}
        assert self._session is not None
        try:
            upstream = await self._session.request(request.method, self.target(request.path, request.query_string),
                                                   data=body if body else None, headers=headers, allow_redirects=False)
        except aiohttp.ClientError as e:
            return web.json_response({"error": {"message": f"proxy: upstream unreachable: {e}", "type": "proxy_error"}}, status=502)
        async with upstream:
            reply = web.StreamResponse(status=upstream.status, reason=upstream.reason)
            for k, v in upstream.headers.items():
                if k.lower() not in _SKIP:
                    reply.headers[k] = v
            await reply.prepare(request)
            async for chunk in upstream.content.iter_any():
                await reply.write(chunk)
            await reply.write_eof()
            return reply

    def rewrite(self, body: bytes) -> bytes:
        """The request with experiences injected; anything unexpected goes upstream as it came."""
        try:
            req = json.loads(body)
            messages = req["messages"]
            users = [m for m in messages if isinstance(m, dict) and m.get("role") == "user"]
        except (ValueError, KeyError, TypeError):
            return body
        if not users:
            return body
        injected = self.pack.inject(_text(users[-1].get("content")), self.settings)
        req["messages"] = inject_messages(messages, injected.text)
        log.info("injected %s (%d tokens)", injected.ids, injected.tokens)
        return json.dumps(req).encode()


def serve(pack: Pack, upstream: str, *, host: str = "127.0.0.1", port: int = 8100,
          settings: InjectionSettings | None = None, print_fn: Any = print) -> None:
    """Run the proxy until interrupted."""
    proxy = InjectingProxy(pack, upstream, settings)
    web.run_app(proxy.app(), host=host, port=port, print=print_fn, handle_signals=True)
