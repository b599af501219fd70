"""What to do when a request fails: classify the error (retry, fail this request, stop the run),
how long to wait (exponential backoff with full jitter, or the server's ``Retry-After``), and how
many requests to keep in flight (:class:`AdaptiveLimit`, which halves on timeouts so a slow
server is not stormed and grows back as answers come)."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import ipaddress
import logging
import random
import re
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from tfgrpo.llm.direct import TransportError
from tfgrpo.llm.usage import server_number

log = logging.getLogger(__name__)

RETRYABLE_STATUS = {408, 409, 429, 500, 502, 503, 504, 520, 522, 524, 529}


@dataclass
class RetryPolicy:
    max_retries: int = 6
    base_delay: float = 1.0
    max_delay: float = 60.0

    def delay(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return min(retry_after, self.max_delay)  # already finite and non-negative
        cap = min(self.max_delay, self.base_delay * (2 ** min(attempt, 30)))
        return random.uniform(cap / 2, cap)  # jitter so a crowd of clients does not retry in step


class AdaptiveLimit:
    """At most ``limit`` requests in flight. A timeout halves the limit (once per ``cooldown``
    seconds, never below 1): the server is slower than we thought, and sending more only queues
    more work on it. Each ``limit`` answers in a row raise it by one, up to ``ceiling``."""

    def __init__(self, ceiling: int, cooldown: float = 5.0, name: str = "") -> None:
        self.ceiling = max(1, int(ceiling))
        self.limit = self.ceiling
        self.cooldown = cooldown
        self.name = name
        self.in_flight = 0
        self._streak = 0
        self._last_cut = -float("inf")
        # First come, first served. A slot is handed to a waiter by the one who frees it
        # (in_flight counted for the waiter before it wakes), so a waiter cancelled after its
        # wake-up gives its slot back and none is lost; releasing never awaits, so a
        # cancellation during release cannot leak a slot either.
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()

    async def __aenter__(self) -> None:
        if self.in_flight < self.limit and not self._waiters:
            self.in_flight += 1
            return
        granted = asyncio.get_running_loop().create_future()
        self._waiters.append(granted)
        try:
            await granted
        except asyncio.CancelledError:
            if granted.done() and not granted.cancelled():
                self._release()  # the slot came, then the cancellation: pass it on
            else:
                with contextlib.suppress(ValueError):
                    self._waiters.remove(granted)
            raise

    async def __aexit__(self, *exc: Any) -> None:
        self._release()

    def _release(self) -> None:
        self.in_flight -= 1
        self._wake()

    def _wake(self) -> None:
        while self._waiters and self.in_flight < self.limit:
            granted = self._waiters.popleft()
            if not granted.done():
                self.in_flight += 1
                granted.set_result(None)

    def answered(self) -> None:
        self._streak += 1
        if self.limit < self.ceiling and self._streak >= self.limit:
            self._streak = 0
            self.limit += 1
            self._wake()

    def timed_out(self) -> None:
        self._streak = 0
        now = time.monotonic()
        if self.limit > 1 and now - self._last_cut >= self.cooldown:
            self._last_cut = now
            self.limit = max(1, self.limit // 2)
            log.warning("%s: requests time out; at most %d in flight from now on", self.name or "endpoint", self.limit)


def is_local(api_base: str | None) -> bool:
    """A server on this machine or the local network (a slow CPU server, a vLLM box)."""
    if not api_base:
        return False
    host = (urlsplit(api_base).hostname or "").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return False
    return ip.is_loopback or ip.is_private or ip.is_unspecified


def status_of(e: Exception) -> int | None:
    code = getattr(e, "status_code", None)
    if isinstance(code, int):
        return code
    resp = getattr(e, "response", None)
    code = getattr(resp, "status_code", None)
    return code if isinstance(code, int) else None


_CREDENTIALS = re.compile(
    r"missing credentials|api[_ ]key (must be set|is missing|not (set|found))|no api key", re.IGNORECASE
)
_PREFIX = re.compile(r"^\s*(litellm\.)?\w*(Error|Exception)\s*[:-]\s*")


def refused(e: Exception) -> bool:
    """The connection failed (refused, reset, dropped): the replica is likely down."""
    import litellm

    return isinstance(e, (litellm.APIConnectionError, TransportError))


def is_timeout(e: Exception) -> bool:
    import litellm

    return isinstance(e, (asyncio.TimeoutError, litellm.Timeout))


_FORMAT = re.compile(r"response_format|json_schema|json schema|structured output", re.IGNORECASE)


def rejects_format(error: str | None) -> bool:
    """A failed request's error that names the response format (the server refuses it)."""
    return bool(error) and bool(_FORMAT.search(error or ""))


def classify(e: Exception) -> str:
    """'retry' (transient), 'request' (this request is bad), or 'fatal' (no request can succeed)."""
    import litellm

    if getattr(e, "fatal", False):
        return "fatal"  # e.g. an untrusted TLS certificate
    if rejects_format(str(e)):
        return "request"  # a server refusing the response_format (even with a 500): sent again without it
    if _CREDENTIALS.search(str(e)):
        return "fatal"  # litellm reports a missing key as a server error; retrying cannot help

    if isinstance(e, (asyncio.TimeoutError, litellm.Timeout, litellm.APIConnectionError)):
        return "retry"
    if isinstance(e, (litellm.RateLimitError, litellm.ServiceUnavailableError, litellm.InternalServerError)):
        return "retry"
    if isinstance(e, (litellm.AuthenticationError, litellm.PermissionDeniedError, litellm.NotFoundError)):
        return "fatal"
    status = status_of(e)
    if status in (401, 403, 404) or (status is not None and 300 <= status < 400):
        return "fatal"  # bad key, no access, no such model or path, a redirect: every request would fail the same way
    if status is not None and (status in RETRYABLE_STATUS or status >= 500):
        return "retry"
    if status is None and isinstance(e, (OSError, ConnectionError)):
        return "retry"
    return "request"


# Prefix of a failed completion's error when the prompt did not fit the model's context, so a
# caller can handle it (the judge summarises and retries) instead of taking it for a bad request.
CONTEXT_OVERFLOW = "context_overflow"
_OVERFLOW = re.compile(
    r"context[_ ](length|window)|maximum context|too many tokens|prompt is too long|exceeds the context", re.IGNORECASE
)


def overflows(e: Exception) -> bool:
    """The prompt did not fit the model's context (litellm's class, or the backend's words)."""
    import litellm

    return isinstance(e, litellm.ContextWindowExceededError) or bool(_OVERFLOW.search(str(e)))


def failure_text(e: Exception) -> str:
    """A failed request's error as recorded on its completions: ``short(e)``, prefixed with
    CONTEXT_OVERFLOW when the prompt did not fit."""
    return f"{CONTEXT_OVERFLOW}: {short(e)}" if overflows(e) else short(e)


def retry_after(e: Exception, upper: float = 3600.0) -> float | None:
    """The server's ``Retry-After`` in seconds: finite, non-negative and at most ``upper``, or
    None (absent, an HTTP date, nan, negative or garbage: our own backoff applies)."""
    headers: Any = getattr(e, "headers", None) or getattr(e, "litellm_response_headers", None)
    if not headers:
        headers = getattr(getattr(e, "response", None), "headers", None)
    if not headers:
        return None
    try:
        value = headers.get("retry-after") or headers.get("Retry-After")
    except AttributeError:
        return None
    return server_number(value, upper=upper, default=None)


_TRACEBACK = "Traceback (most recent call last):"


def _without_traceback(text: str) -> str:
    """A message that carries a Python traceback (litellm's "Invalid response object Traceback
    (most recent call last): ...") as its words and the traceback's last line only."""
    head, found, tail = text.partition(_TRACEBACK)
    if not found:
        return text
    lines = tail.split("\n\n", 1)[0].splitlines()
    last = next((line.strip() for line in reversed(lines) if line.strip() and not line.startswith(" ")), "")
    return f"{head.strip()} ({last})" if last else head.strip()


def short(e: Exception) -> str:
    """``RateLimitError: <message>``, without the chain of prefixes litellm stacks up, nor a
    traceback litellm put in the message."""
    text = _without_traceback(str(e).strip())
    msg = text.splitlines()[0] if text else ""
    while True:
        trimmed = _PREFIX.sub("", msg, count=1)
        if trimmed == msg:
            break
        msg = trimmed
    return f"{type(e).__name__}: {msg[:300]}"
