"""An OpenAI-compatible proxy that adds a pack's experiences to every chat request.

``POST /v1/chat/completions`` (streaming or not): the pack's experiences for the request's
last user message are added to the system message (a new system message when there is none),
and the request goes upstream; the response (status, body, usage, errors; a stream chunk by
chunk) comes back unchanged. Every other path (``GET /v1/models``, embeddings, ...) is
forwarded unchanged; a request target in absolute form (``GET http://host:port/v1/models``) is
forwarded as its path. An agent gets the learned experience by changing its base URL.

Guards: a Host header must be ``localhost``, an IP address or the bound host (a DNS-rebinding
page cannot reach the proxy through a name it controls); with a ``token``, every request needs
``Authorization: Bearer TOKEN`` (which is then not forwarded; ``upstream_key`` is sent
instead); a chat body that is not a JSON object with a list of message objects, or is nested
deeper than ``MAX_JSON_DEPTH``, gets 400; a body over ``max_body`` bytes gets 413 (at once when
its Content-Length says so); upstream reads time out (504 before the response starts); a client
that disconnects cancels its request upstream; retrieval runs in a worker thread, never on the
event loop. Memory per request is a few times its body: the retrieval
query is cut to ``retrieval.MAX_QUERY_CHARS``. A request aiohttp cannot parse (malformed HTTP)
gets its 400 and one log line, not a traceback.

Needs aiohttp (imported here only, not by ``experience_store``).
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import ipaddress
import json
import logging
import signal
from typing import Any, Callable

import aiohttp
from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from yarl import URL

from experience_store.pack import Pack
from experience_store.pack_format import load_json
from experience_store.settings import InjectionSettings

log = logging.getLogger(__name__)

PREAMBLE = (
    "Below are lessons learned from earlier attempts at similar problems. Check which of them apply "
    "and follow those; ignore the ones that do not fit. When a lesson guides your answer, cite its id "
    "in brackets, for example [E3].\n\n<experiences>\n{block}\n</experiences>"
)
# Hop-by-hop headers and those aiohttp sets itself are not copied.
_SKIP = {
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "upgrade",
    "proxy-connection",
    "te",
    "trailer",
}
MAX_JSON_DEPTH = 64
MAX_BODY = 64 << 20  # bytes of a request body; tfgrpo proxy --max-body-mb has the same default
READ_TIMEOUT_S = 600.0  # tfgrpo proxy --upstream-timeout has the same default
WILDCARD = ("", "0.0.0.0", "::")


class BadRequest(Exception):
    """A chat request the proxy cannot inject into; answered with 400."""


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": {"message": f"proxy: {message}", "type": "proxy_error"}}, status=status)


def _too_large(limit: int) -> web.Response:
    return _error(413, f"Maximum request body size {limit / (1 << 20):g} MiB exceeded (tfgrpo proxy --max-body-mb)")


class _ServerLog(logging.LoggerAdapter):
    """aiohttp's server log, where a request it could not parse (malformed HTTP from a client,
    answered 400) is one warning line with the reason instead of an error with a traceback."""

    def exception(self, msg: Any, *args: Any, exc_info: Any = True, **kwargs: Any) -> None:
        if isinstance(exc_info, HttpProcessingError):
            reason = " ".join(str(exc_info.message).split())[:200]
            self.warning(f"{msg}: bad request ({exc_info.code}): %s", *args, reason)
        else:
            super().exception(msg, *args, exc_info=exc_info, **kwargs)


def _target(raw: str) -> tuple[str, str | None]:
    """The path (and query) of a request target as the client encoded it, and the host an
    absolute-form target names (``http://host:port/path``; None for the usual ``/path``)."""
    if raw.startswith("/"):
        return raw, None
    url = URL(raw, encoded=True)
    if not url.absolute or url.scheme not in ("http", "https"):
        raise BadRequest(f"request target {raw[:80]!r} is neither a path nor an http URL")
    query = url.raw_query_string
    return url.raw_path + (f"?{query}" if query else ""), (url.host or "").lower().rstrip(".")


def _hostname(host: str | None) -> str:
    """``name`` of a Host header ``name:port`` / ``[v6]:port``, lower case ("" when malformed)."""
    host = (host or "").strip().lower()
    if host.startswith("["):
        return host[1 : host.index("]")] if "]" in host else ""
    name, _, port = host.rpartition(":")
    return (name if port.isdigit() else host).rstrip(".")


def _is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
        return True
    except ValueError:
        return False


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
    def __init__(
        self,
        pack: Pack,
        upstream: str,
        settings: InjectionSettings | None = None,
        *,
        host: str = "127.0.0.1",
        token: str | None = None,
        upstream_key: str | None = None,
        read_timeout: float = READ_TIMEOUT_S,
        max_body: int = MAX_BODY,
    ):
        """``settings`` default to the pack's (``Pack.injection_settings``); ``host`` is the
        address the proxy is bound to (a name allowed in Host headers); ``max_body`` the largest
        request body accepted, in bytes."""
        self.pack = pack
        self.upstream = upstream.rstrip("/")
        self.settings = settings or pack.injection_settings()
        self.hosts = {"localhost"} | ({_hostname(host)} if host not in WILDCARD else set())
        self.token = token
        self.upstream_key = upstream_key
        self.read_timeout = read_timeout
        self.max_body = max_body
        self._session: aiohttp.ClientSession | None = None

    def app(self) -> web.Application:
        app = web.Application(client_max_size=self.max_body, middlewares=[self._guard])
        app.router.add_route("*", "/{tail:.*}", self.handle)
        app.on_startup.append(self._start)
        app.on_cleanup.append(self._stop)
        return app

    async def _start(self, app: web.Application) -> None:
        if self.settings.mode != "all":
            self.pack.index()  # build the index before the first request
        self._session = aiohttp.ClientSession(
            # no cap on connections to upstream (aiohttp's default 100 queued request 101 behind minutes-long
            # streams, with no timeout on the wait); each client request holds one
            connector=aiohttp.TCPConnector(limit=0),
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=30, sock_read=self.read_timeout),
            auto_decompress=False,
        )

    async def _stop(self, app: web.Application) -> None:
        if self._session is not None:
            await self._session.close()

    @web.middleware
    async def _guard(self, request: web.Request, handler: Callable[[web.Request], Any]) -> web.StreamResponse:
        try:  # an absolute-form target's host stands for the Host header (RFC 9112 3.2.2)
            named = _target(request.raw_path)[1]
        except BadRequest as e:
            return _error(400, str(e))
        name = _hostname(request.headers.get("Host")) if named is None else named
        if name not in self.hosts and not _is_ip(name):
            return _error(
                403, f"Host {name[:80]!r} is not served here (only localhost, IP addresses and the bound host)"
            )
        if self.token is not None:
            given = request.headers.get("Authorization", "").encode("utf-8", "surrogateescape")
            if not hmac.compare_digest(given, f"Bearer {self.token}".encode()):
                return _error(401, "missing or wrong token (Authorization: Bearer TOKEN)")
        return await handler(request)

    def target(self, path: str, query: str) -> str:
        """``/v1/x`` on the proxy is ``<upstream>/x`` (the upstream URL includes its ``/v1``)."""
        rest = path[3:] if path.startswith("/v1/") or path == "/v1" else path
        return f"{self.upstream}{rest}" + (f"?{query}" if query else "")

    def forward_headers(self, request: web.Request) -> dict[str, str]:
        # the body was read decoded (aiohttp undoes Content-Encoding), so it goes on without one
        headers = {
            k: v for k, v in request.headers.items() if k.lower() not in _SKIP and k.lower() != "content-encoding"
        }
        if self.token is not None:  # the client's credential is for the proxy, not for upstream
            headers = {k: v for k, v in headers.items() if k.lower() != "authorization"}
            if self.upstream_key:
                headers["Authorization"] = f"Bearer {self.upstream_key}"
        return headers

    async def handle(self, request: web.Request) -> web.StreamResponse:
        if (request.content_length or 0) > self.max_body:
            return _too_large(self.max_body)
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge:  # a body without a length that ran past the limit
            return _too_large(self.max_body)
        if request.method == "POST" and request.path.rstrip("/").endswith("/chat/completions"):
            try:
                body = await asyncio.get_running_loop().run_in_executor(None, self.rewrite, body)
            except BadRequest as e:
                return _error(400, str(e))
        assert self._session is not None
        try:
            # the path as the client encoded it: decoded, %2F, %3F and %2E%2E would change or leave the upstream path
            path, _, query = _target(request.raw_path)[0].partition("?")  # checked by _guard
            upstream = await self._session.request(
                request.method,
                URL(self.target(path, query), encoded=True),
                data=body if body else None,
                headers=self.forward_headers(request),
                allow_redirects=False,
            )
        except asyncio.TimeoutError:
            return _error(504, f"upstream did not answer within {self.read_timeout:g} s")
        except aiohttp.ClientError as e:
            return _error(502, f"upstream unreachable: {e}")
        async with upstream:
            reply = web.StreamResponse(status=upstream.status, reason=upstream.reason)
            for k, v in upstream.headers.items():
                if k.lower() not in _SKIP:
                    reply.headers.add(k, v)  # repeated headers (Set-Cookie) all go through
            await reply.prepare(request)
            try:
                async for chunk in upstream.content.iter_any():
                    await reply.write(chunk)
            except (asyncio.TimeoutError, aiohttp.ClientError) as e:
                # the status is sent: end the connection so the client sees a cut, not a whole reply
                log.warning("upstream broke off a response: %s", e or type(e).__name__)
                if request.transport is not None:
                    request.transport.close()
                return reply
            await reply.write_eof()
            return reply

    def rewrite(self, body: bytes) -> bytes:
        """The chat request with experiences injected (runs in a worker thread)."""
        try:
            req = load_json(body, MAX_JSON_DEPTH)
        except ValueError as e:  # not JSON or UTF-8, or nested deeper than MAX_JSON_DEPTH
            raise BadRequest(f"the request body is not valid JSON ({str(e)[:120]})") from None
        messages = req.get("messages") if isinstance(req, dict) else None
        if not isinstance(messages, list) or not all(isinstance(m, dict) for m in messages):
            raise BadRequest("'messages' must be a list of message objects")
        users = [m for m in messages if m.get("role") == "user"]
        if not users:
            return body
        injected = self.pack.inject(_text(users[-1].get("content")), self.settings)
        req["messages"] = inject_messages(messages, injected.text)
        log.info("injected %s (%d tokens)", injected.ids, injected.tokens)
        try:  # non-ASCII text as UTF-8, not as 6-byte escapes: the body stays about its size
            return json.dumps(req, ensure_ascii=False).encode()
        except UnicodeEncodeError:  # a lone surrogate (\ud800) in the request: escaped, as it came
            return json.dumps(req).encode()


async def start(proxy: InjectingProxy, host: str, port: int) -> tuple[web.AppRunner, int]:
    """Listen on ``host:port`` (0: a free port); returns the runner and the port bound. Handlers
    are cancelled when their client disconnects (so is the upstream request)."""
    runner = web.AppRunner(
        proxy.app(), handler_cancellation=True, access_log=None, logger=_ServerLog(logging.getLogger("aiohttp.server"))
    )
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    try:
        await site.start()
    except BaseException:
        await runner.cleanup()
        raise
    return runner, int(runner.addresses[0][1])


def serve(
    pack: Pack,
    upstream: str,
    *,
    host: str = "127.0.0.1",
    port: int = 8100,
    settings: InjectionSettings | None = None,
    token: str | None = None,
    upstream_key: str | None = None,
    read_timeout: float = READ_TIMEOUT_S,
    max_body: int = MAX_BODY,
    on_ready: Callable[[str], Any] = print,
) -> None:
    """Run the proxy until interrupted (SIGINT/SIGTERM); ``on_ready`` gets its base URL once it
    listens (with the real port when ``port`` is 0)."""
    proxy = InjectingProxy(
        pack,
        upstream,
        settings,
        host=host,
        token=token,
        upstream_key=upstream_key,
        read_timeout=read_timeout,
        max_body=max_body,
    )

    async def main() -> None:
        runner, bound = await start(proxy, host, port)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError):  # no signal handlers on this platform's loop
                loop.add_signal_handler(sig, stop.set)
        shown = f"[{host}]" if ":" in host else host
        on_ready(f"http://{shown}:{bound}/v1")
        try:
            await stop.wait()
        finally:
            await runner.cleanup()

    asyncio.run(main())
