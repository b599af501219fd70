"""What litellm knows about a model: whether it takes ``n`` and a ``response_format`` schema, its
token counter, and the request options a litellm version needs. Asked once per model."""

from __future__ import annotations

import functools
from typing import Any


def supports_response_schema(model: str) -> bool:
    try:
        import litellm

        return bool(litellm.supports_response_schema(model=model))
    except Exception:
        return False


def count_tokens(model: str | None, text: str) -> int:
    """``model``'s tokenizer through litellm where known; None (or unknown): the library's estimate."""
    from experience_store import estimate_tokens

    if model is None:
        return estimate_tokens(text)
    import litellm

    try:
        return int(litellm.token_counter(model=model, text=text))
    except Exception:  # unknown model or tokenizer not available offline
        return estimate_tokens(text)


@functools.lru_cache(maxsize=1)
def skips_mcp_gateway() -> bool:
    """Whether requests with (function) tools need ``_skip_mcp_handler``: some litellm versions import the MCP gateway's
    optional packages for any tools, the oldest send the flag upstream. Asked of litellm once, offline (mock_response)."""
    import litellm

    def works(**extra: Any) -> bool:
        tool = {"type": "function", "function": {"name": "probe", "parameters": {"type": "object", "properties": {}}}}
        try:
            return (
                litellm.completion(
                    model="openai/probe",
                    api_key="x",
                    messages=[{"role": "user", "content": "x"}],
                    tools=[tool],
                    mock_response="ok",
                    **extra,
                )
                is not None
            )
        except Exception:  # noqa: BLE001 - how the gateway's import fails differs by version
            return False

    return not works() and works(_skip_mcp_handler=True)


@functools.lru_cache(maxsize=1)
def quiet_litellm() -> None:
    """No "Provider List" / "use litellm.turn_on_debug()" hints printed on every unpriced reply or error."""
    import litellm

    litellm.suppress_debug_info = True


def supports_n(model: str) -> bool:
    import litellm

    try:
        provider = litellm.get_llm_provider(model)[1]
        params = litellm.get_supported_openai_params(model=model.split("/", 1)[-1], custom_llm_provider=provider) or []
        return "n" in params
    except Exception:
        return False
