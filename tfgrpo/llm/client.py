"""One async client for every model: OpenAI-compatible endpoints (vLLM, ``transformers serve``,
a provider's own server: ``hosted_vllm/`` models, ``openai/`` ones on a local ``api_base``) straight
over HTTP (:mod:`tfgrpo.llm.direct`, about a fifth of litellm's CPU per request), every other
provider through litellm.

* ``n=G`` in one request where the backend supports it, else G requests. A server that
  answers with fewer choices than asked (it ignores ``n``) gets the missing ones as separate
  requests at once, and is remembered as one that ignores ``n``: a short reply never turns
  into failed rollouts.
* Bounded concurrency that halves on timeouts (a slow server is not stormed) and a
  per-request timeout, longer until a local endpoint has answered once (its cold start).
* Retries with exponential backoff and full jitter on 429, 5xx and connection errors,
  honouring ``Retry-After``; a request that timed out at a local server is not sent again
  (the server may still be computing it) unless ``retry_timeouts``; other errors (bad
  request, context too long) fail that request only and are returned as failed
  completions, never raised.
* Several ``api_base`` URLs of one model are spread least-busy (:mod:`tfgrpo.llm.replicas`); one
  that answers 404 (or 401, 403, a redirect) is retired and the others take its requests.
* A reply whose choices are not chat choices (:func:`tfgrpo.llm.reply.chat_choices`) is retried
  like a 502, never read as an empty answer.
* Usage per role and a SQLite response cache keyed by request and sample index; a reply the
  caller's ``validate`` rejects, or one not of the shape a reply is cached in, is neither
  cached nor replayed from the cache.

A model that stays unreachable after the retries raises :class:`EndpointError`: a systemic
failure that stops the run at a point where it can be resumed.
"""

from __future__ import annotations

import asyncio
import logging
import os
from dataclasses import dataclass, field
from typing import Any, Callable

from tfgrpo.errors import EndpointError
from tfgrpo.llm import direct, model_info
from tfgrpo.llm.cache import ResponseCache, request_key
from tfgrpo.llm.providers import Capabilities
from tfgrpo.llm.replicas import Replica, ReplicaSet, split_bases
from tfgrpo.llm.reply import (Prices, Reply, chat_choices, field_of, prices_of, replayable, reply_cost, text_of,
                              tool_calls_of)  # fmt: skip
from tfgrpo.llm.retry import (rejects_format, CONTEXT_OVERFLOW, AdaptiveLimit, RetryPolicy, classify, failure_text, is_local, is_timeout, refused,
                              retry_after, short)  # fmt: skip
from tfgrpo.llm.usage import Usage, token_count

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # never fetch the price map
log = logging.getLogger(__name__)

__all__ = ["CONTEXT_OVERFLOW", "Completion", "LLMClient", "RetryPolicy"]

_N_IGNORED: set[str] = set()  # endpoints (api_base|model) seen answering n>1 with fewer choices
_FORMAT_REJECTED: set[str] = set()  # endpoints seen refusing a response_format
_KEY_ENV = {"openai": "OPENAI_API_KEY", "hosted_vllm": "HOSTED_VLLM_API_KEY"}  # litellm's key variables


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
class LLMClient:
    """Async access to one model in one role (``policy`` or ``judge``)."""

    model: str
    role: str = "policy"
    api_base: str | None = None  # one URL, or several comma-separated replicas of the same model
    api_key: str | None = None
    concurrency: int = 16
    timeout: float = 120.0
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    cache: ResponseCache | None = None
    usage: Usage = field(default_factory=Usage)
    supports_n: bool | None = None
    price_per_mtok: tuple[float, float] | None = None  # USD per 1M prompt/completion tokens, for unpriced models
    retry_timeouts: bool | None = None  # None: retry timed-out requests at remote endpoints only
    first_timeout_factor: float = 4.0  # local endpoints: timeout multiplier until they have answered once
    # "auto": OpenAI-compatible endpoints (hosted_vllm/, or openai/ on a local api_base) straight
    # over HTTP (tfgrpo.llm.direct), every other model through litellm; "litellm": always litellm
    transport: str = "auto"
    capabilities: Capabilities = field(default_factory=Capabilities)  # what the endpoint can do, where it is known
    _limit: AdaptiveLimit | None = field(default=None, init=False, repr=False)
    _told_refused: bool = field(default=False, init=False, repr=False)
    _replicas: ReplicaSet = field(init=False, repr=False)

    def __post_init__(self) -> None:
        model_info.quiet_litellm()
        if self.supports_n is None:
            self.supports_n = model_info.supports_n(self.model)
        self._replicas = ReplicaSet(split_bases(self.api_base) or [""])
        self._local = all(is_local(r.url) for r in self._replicas.replicas)
        if self._local:  # litellm's clients too reach a local server without the environment's proxy
            direct.bypass_env_proxy(r.url for r in self._replicas.replicas)
        if self.retry_timeouts is None:
            self.retry_timeouts = not self._local
        if self.transport not in ("auto", "litellm"):
            raise ValueError(f"transport {self.transport!r}: choose auto or litellm")
        self._direct = (
            direct.direct_model(self.model, self.api_base, local=self._local) if self.transport == "auto" else None
        )
        self._prices: Prices | None = prices_of(self.model) if self._direct is not None else None

    @property
    def limit(self) -> AdaptiveLimit:
        if self._limit is None:
            self._limit = AdaptiveLimit(
                self.concurrency, cooldown=min(self.timeout, 30.0), name=f"{self.role} model {self.model}"
            )
        return self._limit

    def takes_response_schema(self) -> bool:
        """Whether the backend honours a ``response_format`` JSON schema: its capabilities, else
        litellm's model info; unknown models are assumed not to."""
        if self._endpoint in _FORMAT_REJECTED:
            return False
        known = self.capabilities.response_schema
        return known if known is not None else model_info.supports_response_schema(self.model)

    def count_tokens(self, text: str) -> int:
        """Tokens of ``text`` for this model: litellm's tokenizer where it knows the model, else
        experience_store's estimate."""
        return model_info.count_tokens(self.model if self.capabilities.tokenizer else None, text)

    @property
    def n_honoured(self) -> bool:
        return bool(self.supports_n) and self._endpoint not in _N_IGNORED

    @property
    def _endpoint(self) -> str:
        return f"{self.api_base or ''}|{self.model}"

    # ------------------------------------------------------------------ public
    async def sample(self, messages: list[dict[str, Any]], **kw: Any) -> list[Completion]:
        """G samples for one prompt (:meth:`_sample`). A ``response_format`` the endpoint rejects
        (its error names it) is dropped: the request is sent again without it, and the endpoint is
        remembered (logged once, as for ``n``), so judges paste the schema into the prompt instead."""
        if kw.get("response_format") is not None and self._endpoint in _FORMAT_REJECTED:
            kw["response_format"] = None
        out = await self._sample(messages, **kw)
        if kw.get("response_format") is not None and out and all(rejects_format(c.error) for c in out):
            if self._endpoint not in _FORMAT_REJECTED:
                _FORMAT_REJECTED.add(self._endpoint)
                log.warning("%s model %s rejects response_format (%s); sending its requests without it and the "
                            "schema in the prompt", self.role, self.model, (out[0].error or "")[:160])  # fmt: skip
            out = await self._sample(messages, **{**kw, "response_format": None})
        return out

    async def _sample(
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
        validate: Callable[[str], str | None] | None = None,
    ) -> list[Completion]:
        """G samples for one prompt, cached ones first; failed samples come back with text None.
        With ``tools`` (OpenAI function schemas) a completion may carry ``tool_calls``.
        ``validate(text)`` returns why a reply is unusable (or None): such a reply is a failed
        sample, never cached, and a cached one it rejects is asked for again."""
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
        out: dict[int, Completion] = {}
        for i, payload in cached.items():
            if not replayable(payload) or (validate is not None and validate(payload["text"]) is not None):
                continue  # cached before these checks existed: ask again rather than replay it
            out[i] = Completion(cached=True, index=i, **payload)
        stats.cache_hits += len(out)
        missing = [i for i in indices if i not in out]
        if missing:
            for c in await self._fetch(request, missing, seed):
                if c.ok and validate is not None:
                    why = validate(c.text or "")
                    if why is not None:
                        stats.failures += 1
                        c = Completion(text=None, index=c.index, error=f"unusable reply: {why}")
                out[c.index] = c
                if c.ok and self.cache is not None:
                    self.cache.put(key, c.index, {
                        "text": c.text, "finish_reason": c.finish_reason, "prompt_tokens": c.prompt_tokens,
                        "completion_tokens": c.completion_tokens, **({"tool_calls": c.tool_calls} if c.tool_calls else {}),
                        **({"reasoning": c.reasoning} if c.reasoning else {}),
                    })  # fmt: skip
        return [out[i] for i in indices]

    # ----------------------------------------------------------------- private
    async def _fetch(self, request: dict[str, Any], missing: list[int], seed: int | None) -> list[Completion]:
        """The ``missing`` samples: one request with ``n`` where it is honoured, and separate
        requests (at once) for any sample the server left out."""
        got: list[Completion] = []
        # Seeded, the missing samples of a group cut short (a resume) come from the group's own
        # request (seed, n = the last missing index + 1), keeping only the missing choices: a
        # server that draws choice j from (seed, j), as vLLM does (it seeds choice j with
        # seed + j), gives each the answer an uninterrupted run got. The cached neighbours are
        # generated again for that (paid, not kept); asking seed + m for sample m would hold only
        # for vLLM's convention.
        want = list(range(missing[-1] + 1)) if seed is not None else missing
        if self.n_honoured and len(want) > 1:
            got = await self._request(request, want, n=len(want), seed=seed)
            if len(got) < len(want):
                if self._endpoint not in _N_IGNORED:
                    _N_IGNORED.add(self._endpoint)
                    log.warning("%s model %s answered %d of %d choices: it ignores n; asking one request per sample from now on",
                                self.role, self.model, len(got), len(want))  # fmt: skip
            got = [c for c in got if c.index in missing]
        have = {c.index for c in got}
        rest = [i for i in missing if i not in have]
        if rest:
            per = await asyncio.gather(
                *(self._request(request, [i], n=1, seed=None if seed is None else seed + i) for i in rest)
            )
            for i, cs in zip(rest, per):
                if not cs:
                    self.usage.role(self.role).failures += 1
                    cs = [Completion(text=None, index=i, error="backend returned no choice")]
                got.extend(cs)
        return got

    def _timeout_for(self, replica: Replica) -> float:
        if self._local and not replica.answered:
            return self.timeout * max(1.0, self.first_timeout_factor)
        return self.timeout

    async def _request(
        self, request: dict[str, Any], indices: list[int], *, n: int, seed: int | None
    ) -> list[Completion]:
        """One request for ``n`` choices, retried as the error allows; returns the choices the
        server gave (possibly fewer than ``n``), or failed completions for all ``indices``."""
        send = self._sender(request, n, seed)
        stats = self.usage.role(self.role)
        several = len(self._replicas) > 1
        attempt = 0
        replica: Replica | None = None
        timeout = self.timeout
        while True:
            try:
                async with self.limit:
                    # picked once a slot is ours, so the queue does not choose on stale counts
                    replica = self._replicas.pick(avoid=replica.url if replica is not None else None)
                    timeout = self._timeout_for(replica)
                    stats.calls += 1
                    if several:
                        stats.replicas[replica.url] = stats.replicas.get(replica.url, 0) + 1
                    replica.in_flight += 1
                    try:
                        reply = await asyncio.wait_for(send(replica.url, timeout), timeout=timeout + 5)
                    finally:
                        replica.in_flight -= 1
                replica.answered = True
                self.limit.answered()
                break
            except Exception as e:  # classified below: retry, fail this request, or stop the run
                kind = classify(e)
                if kind == "fatal" and several and replica is not None:
                    if self._replicas.retire(replica, short(e)):
                        stats.retries += 1
                        continue  # another replica takes it; this one answers no request of the model
                    raise EndpointError(
                        f"{self.role} model {self.model}: no replica is usable: {self._replicas.why_retired()}"
                    ) from None
                if kind == "fatal":
                    raise EndpointError(f"{self.role} model {self.model}: {short(e)}") from None
                timed_out = is_timeout(e)
                if timed_out:
                    self.limit.timed_out()
                elif kind == "retry" and several and refused(e):
                    self._replicas.down(replica, short(e))
                    if self._replicas.any_live(replica):
                        stats.retries += 1
                        continue  # another replica takes it now; this attempt does not count
                if timed_out and not self.retry_timeouts:
                    stats.failures += len(indices)
                    why = (f"no answer within {timeout:g}s; not sent again, the server may still be computing it "
                           "(raise --timeout, or pass --retry-timeouts)")  # fmt: skip
                    log.warning("%s request failed: %s", self.role, why)
                    return [Completion(text=None, index=i, error=why) for i in indices]
                if kind == "request" or attempt >= self.retry.max_retries:
                    if kind == "retry":
                        raise EndpointError(
                            f"{self.role} model {self.model} unreachable after {attempt + 1} attempts: {short(e)}"
                        ) from None
                    stats.failures += len(indices)
                    log.warning("%s request failed: %s", self.role, short(e))
                    return [Completion(text=None, index=i, error=failure_text(e)) for i in indices]
                delay = self.retry.delay(attempt, retry_after(e, upper=self.retry.max_delay))
                if (
                    refused(e) and not self._told_refused and self.retry.max_retries >= 3
                ):  # a long wait ahead: say why now
                    self._told_refused = True
                    log.warning(
                        "%s model %s: %s; retrying, up to %d times",
                        self.role,
                        self.model,
                        short(e),
                        self.retry.max_retries,
                    )
                stats.retries += 1
                log.info("%s: %s; retry %d in %.2fs", self.role, short(e), attempt + 1, delay)
                attempt += 1
                await asyncio.sleep(delay)
        return self._completions(reply, indices)

    def _sender(self, request: dict[str, Any], n: int, seed: int | None) -> Callable[[str, float], Any]:
        """``send(replica_url, timeout)``: straight to an OpenAI-compatible endpoint, or via litellm."""
        options = {k: request[k] for k in ("max_tokens", "response_format", "tools") if request.get(k) is not None}
        if seed is not None:
            options["seed"] = seed
        if self._direct is not None:
            body = {"model": self._direct, "messages": request["messages"], "temperature": request["temperature"],
                    **({"n": n} if n > 1 else {}), **options}  # fmt: skip
            key = self.api_key or os.environ.get(_KEY_ENV.get(self.model.partition("/")[0], ""))

            async def direct_send(url: str, timeout: float) -> Reply:
                reply = await direct.chat(url, body, api_key=key, timeout=timeout, local=self._local)
                cost = self._prices.cost(reply.get("usage") or {}) if self._prices else None
                return Reply(chat_choices(reply["choices"]), reply.get("usage"), cost)

            return direct_send

        import litellm

        kwargs: dict[str, Any] = {"model": self.model, "messages": request["messages"], "temperature": request["temperature"],
                                  "n": n, "drop_params": True, "max_retries": 0, **options}  # fmt: skip
        if request.get("tools") and model_info.skips_mcp_gateway():
            kwargs["_skip_mcp_handler"] = True
        if self.api_key:
            kwargs["api_key"] = self.api_key

        async def litellm_send(url: str, timeout: float) -> Reply:
            resp = await litellm.acompletion(timeout=timeout, **({"api_base": url} if url else {}), **kwargs)
            choices = chat_choices(list(getattr(resp, "choices", []) or []))
            return Reply(choices, getattr(resp, "usage", None), reply_cost(resp))

        return litellm_send

    def _completions(self, reply: Reply, indices: list[int]) -> list[Completion]:
        stats = self.usage.role(self.role)
        usage = reply.usage
        prompt_tokens = token_count(field_of(usage, "prompt_tokens"))
        completion_tokens = token_count(field_of(usage, "completion_tokens"))
        stats.prompt_tokens += prompt_tokens
        stats.completion_tokens += completion_tokens
        cached = field_of(field_of(usage, "prompt_tokens_details"), "cached_tokens")
        stats.cached_tokens += min(prompt_tokens, token_count(cached))
        cost = reply.cost
        if cost is None and self.price_per_mtok is not None:
            cost = (prompt_tokens * self.price_per_mtok[0] + completion_tokens * self.price_per_mtok[1]) / 1e6
        stats.add_cost(cost)
        choices = reply.choices[: len(indices)]
        per_choice_prompt = prompt_tokens // max(1, len(choices))
        out: list[Completion] = []
        for i, ch in zip(indices, choices):
            message = field_of(ch, "message")
            text = text_of(field_of(message, "content"))
            # Completion tokens of one choice: the backend reports the request's total; split evenly.
            out.append(
                Completion(
                    text=text,
                    index=i,
                    finish_reason=field_of(ch, "finish_reason"),
                    prompt_tokens=per_choice_prompt,
                    completion_tokens=completion_tokens // max(1, len(choices)),
                    tool_calls=tool_calls_of(message),
                    reasoning=text_of(field_of(message, "reasoning_content") or field_of(message, "reasoning")) or None,
                )
            )
        return out
