"""Model access: one async client (direct HTTP or litellm), the response cache, usage
accounting, the vLLM / transformers launcher and the provider plugins."""

from tfgrpo.llm.cache import ResponseCache
from tfgrpo.llm.client import Completion, LLMClient, RetryPolicy
from tfgrpo.llm.usage import Usage

__all__ = ["Completion", "LLMClient", "ResponseCache", "RetryPolicy", "Usage"]
