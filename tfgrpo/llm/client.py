"""One async client for every model: litellm for any provider, the OpenAI-compatible path for
vLLM and the simulated model.

* ``n=G`` in one request where the backend supports it, else G requests.
* Bounded concurrency (a semaphore per client) and a per-request timeout.
* Retries with exponential backoff and full jitter on 429, 5xx, timeouts and connection
  errors, honouring ``Retry-After``; other errors (bad request, context too long) fail that
  request only and are returned as failed completions, never raised.
* Usage per role and a SQLite response cache keyed by request and sample index.

A model that stays unreachable after the retries raises :class:`EndpointError`: a systemic
failure that stops the run at a point where it can be resumed.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
import os
import random
import re
from dataclasses import dataclass, field
from typing import Any

from tfgrpo.errors import EndpointError
from tfgrpo.llm.cache import ResponseCache, request_key
from tfgrpo.llm.usage import Usage

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # never fetch the price map
log = logging.getLogger(__name__)

RETRYABLE_STATUS = {408, 409, 429, 500, 502, 503, 504, 520, 522, 524, 529}
# Prefix of a failed completion's error when the prompt did not fit the model's context, so a
# caller can handle it (the judge summarises and retries) instead of taking it for a bad request.
CONTEXT_OVERFLOW = "context_overflow"
_OVERFLOW = re.compile(r"context[_ ](length|window)|maximum context|too many tokens|prompt is too long|exceeds the context", re.IGNORECASE)


@dataclass
class Completion:
    """One sampled answer. ``text`` is None when the request for it failed (``error`` says why)."""

    text: str | None
    index: int
    finish_reason: str | None = None
    error: str | None = None
    cached: bool = False
    prompt_tokens: int = 0
    completion_tokens: int = 0
    # Calls the model asked for (OpenAI tools API): [{"id", "type", "function": {"name", "arguments"}}]
    tool_calls: list[dict[str, Any]] | None = None
    reasoning: str | None = None  # a reasoning model's reasoning content, where the backend returns it

    @property
    def ok(self) -> bool:
        return self.text is not None


@dataclass
class RetryPolicy:
    max_retries: int = 6
    base_delay: float = 1.0
    max_delay: float = 60.0

    def delay(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return min(max(retry_after, 0.0), self.max_delay)
        cap = min(self.max_delay, self.base_delay * (2**attempt))
        return random.uniform(cap / 2, cap)  # jitter so a crowd of clients does not retry in step


@dataclass
class LLMClient:
    """Async access to one model in one role (``policy`` or ``judge``)."""

    model: str
    role: str = "policy"
    api_base: str | None = None
    api_key: str | None = None
    concurrency: int = 16
    timeout: float = 120.0
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    cache: ResponseCache | None = None
    usage: Usage = field(default_factory=Usage)
    supports_n: bool | None = None
    price_per_mtok: tuple[float, float] | None = None  # USD per 1M prompt/completion tokens, for unpriced models
    _sem: asyncio.Semaphore | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.supports_n is None:
            self.supports_n = _backend_supports_n(self.model)

    @property
    def semaphore(self) -> asyncio.Semaphore:
        if self._sem is None:
            self._sem = asyncio.Semaphore(self.concurrency)
        return self._sem

    # ------------------------------------------------------------------ public
    async def sample(
        self,
        messages: list[dict[str, Any]],
        *,
        n: int = 1,
        temperature: float = 0.7,
        max_tokens: int | None = None,
        seed: int | None = None,
        response_format: dict[str, Any] | None = None,
        tools: list[dict[str, Any]] | None = None,
        use_cache: bool = True,
    ) -> list[Completion]:
        """G samples for one prompt, cached ones first; failed samples come back with text None.
        With ``tools`` (OpenAI function schemas) a completion may carry ``tool_calls``."""
        request = {
            "model": self.model,
            "messages": messages,
            "temperature": temperature,
            "max_tokens": max_tokens,
            "seed": seed,
            "response_format": response_format,
        }
        if tools:
            request["tools"] = tools  # only when given: keys of plain requests stay as they were
        key = request_key(request)
        indices = list(range(n))
        cached = self.cache.get_many(key, indices) if (self.cache is not None and use_cache) else {}
        stats = self.usage.role(self.role)
        stats.cache_hits += len(cached)
        out: dict[int, Completion] = {i: Completion(cached=True, index=i, **p) for i, p in cached.items()}
        missing = [i for i in indices if i not in out]
        if missing:
            if self.supports_n and len(missing) > 1:
                got = await self._request(request, missing, n=len(missing), seed=seed)
            else:
                per = await asyncio.gather(
                    *(self._request(request, [i], n=1, seed=None if seed is None else seed + i) for i in missing)
                )
                got = [c for cs in per for c in cs]
            for c in got:
                out[c.index] = c
                if c.ok and self.cache is not None:
                    self.cache.put(
                        key,
                        c.index,
                        {
                            "text": c.text,
                            "finish_reason": c.finish_reason,
                            "prompt_tokens": c.prompt_tokens,
                            "completion_tokens": c.completion_tokens,
                            **({"tool_calls": c.tool_calls} if c.tool_calls else {}),
                            **({"reasoning": c.reasoning} if c.reasoning else {}),
                        },
                    )
        return [out[i] for i in indices]

    # ----------------------------------------------------------------- private
    async def _request(self, request: dict[str, Any], indices: list[int], *, n: int, seed: int | None) -> list[Completion]:
        import litellm

        kwargs: dict[str, Any] = {
            "model": self.model,
            "messages": request["messages"],
            "temperature": request["temperature"],
            "n": n,
            "timeout": self.timeout,
            "drop_params": True,
            "max_retries": 0,
        }
        for k in ("max_tokens", "response_format", "tools"):
            if request.get(k) is not None:
                kwargs[k] = request[k]
        if request.get("tools") and _skips_mcp_gateway():
            kwargs["_skip_mcp_handler"] = True
        if seed is not None:
            kwargs["seed"] = seed
        if self.api_base:
            kwargs["api_base"] = self.api_base
        if self.api_key:
            kwargs["api_key"] = self.api_key
        stats = self.usage.role(self.role)
        attempt = 0
        while True:
            try:
                async with self.semaphore:
                    stats.calls += 1
                    resp = await asyncio.wait_for(litellm.acompletion(**kwargs), timeout=self.timeout + 5)
                break
            except Exception as e:  # classified below: retry, fail this request, or stop the run
                kind = _classify(e)
                if kind == "fatal":
                    raise EndpointError(f"{self.role} model {self.model}: {_short(e)}") from None
                if kind == "request" or attempt >= self.retry.max_retries:
                    if kind == "retry":
                        raise EndpointError(
                            f"{self.role} model {self.model} unreachable after {attempt + 1} attempts: {_short(e)}"
                            " (fix the endpoint, then resume the run)"
                        ) from None
                    stats.failures += len(indices)
                    log.warning("%s request failed: %s", self.role, _short(e))
                    error = f"{CONTEXT_OVERFLOW}: {_short(e)}" if _overflows(e) else _short(e)
                    return [Completion(text=None, index=i, error=error) for i in indices]
                delay = self.retry.delay(attempt, _retry_after(e))
                stats.retries += 1
                log.info("%s: %s; retry %d in %.2fs", self.role, _short(e), attempt + 1, delay)
                attempt += 1
                await asyncio.sleep(delay)

        usage = getattr(resp, "usage", None)
        prompt_tokens = int(getattr(usage, "prompt_tokens", 0) or 0)
        completion_tokens = int(getattr(usage, "completion_tokens", 0) or 0)
        details = getattr(usage, "prompt_tokens_details", None)
        stats.prompt_tokens += prompt_tokens
        stats.completion_tokens += completion_tokens
        stats.cached_tokens += int(getattr(details, "cached_tokens", 0) or 0)
        cost = _cost(resp)
        if cost is None and self.price_per_mtok is not None:
            cost = (prompt_tokens * self.price_per_mtok[0] + completion_tokens * self.price_per_mtok[1]) / 1e6
        stats.add_cost(cost)
        choices = list(getattr(resp, "choices", []) or [])
        out: list[Completion] = []
        per_choice_prompt = prompt_tokens // max(1, len(indices))
        for pos, i in enumerate(indices):
            if pos >= len(choices):
                stats.failures += 1
                out.append(Completion(text=None, index=i, error=f"backend returned {len(choices)} of {n} choices"))
                continue
            ch = choices[pos]
            text = getattr(ch.message, "content", None)
            calls = _tool_calls(ch.message)
            # Completion tokens of one choice: the backend reports the request's total; split evenly.
            out.append(
                Completion(
                    text=text if text is not None else "",
                    index=i,
                    finish_reason=getattr(ch, "finish_reason", None),
                    prompt_tokens=per_choice_prompt,
                    completion_tokens=completion_tokens // max(1, len(choices)),
                    tool_calls=calls,
                    reasoning=getattr(ch.message, "reasoning_content", None) or None,
                )
            )
        return out


@functools.lru_cache(maxsize=1)
def _skips_mcp_gateway() -> bool:
    """Recent litellm imports its MCP gateway (the optional ``mcp`` package) for every request
    with ``tools`` unless told to skip it; we send plain function tools, never MCP ones."""
    import importlib.util

    import litellm.main

    if importlib.util.find_spec("mcp") is not None:
        return False
    try:
        return "_skip_mcp_handler" in inspect.getsource(litellm.main)
    except (OSError, TypeError):
        return False


def _tool_calls(message: Any) -> list[dict[str, Any]] | None:
    """The message's tool calls as plain dicts; arguments stay the raw string the model wrote."""
    calls = getattr(message, "tool_calls", None) or []
    out = []
    for c in calls:
        fn = getattr(c, "function", None)
        out.append({
            "id": str(getattr(c, "id", "") or f"call_{len(out)}"),
            "type": "function",
            "function": {"name": str(getattr(fn, "name", "") or ""), "arguments": str(getattr(fn, "arguments", "") or "")},
        })
    return out or None


def _backend_supports_n(model: str) -> bool:
    import litellm

    litellm.suppress_debug_info = True  # its "use litellm.turn_on_debug()" hint on every error
    try:
        provider = litellm.get_llm_provider(model)[1]
        params = litellm.get_supported_openai_params(model=model.split("/", 1)[-1], custom_llm_provider=provider) or []
        return "n" in params
    except Exception:
        return False


def _status(e: Exception) -> int | None:
    code = getattr(e, "status_code", None)
    if isinstance(code, int):
        return code
    resp = getattr(e, "response", None)
    code = getattr(resp, "status_code", None)
    return code if isinstance(code, int) else None


_CREDENTIALS = re.compile(r"missing credentials|api[_ ]key (must be set|is missing|not (set|found))|no api key", re.IGNORECASE)
_PREFIX = re.compile(r"^\s*(litellm\.)?\w*(Error|Exception)\s*[:-]\s*")


def _classify(e: Exception) -> str:
    """'retry' (transient), 'request' (this request is bad), or 'fatal' (no request can succeed)."""
    import litellm

    if _CREDENTIALS.search(str(e)):
        return "fatal"  # litellm reports a missing key as a server error; retrying cannot help

    if isinstance(e, (asyncio.TimeoutError, litellm.Timeout, litellm.APIConnectionError)):
        return "retry"
    if isinstance(e, (litellm.RateLimitError, litellm.ServiceUnavailableError, litellm.InternalServerError)):
        return "retry"
    if isinstance(e, (litellm.AuthenticationError, litellm.PermissionDeniedError, litellm.NotFoundError)):
        return "fatal"
    status = _status(e)
    if status is not None and (status in RETRYABLE_STATUS or status >= 500):
        return "retry"
    if status is None and isinstance(e, (OSError, ConnectionError)):
        return "retry"
    return "request"


def _overflows(e: Exception) -> bool:
    """The prompt did not fit the model's context (litellm's class, or the backend's words)."""
    import litellm

    return isinstance(e, litellm.ContextWindowExceededError) or bool(_OVERFLOW.search(str(e)))


def _retry_after(e: Exception) -> float | None:
    headers: Any = getattr(e, "headers", None) or getattr(e, "litellm_response_headers", None)
    if not headers:
        headers = getattr(getattr(e, "response", None), "headers", None)
    if not headers:
        return None
    try:
        value = headers.get("retry-after") or headers.get("Retry-After")
    except AttributeError:
        return None
    if value is None:
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None  # an HTTP date: fall back to our own backoff


def _cost(resp: Any) -> float | None:
    import litellm

    try:
        cost = litellm.completion_cost(completion_response=resp)
        return float(cost) if cost else None
    except Exception:
        return None  # no price known for this model (local vLLM, the simulator)


def _short(e: Exception) -> str:
    """``RateLimitError: <message>``, without the chain of prefixes litellm stacks up."""
    msg = str(e).strip().splitlines()[0] if str(e).strip() else ""
    while True:
        trimmed = _PREFIX.sub("", msg, count=1)
        if trimmed == msg:
            break
        msg = trimmed
    return f"{type(e).__name__}: {msg[:300]}"
