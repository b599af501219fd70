"""What a chat reply carries, whichever way it came: litellm's response objects or the plain
JSON dict of an OpenAI-compatible server (:mod:`tfgrpo.llm.direct`), and what it cost."""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from typing import Any

from tfgrpo.llm.usage import MAX_COST_PER_REPLY, server_number, token_count


@dataclass
class Reply:
    choices: list[Any]  # each a dict or an object with message / finish_reason
    usage: Any  # a dict, an object or None
    cost: float | None  # USD, None when no price is known


def field_of(obj: Any, name: str) -> Any:
    """``obj[name]`` of a dict, ``obj.name`` of an object, None when absent."""
    if isinstance(obj, dict):
        return obj.get(name)
    return getattr(obj, name, None)


def reply_cost(resp: Any) -> float | None:
    """The cost of a litellm response, as litellm prices it (None for an unpriced model)."""
    import litellm

    hidden = getattr(resp, "_hidden_params", None)
    if isinstance(hidden, dict) and "response_cost" in hidden:  # litellm priced the reply already
        return server_number(hidden["response_cost"], upper=MAX_COST_PER_REPLY, default=None) or None
    try:
        cost = litellm.completion_cost(completion_response=resp)
        return server_number(cost, upper=MAX_COST_PER_REPLY, default=None) or None
    except Exception:
        return None  # no price known for this model (local vLLM, a provider's own server)


@dataclass(frozen=True)
class Prices:
    """USD per token of prompt and of completion, from litellm's price map (looked up once per
    model, not per reply)."""

    prompt: float
    completion: float

    def cost(self, usage: Any) -> float | None:
        p, c = token_count(field_of(usage, "prompt_tokens")), token_count(field_of(usage, "completion_tokens"))
        return server_number(p * self.prompt + c * self.completion, upper=MAX_COST_PER_REPLY, default=None) or None


@functools.lru_cache(maxsize=64)
def prices_of(model: str) -> Prices | None:
    """The model's prices in litellm's (local) price map, or None when it has none."""
    import litellm

    try:
        prompt, _ = litellm.cost_per_token(model=model, prompt_tokens=1_000_000, completion_tokens=0)
        _, completion = litellm.cost_per_token(model=model, prompt_tokens=0, completion_tokens=1_000_000)
    except Exception:
        return None
    if not (prompt or completion):
        return None
    return Prices(float(prompt) / 1e6, float(completion) / 1e6)


def text_of(content: Any) -> str:
    """A message's text: a string as is, a list of content parts as their text parts joined
    (``[{"type": "text", "text": ...}]``), nothing as ""."""
    if content is None:
        return ""
    if isinstance(content, list):
        parts = [field_of(p, "text") for p in content]
        return "".join(p for p in parts if isinstance(p, str))
    return str(content)


def arguments_of(args: Any) -> str:
    """Tool-call arguments as the JSON string the OpenAI API sends; a server that sends them as
    an object gets them encoded, not written as a Python repr."""
    if isinstance(args, (dict, list)):
        return json.dumps(args, ensure_ascii=False)
    return "" if args is None else str(args)


def tool_calls_of(message: Any) -> list[dict[str, Any]] | None:
    """The message's tool calls as plain dicts; arguments stay the raw string the model wrote."""
    calls = field_of(message, "tool_calls")
    out = []
    for c in calls if isinstance(calls, list) else []:
        fn = field_of(c, "function")
        out.append(
            {
                "id": str(field_of(c, "id") or f"call_{len(out)}"),
                "type": "function",
                "function": {
                    "name": str(field_of(fn, "name") or ""),
                    "arguments": arguments_of(field_of(fn, "arguments")),
                },
            }
        )
    return out or None
