"""Turn model settings into clients: start a provider's own server (tfgrpo.llm.providers) or a
local server (vLLM, transformers) when asked, and stop them when the run ends."""

from __future__ import annotations

import contextlib
import contextvars
import os
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Union

from tfgrpo.errors import UserError, disk_full
from tfgrpo.llm.cache import ResponseCache
from tfgrpo.llm.client import LLMClient, RetryPolicy
from tfgrpo.llm.endpoint_config import JudgeConfig, PolicyConfig
from tfgrpo.llm.providers import Capabilities, Provider, provider_for
from tfgrpo.llm.replicas import split_bases
from tfgrpo.llm.retry import is_local
from tfgrpo.llm.usage import Usage

LOCAL_KEY = "no-key"  # what a local OpenAI-compatible server is sent when no --api-key-env is given


Endpoint = Union[PolicyConfig, JudgeConfig]  # how one role's model is reached


@dataclass
class Models:
    policy: LLMClient
    judge: LLMClient | None
    usage: Usage
    policy_name: str
    judge_name: str | None
    make: Callable[[str, str, Endpoint, str | None, str | None], LLMClient] | None = None
    access: Endpoint | None = None  # how other models of this run are reached: the judge's settings, else the policy's
    _extra: dict[tuple[str, str], LLMClient] = field(default_factory=dict)

    def client_for(
        self, model: str, role: str, *, api_base: str | None = None, api_key_env: str | None = None
    ) -> LLMClient:
        """A client for another model (an LLM grader's) on the same stack: the run's cache, usage
        accounting (under ``role``), providers and retry policy (the judge's settings)."""
        key = (model, role)
        if key not in self._extra:
            assert self.make is not None and self.access is not None
            self._extra[key] = self.make(model, role, self.access, api_base, api_key_env)
        return self._extra[key]


_ACTIVE: contextvars.ContextVar[Models | None] = contextvars.ContextVar("tfgrpo_models", default=None)


def active_models() -> Models | None:
    """The models of the run in progress (inside :func:`open_models`), for rewards that ask a model."""
    return _ACTIVE.get()


def _client(
    model: str,
    role: str,
    access: Endpoint,
    api_base: str | None,
    api_key: str | None,
    cache: ResponseCache | None,
    usage: Usage,
    price: tuple[float, float] | None = None,
    capabilities: Capabilities | None = None,
) -> LLMClient:
    if api_key is None and api_base and all(is_local(u) for u in split_bases(api_base)):
        # A server on this machine or network needs no key (and gets none of the provider's from the
        # environment); litellm refuses an openai/ model without one. --api-key-env names one if it does.
        api_key = LOCAL_KEY
    return LLMClient(
        model=model,
        role=role,
        api_base=api_base,
        api_key=api_key,
        concurrency=access.concurrency,
        timeout=access.timeout,
        retry=RetryPolicy(max_retries=access.max_retries),
        cache=cache,
        usage=usage,
        price_per_mtok=price,
        retry_timeouts=access.retry_timeouts,
        capabilities=capabilities or Capabilities(),
    )


def _key(env_name: str | None) -> str | None:
    if not env_name:
        return None
    value = os.environ.get(env_name)
    if not value:
        raise UserError(f"environment variable {env_name} (API key) is not set")
    return value


@contextlib.contextmanager
def open_models(
    policy: Endpoint,
    judge: Endpoint | None = None,
    *,
    serve: str | None = None,
    serve_args: dict[str, Any] | None = None,
    log_dir: Path | None = None,
    cache_path: Path | None = None,
    price_per_mtok: tuple[float, float] | None = None,
) -> Iterator[Models]:
    """Clients for the policy (and judge), with any local server they need running.
    ``price_per_mtok`` prices the calls of models litellm has no price for."""
    if policy.model is None and not serve:
        raise UserError("which model? pass --model NAME (a litellm name such as openai/gpt-4.1-mini)")
    usage = Usage()
    try:
        cache = ResponseCache(cache_path) if cache_path is not None else None
    except (OSError, sqlite3.Error) as e:  # a directory, /proc, a read-only disk (a full one: the caller says)
        if disk_full(e):
            raise
        raise UserError(
            f"cannot open the response cache {cache_path}: {getattr(e, 'strerror', None) or e}; "
            "pass another --cache-path, or --no-cache"
        ) from None
    with contextlib.ExitStack() as stack:
        if cache is not None:
            stack.callback(cache.close)
        p_model, p_base = policy.model, policy.api_base
        if serve:
            from tfgrpo.llm.launcher import local_server

            options = dict(serve_args or {})
            engine = str(options.pop("engine", "vllm"))
            log_path = (log_dir or Path(".")) / f"{engine}.log"
            launched = stack.enter_context(local_server(engine, serve, log_path=log_path, **options))
            p_base = launched.base_url
            if p_model is None:
                p_model = launched.client_model
        # The judge defaults to the policy's model, reached the same way.
        judge_model = None if judge is None else (judge.model or p_model)
        served: dict[str, str] = {}  # a provider's model -> its server's base URL (one per model for both roles)

        def client(model: str, role: str, access: Endpoint, api_base: str | None, key_env: str | None) -> LLMClient:
            provider: Provider | None = provider_for(model)
            if provider is None:
                return _client(model, role, access, api_base, _key(key_env), cache, usage, price_per_mtok)
            if model not in served:
                served[model] = stack.enter_context(provider.serve(model))
            return _client(
                provider.client_model(model, role),
                role,
                access,
                served[model],
                provider.api_key,
                cache,
                usage,
                price_per_mtok,
                provider.capabilities,
            )

        p_client = client(p_model, "policy", policy, p_base, policy.api_key_env)
        j_client = None
        if judge is not None:
            assert judge_model is not None
            same = judge.model is None
            j_client = client(
                judge_model,
                "judge",
                judge,
                judge.api_base or (p_base if same else None),
                judge.api_key_env or (policy.api_key_env if same else None),
            )
        models = Models(
            policy=p_client,
            judge=j_client,
            usage=usage,
            policy_name=p_model,
            judge_name=judge_model,
            make=client,
            access=judge or policy,
        )
        token = _ACTIVE.set(models)
        try:
            yield models
        finally:
            _ACTIVE.reset(token)
