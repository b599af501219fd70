"""What a chat reply carries, whichever way it came: litellm's response objects or the plain
JSON dict of an OpenAI-compatible server (:mod:`tfgrpo.llm.direct`), and what it cost.

A reply's choices are checked against the shape of a chat choice (:func:`chat_choices`) before
anything is read from them: a choice that is 42, null or a string, one without a message, or a
``finish_reason`` that is an object, is a bad reply (retried like a 502), never an empty answer
that is judged and cached. A cached reply is checked the same way (:func:`replayable`)."""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, TypeAdapter, ValidationError

from tfgrpo.llm.direct import BadReply
from tfgrpo.llm.usage import MAX_COST_PER_REPLY, server_number, token_count


@dataclass
class Reply:
    choices: list[Any]  # each a dict or an object with message / finish_reason
    usage: Any  # a dict, an object or None
    cost: float | None  # USD, None when no price is known


class _Message(BaseModel):
    """The part of a choice's message that is read: its text (a string, a list of content
    parts, or null when the model only called tools or ran out of tokens while reasoning)."""

    model_config = ConfigDict(from_attributes=True)  # a dict, or litellm's Message object
    content: str | list[Any] | None = None


class _Choice(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    message: _Message
    finish_reason: str | None = None


_CHOICES = TypeAdapter(list[_Choice])


def chat_choices(choices: Any) -> list[Any]:
    """``choices`` as they came, once each is a chat choice: a message whose content is text,
    parts or null, and a finish_reason that is a string or null. Else :class:`BadReply`, which
    the client retries like a 502, naming the first thing wrong."""
    try:
        _CHOICES.validate_python(choices, from_attributes=True)
    except ValidationError as e:
        err = e.errors(include_url=False)[0]
        loc = [str(p) for p in err["loc"]]
        where = ".".join(p for p in loc[1:] if p in ("message", "content", "finish_reason"))
        choice = f"reply choice {loc[0] if loc else 0}"
        if err["type"] == "missing":
            raise BadReply(f"{choice} has no {where}") from None
        what = f"{choice}{' ' + where if where else ''} is {err['input']!r:.80}"
        raise BadReply(f"{what}: {err['msg'][0].lower()}{err['msg'][1:]}") from None
    return list(choices)


class _Cached(BaseModel):
    """One reply as the client caches it: exactly these keys, of exactly these types."""

    model_config = ConfigDict(strict=True, extra="forbid")
    text: str
    finish_reason: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    tool_calls: list[dict[str, Any]] | None = None
    reasoning: str | None = None


def replayable(payload: Any) -> bool:
    """Whether a cached reply can be replayed: one an older version cached with a finish_reason
    that is an object, or keys no reply has, is asked for again instead of ending the run."""
    try:
        _Cached.model_validate(payload)
    except ValidationError:
        return False
    return True


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
