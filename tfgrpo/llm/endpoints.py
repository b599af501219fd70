"""Turn model settings into clients: start the simulated model or a local server (vLLM,
transformers) when asked, and stop them when the run ends."""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Protocol

from tfgrpo.errors import UserError
from tfgrpo.llm.cache import ResponseCache
from tfgrpo.llm.client import LLMClient, RetryPolicy
from tfgrpo.llm.replicas import split_bases
from tfgrpo.llm.retry import is_local
from tfgrpo.llm.usage import Usage

SIM = "sim"
LOCAL_KEY = "no-key"  # what a local OpenAI-compatible server is sent when no --api-key-env is given


def is_sim(model: str | None) -> bool:
    return model is not None and (model == SIM or model.startswith("sim/"))


class Endpoint(Protocol):
    """How one role's model is reached (``PolicyConfig`` and ``JudgeConfig`` of a run are ones)."""

    model: str | None
    api_base: str | None
    api_key_env: str | None
    concurrency: int
    timeout: float
    max_retries: int
    retry_timeouts: bool | None


@dataclass
class Models:
    policy: LLMClient
    judge: LLMClient | None
    usage: Usage
    policy_name: str
    judge_name: str | None


def _client(model: str, role: str, access: Endpoint, api_base: str | None, api_key: str | None,
            cache: ResponseCache | None, usage: Usage, price: tuple[float, float] | None = None) -> LLMClient:
    if api_key is None and api_base and all(is_local(u) for u in split_bases(api_base)):
        # A server on this machine or network needs no key (and gets none of the provider's from the
        # environment); litellm refuses an openai/ model without one. --api-key-env names one if it does.
        api_key = LOCAL_KEY
    return LLMClient(
        model=model, role=role, api_base=api_base, api_key=api_key, concurrency=access.concurrency,
        timeout=access.timeout, retry=RetryPolicy(max_retries=access.max_retries), cache=cache, usage=usage,
        price_per_mtok=price, retry_timeouts=access.retry_timeouts,
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
    sim_seed: int = 0,
    serve: str | None = None,
    serve_args: dict[str, Any] | None = None,
    log_dir: Path | None = None,
    cache_path: Path | None = None,
    price_per_mtok: tuple[float, float] | None = None,
) -> Iterator[Models]:
    """Clients for the policy (and judge), with any local server they need running.
    ``price_per_mtok`` prices the calls of models litellm has no price for."""
    if policy.model is None and not serve:
        raise UserError("which model? pass --model NAME (a litellm name, or sim for the built-in SIMULATED model)")
    usage = Usage()
    cache = ResponseCache(cache_path) if cache_path is not None else None
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
            if p_model is None or is_sim(p_model):
                p_model = launched.client_model
        # The judge defaults to the policy's model, reached the same way.
        judge_model = None if judge is None else (judge.model or p_model)
        sim_url: str | None = None
        if is_sim(p_model) or is_sim(judge_model):
            from tfgrpo.sim import start_sim_server

            sim_url = stack.enter_context(start_sim_server(seed=sim_seed)).base_url
        if is_sim(p_model):
            # The simulator's seed is part of the model name, so cached answers never cross seeds.
            p_client = _client(f"openai/sim-policy-s{sim_seed}", "policy", policy, sim_url, "sim", cache, usage, price_per_mtok)
        else:
            p_client = _client(p_model, "policy", policy, p_base, _key(policy.api_key_env), cache, usage, price_per_mtok)
        j_client = None
        if judge is not None:
            if is_sim(judge_model):
                j_client = _client(f"openai/sim-judge-s{sim_seed}", "judge", judge, sim_url, "sim", cache, usage, price_per_mtok)
            else:
                same = judge.model is None
                j_base = judge.api_base or (p_base if same else None)
                j_key = _key(judge.api_key_env or (policy.api_key_env if same else None))
                j_client = _client(judge_model, "judge", judge, j_base, j_key, cache, usage, price_per_mtok)
        yield Models(policy=p_client, judge=j_client, usage=usage, policy_name=p_model, judge_name=judge_model)
