"""How the policy and the judge are reached (``PolicyConfig``, ``JudgeConfig``), and how the
judge judges; what the policy samples is ``SamplingConfig`` (training_free/config.py). The model
access layer (endpoints.py) takes them as they are: no protocol restates their fields."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from tfgrpo.config import ConfigModel as _Model
from tfgrpo.config import flag

__all__ = ["JudgeConfig", "PolicyConfig"]


class PolicyConfig(_Model):
    """How the policy model is reached (what it samples is ``SamplingConfig``)."""

    model: str | None = Field(
        None,
        description="Policy model: a litellm name (openai/gpt-4.1-mini, hosted_vllm/Qwen/Qwen3-8B) or a provider plugin's name; train needs one, eval takes its --library run's unless given",
        json_schema_extra=flag("model"),
    )
    api_base: str | None = Field(
        None,
        description="OpenAI-compatible base URL for the policy (e.g. a vLLM server)",
        json_schema_extra=flag("api-base"),
    )
    api_key_env: str | None = Field(
        None,
        description="Environment variable holding the policy's API key (default: the provider's usual one)",
        json_schema_extra=flag("api-key-env"),
    )
    concurrency: int = Field(16, gt=0, description="Concurrent policy requests", json_schema_extra=flag("concurrency"))
    timeout: float = Field(
        120.0, gt=0, description="Seconds before one policy request times out", json_schema_extra=flag("timeout")
    )
    max_retries: int = Field(
        6,
        ge=0,
        description="Retries of a request on 429, 5xx, timeouts and connection errors",
        json_schema_extra=flag("max-retries"),
    )
    retry_timeouts: bool | None = Field(
        None,
        description="Send a timed-out request again (default: at remote endpoints only; a local server that timed out may still be computing it)",
        json_schema_extra=flag("retry-timeouts"),
    )


class JudgeConfig(_Model):
    model: str | None = Field(
        None,
        description="Judge model (default: the policy model); a capable model matters here",
        json_schema_extra=flag("judge"),
    )
    api_base: str | None = Field(
        None, description="OpenAI-compatible base URL for the judge", json_schema_extra=flag("judge-api-base")
    )
    api_key_env: str | None = Field(None, description="Environment variable holding the judge's API key")
    temperature: float = Field(0.0, ge=0, le=2, description="Judge sampling temperature (0: deterministic)")
    max_tokens: int | None = Field(
        None, gt=0, description="Max completion tokens per judge call", json_schema_extra=flag("judge-max-tokens")
    )
    check: bool = Field(
        True,
        description="Before step 1, ask the judge two canned comparisons with a plain difference and stop the run "
        "when it writes no usable lesson",
        json_schema_extra=flag("judge-check"),
    )
    concurrency: int = Field(
        8, gt=0, description="Concurrent judge requests", json_schema_extra=flag("judge-concurrency")
    )
    timeout: float = Field(300.0, gt=0, description="Seconds before one judge request times out")
    max_retries: int = Field(6, ge=0, description="Retries of a judge request on transient errors")
    retry_timeouts: bool | None = Field(
        None, description="Send a timed-out judge request again (default: at remote endpoints only)"
    )
    summaries: bool | None = Field(
        None,
        description="Summarise each attempt before the group comparison (default: only when the attempts together would fill more than summary_share of the judge's context)",
        json_schema_extra=flag("summaries"),
    )
    skip_equal_groups: bool = Field(
        True,
        description="Skip groups whose answers all scored the same (they carry no contrast)",
        json_schema_extra=flag("skip-equal-groups"),
    )
    ground_truth: bool = Field(
        True,
        description="Show the judge the reference answer and the rewards; without it every group is judged blind",
        json_schema_extra=flag("ground-truth"),
    )
    max_ops_per_group: int = Field(
        3,
        ge=1,
        le=10,
        description="Most ops one group comparison may propose; the first non-NONE ones are kept (default 3, room for a lesson on strategy, checking and format at once; the reference implementation uses 1)",
        json_schema_extra=flag("ops-per-group"),
    )
    leak_guard: Literal["reject", "flag", "off"] = Field(
        "reject",
        description="Lessons copying training problem text (long word overlap, or its numbers and names): reject them, flag them but keep them, or do not check",
        json_schema_extra=flag("leak-guard"),
    )
    context_tokens: int | None = Field(
        None,
        gt=0,
        description="The judge's context window in tokens, for switching summaries on (default: litellm's model info, else 32768)",
        json_schema_extra=flag("judge-context"),
    )
    summary_share: float = Field(
        0.5,
        gt=0,
        le=1,
        description="Summarise the attempts first when together they would fill more than this share of the judge's context (with --summaries unset)",
    )
    schema_in_prompt: bool | None = Field(
        None,
        description="Paste the JSON schema into judge prompts (default: only for backends litellm does not know to take a response_format schema)",
    )
