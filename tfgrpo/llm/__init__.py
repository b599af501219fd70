"""Model access: one async client over litellm, the response cache, usage accounting, the
vLLM launcher and the built-in simulated model."""

from tfgrpo.llm.cache import ResponseCache
from tfgrpo.llm.client import Completion, LLMClient, RetryPolicy
from tfgrpo.llm.usage import Usage

__all__ = ["Completion", "LLMClient", "ResponseCache", "RetryPolicy", "Usage"]
