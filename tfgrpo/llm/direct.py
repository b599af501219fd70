"""Straight to an OpenAI-compatible chat endpoint over HTTP, without litellm in the request path.

vLLM, ``transformers serve`` and providers' own servers (``hosted_vllm/`` models, and ``openai/`` ones on
a local endpoint) speak the OpenAI chat API as it is: there is nothing to translate. litellm's
request path costs about 5 ms of CPU per request (logging objects, provider routing, response
conversion), which on a fast local server caps how many rollouts a client can take in a second
(``bench/rollouts.py`` measures both paths side by side). Here one pooled aiohttp session per
event loop sends the JSON body and returns the reply as a dict; every other provider
(anthropic/, gemini/, bedrock/, ...) still goes through litellm.

Errors come back as exceptions :func:`tfgrpo.llm.retry.classify` understands: an HTTP error
status as :class:`HTTPStatusError` (status, server message and headers, so ``Retry-After`` is
honoured), a refused or dropped connection as :class:`TransportError`, a 200 reply that is not
a chat completion as :class:`BadReply` (retried like a 502), a timeout as
:class:`asyncio.TimeoutError`, a failed TLS handshake as :class:`TLSFailure` (fatal). A redirect
is an error that names where it points (the prompts are not sent on), an error object in a 200
reply an error of its code.
"""

from __future__ import annotations

import asyncio
import functools
import os
import weakref
from collections.abc import Iterable, MutableMapping
from typing import Any, AsyncIterator

import aiohttp
from aiohttp.helpers import get_env_proxy_for_url
from yarl import URL

from tfgrpo.nesting import json_loads

DIRECT_PROVIDERS = ("openai", "hosted_vllm")
MAX_REPLY_BYTES = 64 << 20  # far above any chat reply (64 choices of 32k tokens are ~10 MB)
# per event loop (weakly: a loop that is gone takes its session with it)
_SESSIONS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, aiohttp.ClientSession]] = (
    weakref.WeakKeyDictionary()
)
_HOLDERS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, AsyncIterator[None]] = weakref.WeakKeyDictionary()


def direct_model(model: str, api_base: str | None, *, local: bool) -> str | None:
    """The model name to send when ``model`` can go straight to ``api_base``, else None.
    Straight: ``hosted_vllm/`` models, and ``openai/`` ones on a ``local`` endpoint (this
    machine or network: vLLM, ``transformers serve``, a provider's server). An ``openai/`` model at a
    remote URL may be OpenAI itself, whose models need litellm's parameter translation (o-series:
    ``max_completion_tokens``, no temperature)."""
    provider, sep, name = model.partition("/")
    if not api_base or not sep or provider not in DIRECT_PROVIDERS or not name:
        return None
    return name if provider == "hosted_vllm" or local else None


class HTTPStatusError(Exception):
    """The server answered with an error status."""

    def __init__(self, status: int, message: str, headers: Any = None) -> None:
        super().__init__(f"HTTP {status}: {message}")
        self.status_code = status
        self.headers = headers


class TransportError(ConnectionError):
    """The connection was refused, reset or dropped before a reply came."""


class TLSFailure(Exception):
    """The TLS handshake failed (an untrusted certificate, no common protocol): no retry helps."""

    fatal = True


class BadReply(Exception):
    """A 200 reply that is not a chat completion (not JSON, nested beyond reason, no choices)."""

    status_code = 502


async def chat(base_url: str, body: dict[str, Any], *, api_key: str | None, timeout: float,
               local: bool = False) -> dict[str, Any]:  # fmt: skip
    """POST ``body`` to ``base_url/chat/completions``; the reply as a dict with ``choices``.
    ``local``: a server on this machine or network, reached without the environment's proxy.
    Redirects are not followed (the prompts go to ``base_url`` and nowhere else)."""
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    proxy, proxy_auth = (None, None) if local else _env_proxy(base_url)
    session = await _session()
    try:
        async with session.post(f"{base_url}/chat/completions", json=body, headers=headers, allow_redirects=False,
                                proxy=proxy, proxy_auth=proxy_auth,
                                timeout=aiohttp.ClientTimeout(total=timeout)) as resp:  # fmt: skip
            raw = await _read_bounded(resp.content)
            if 300 <= resp.status < 400:
                where = resp.headers.get("Location", "elsewhere")
                raise HTTPStatusError(
                    resp.status,
                    f"the server redirects to {where}; redirects are not followed: give --api-base that address (without /chat/completions)",
                    resp.headers,
                )
            if resp.status >= 400:
                raise HTTPStatusError(resp.status, _error_message(raw), resp.headers)
    except asyncio.TimeoutError:
        raise asyncio.TimeoutError(f"no reply within {timeout:g}s") from None
    except aiohttp.ClientSSLError as e:  # an untrusted certificate, a TLS handshake that cannot work
        raise TLSFailure(
            f"TLS with {base_url} failed: {getattr(e, 'certificate_error', None) or e}"
            " (a private CA: point SSL_CERT_FILE at its certificate)"
        ) from None
    except aiohttp.ClientConnectorError as e:  # refused, no route, unknown host
        code = getattr(e.os_error, "errno", None)
        raise TransportError(
            f"cannot connect to {e.host}:{e.port} ({os.strerror(code) if code else e.os_error})"
        ) from None
    except aiohttp.ServerDisconnectedError:
        raise TransportError("the server closed the connection without a reply") from None
    except aiohttp.ClientError as e:  # reset, cut off mid-reply
        raise TransportError(f"{type(e).__name__}: {e}") from None
    try:
        reply = json_loads(raw)
    except ValueError:
        raise BadReply(f"reply is not JSON: {raw[:120]!r}") from None
    if isinstance(reply, dict) and not isinstance(reply.get("choices"), list) and reply.get("error"):
        # an error sent with status 200: its code when that is an HTTP status, else taken as a
        # refusal of this request (400; a context overflow is still told by its words)
        err = reply["error"]
        code = err.get("code") if isinstance(err, dict) else None
        status = code if isinstance(code, int) and 400 <= code < 600 else 400
        raise HTTPStatusError(status, _error_message(raw))
    if not isinstance(reply, dict) or not isinstance(reply.get("choices"), list):
        raise BadReply(f"reply has no choices: {raw[:120]!r}")
    return reply


async def _read_bounded(stream: aiohttp.StreamReader) -> bytes:
    """The whole body (decompressed), or BadReply past MAX_REPLY_BYTES without reading further."""
    chunks, size = [], 0
    async for chunk in stream.iter_any():
        size += len(chunk)
        if size > MAX_REPLY_BYTES:
            raise BadReply(f"reply over {MAX_REPLY_BYTES >> 20} MB")
        chunks.append(chunk)
    return b"".join(chunks)


@functools.lru_cache(maxsize=64)
def _env_proxy(base_url: str) -> tuple[str | None, aiohttp.BasicAuth | None]:
    """The environment's proxy for ``base_url`` (HTTP(S)_PROXY, NO_PROXY), looked up once per URL.
    Only the proxy: the session does not read the environment itself (``trust_env``), since that
    also reads ``.netrc`` and aiohttp refuses a netrc login beside our Authorization header."""
    try:
        proxy, auth = get_env_proxy_for_url(URL(base_url))
    except LookupError:
        return None, None
    return str(proxy), auth


PROXY_VARS = ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")


def bypass_env_proxy(urls: Iterable[str], env: MutableMapping[str, str] | None = None) -> None:
    """Local endpoints (this machine or network) never go through the environment's proxy, also
    where litellm sends the request (its httpx and aiohttp clients read ``HTTP_PROXY`` and
    ``ALL_PROXY`` themselves) or an agent program we start does: when a proxy variable is set in
    ``env`` (default: ours), the URLs' hosts are added to its ``NO_PROXY`` and ``no_proxy``."""
    env = os.environ if env is None else env
    if not any(env.get(var) for var in PROXY_VARS):
        return
    hosts = [URL(u).host for u in urls if u]
    for var in ("NO_PROXY", "no_proxy"):
        have = [h.strip() for h in env.get(var, "").split(",") if h.strip()]
        add = [h for h in dict.fromkeys(hosts) if h and h not in have]
        if add:
            env[var] = ",".join(have + add)


def _error_message(raw: bytes) -> str:
    """The server's own words: OpenAI's ``{"error": {"message"}}``, FastAPI's ``detail``, or the text."""
    try:
        data = json_loads(raw)
    except ValueError:
        return raw[:300].decode("utf-8", "replace").strip() or "(empty body)"
    if isinstance(data, dict):
        err = data.get("error")
        if isinstance(err, dict) and err.get("message"):
            return str(err["message"])[:300]
        for key in ("error", "detail", "message"):
            if isinstance(data.get(key), str):
                return data[key][:300]
    return str(data)[:300]


async def _session() -> aiohttp.ClientSession:
    """The pooled session of the running event loop. Sessions are closed when the loop shuts
    down: a suspended async generator holds them, and ``asyncio.run`` closes every async
    generator still alive at its end (``loop.shutdown_asyncgens``)."""
    loop = asyncio.get_running_loop()
    sessions = _SESSIONS.get(loop)
    if sessions is None:
        sessions = _SESSIONS[loop] = {}
        holder = _hold(sessions)
        await holder.__anext__()
        _HOLDERS[loop] = holder
    session = sessions.get("pool")
    if session is None or session.closed:
        session = sessions["pool"] = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0), trust_env=False)
    return session


async def _hold(sessions: dict[str, aiohttp.ClientSession]) -> AsyncIterator[None]:
    try:
        yield
    finally:
        loop = asyncio.get_running_loop()
        if _SESSIONS.get(loop) is sessions:
            del _SESSIONS[loop]
            _HOLDERS.pop(loop, None)
        for session in sessions.values():
            await session.close()
