"""Structured outputs: a pydantic model sent as ``response_format`` JSON schema, read back with
a tolerant parser, and one repair retry that shows the model its own error."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import json_repair
from pydantic import BaseModel, ValidationError

from tfgrpo.llm.client import LLMClient

M = TypeVar("M", bound=BaseModel)

MAX_REPLY_CHARS = 1_000_000  # a judge reply is a few KB; a bigger one is refused unread
MAX_DEPTH = 32  # nesting of the JSON a judge writes (ours is at most 3 deep)
MAX_DIGITS = 100  # digits in one number (far beyond any score or index)

_THINK = re.compile(r"<think>.*?</think>", re.DOTALL | re.IGNORECASE)
_FENCE = re.compile(r"```(?:json)?\s*(.*?)```", re.DOTALL | re.IGNORECASE)


class ParseError(ValueError):
    """Model output that could not be read as the expected JSON object."""


def schema_for(model: type[BaseModel]) -> dict[str, Any]:
    return model.model_json_schema()


def response_format(model: type[BaseModel], name: str) -> dict[str, Any]:
    """``strict``: providers that enforce schemas (OpenAI's strict mode) then allow only valid
    replies; the judge's models are written for it (every field required, no other keys)."""
    return {"type": "json_schema", "json_schema": {"name": name, "schema": schema_for(model), "strict": True}}


def unsafe_reason(text: str) -> str | None:
    """Why ``text`` must not reach a JSON parser (too long, too deeply nested, a number outside
    strings too long to convert), or None. Linear and non-recursive, so it cannot itself be made to crash."""
    if len(text) > MAX_REPLY_CHARS:
        return f"reply of {len(text)} characters (at most {MAX_REPLY_CHARS})"
    depth = deepest = digits = 0
    in_string = escaped = False
    for ch in text:
        digits = digits + 1 if (ch.isdigit() and not in_string) else 0
        if digits > MAX_DIGITS:
            return f"a number of more than {MAX_DIGITS} digits"
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif ch in "]}":
            depth = max(0, depth - 1)
    return f"JSON nested {deepest} deep (at most {MAX_DEPTH})" if deepest > MAX_DEPTH else None


MAX_STARTS = 64  # '{' positions tried when looking for the JSON object in prose


def answer_part(text: str) -> str:
    """``text`` without a reasoning model's thinking: closed ``<think>...</think>`` blocks, and
    everything up to a lone ``</think>`` (chat templates such as Qwen3's and DeepSeek-R1's open
    the block in the prompt, so the reply only closes it)."""
    body = _THINK.sub("", text)
    close = body.lower().rfind("</think>")
    return (body[close + len("</think>") :] if close != -1 else body).strip()


def unsafe_reply(text: str) -> str | None:
    """Why a reply must not be parsed (:func:`unsafe_reason` of its answer part; the reasoning
    before it is never parsed, so only its length counts), or None."""
    if len(text) > MAX_REPLY_CHARS:
        return f"reply of {len(text)} characters (at most {MAX_REPLY_CHARS})"
    return unsafe_reason(answer_part(text))


def parse_output(text: str | None, model: type[M], *, lenient: bool = True) -> M:
    """Read ``model`` from free text: drops reasoning, then takes the first JSON object in the
    text that is one (in a code fence or in prose, whatever follows it, fences inside its strings
    included) and validates. ``lenient`` also repairs syntax damage (trailing commas, output cut
    off mid-object); a repaired object may have lost its tail, so the first reading of a judge
    answer is strict and only the answer to the repair request is read leniently."""
    if text is None or not text.strip():
        raise ParseError("empty output")
    unsafe = unsafe_reply(text)
    if unsafe is not None:
        raise ParseError(unsafe)
    body = answer_part(text)
    first_error: ParseError | None = None  # what went wrong with the first object: the outermost one
    decoder = json.JSONDecoder()
    start = body.find("{")
    for _ in range(MAX_STARTS):
        if start == -1:
            break
        try:
            data, _end = decoder.raw_decode(body, start)
            if not isinstance(data, dict):
                raise ParseError(f"expected a JSON object, got {type(data).__name__}")
            return _validate(data, model)
        except json.JSONDecodeError as e:
            first_error = first_error or ParseError(f"invalid JSON ({e.msg} at character {e.pos})")
        except (ValueError, RecursionError) as e:  # ParseError is a ValueError
            first_error = first_error or (
                e if isinstance(e, ParseError) else ParseError(f"unreadable JSON: {type(e).__name__}")
            )
        start = body.find("{", start + 1)
    if not lenient:
        raise first_error or ParseError(f"expected a JSON object: {body[:80]!r}")
    first = body.find("{")
    fenced = _FENCE.search(body)
    if fenced and (first == -1 or fenced.start() < first):  # a fence around the object, not one inside it
        candidate = fenced.group(1).strip()
    else:
        last = body.rfind("}")
        candidate = body[first : last + 1] if first != -1 and last > first else body[first:] if first != -1 else body
    try:
        data = json_repair.loads(candidate)
    except (ValueError, RecursionError) as e:  # bounded above; a last guard, never a crash
        raise ParseError(f"unreadable JSON: {type(e).__name__}") from None
    if not isinstance(data, dict):
        raise ParseError(f"expected a JSON object, got {type(data).__name__}: {body[:80]!r}")
    return _validate(data, model)


def _validate(data: dict[str, Any], model: type[M]) -> M:
    try:
        return model.model_validate(data)
    except ValidationError as e:
        err = e.errors()[0]
        where = ".".join(str(x) for x in err["loc"])
        raise ParseError(f"{where or 'object'}: {err['msg']}") from None


@dataclass
class StructuredResult(Generic[M]):
    value: M | None
    raw: list[str | None]
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.value is not None


async def ask_structured(
    client: LLMClient,
    messages: list[dict[str, Any]],
    model: type[M],
    name: str,
    *,
    temperature: float = 0.0,
    max_tokens: int | None = None,
) -> StructuredResult[M]:
    """One call, plus one repair retry when the output does not parse. Never raises for bad
    output (the failure is returned); an unreachable endpoint still raises EndpointError."""
    fmt = response_format(model, name)
    first = (
        await client.sample(
            messages, n=1, temperature=temperature, max_tokens=max_tokens, response_format=fmt, validate=unsafe_reply
        )
    )[0]
    if not first.ok:
        return StructuredResult(None, [None], error=f"request failed: {first.error}")
    try:
        return StructuredResult(parse_output(first.text, model, lenient=False), [first.text])
    except ParseError as e:
        error = str(e)
    repair = messages + [
        {"role": "assistant", "content": first.text or ""},
        {
            "role": "user",
            "content": f"Your reply could not be read: {error}. Reply again with only the corrected JSON object that matches the schema.",
        },
    ]
    second = (
        await client.sample(
            repair, n=1, temperature=temperature, max_tokens=max_tokens, response_format=fmt, validate=unsafe_reply
        )
    )[0]
    if not second.ok:
        return StructuredResult(
            None, [first.text, None], error=f"unparseable output ({error}); repair request failed: {second.error}"
        )
    if second.finish_reason == "length":  # the lenient reading would close a cut-off lesson and keep half a sentence
        return StructuredResult(
            None,
            [first.text, second.text],
            error=f"unparseable output ({error}); the repair reply was cut off at the token limit",
        )
    try:
        return StructuredResult(parse_output(second.text, model), [first.text, second.text])
    except ParseError as e2:
        return StructuredResult(None, [first.text, second.text], error=f"unparseable output after one repair: {e2}")
