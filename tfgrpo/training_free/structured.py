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

_THINK = re.compile(r"<think>.*?</think>", re.DOTALL | re.IGNORECASE)
_FENCE = re.compile(r"```(?:json)?\s*(.*?)```", re.DOTALL | re.IGNORECASE)


class ParseError(ValueError):
    """Model output that could not be read as the expected JSON object."""


def schema_for(model: type[BaseModel]) -> dict[str, Any]:
    return model.model_json_schema()


def response_format(model: type[BaseModel], name: str) -> dict[str, Any]:
    return {"type": "json_schema", "json_schema": {"name": name, "schema": schema_for(model), "strict": False}}


def parse_output(text: str | None, model: type[M], *, lenient: bool = True) -> M:
    """Read ``model`` from free text: strips reasoning blocks and code fences, finds the JSON
    object and validates it. ``lenient`` also repairs syntax damage (trailing commas, output cut
    off mid-object); a repaired object may have lost its tail, so the first reading of a judge
    answer is strict and only the answer to the repair request is read leniently."""
    if text is None or not text.strip():
        raise ParseError("empty output")
    body = _THINK.sub("", text).strip()
    fenced = _FENCE.search(body)
    if fenced:
        body = fenced.group(1).strip()
    start, end = body.find("{"), body.rfind("}")
    candidate = body[start : end + 1] if start != -1 and end > start else body[start:] if start != -1 else body
    try:
        data = json.loads(candidate)
    except json.JSONDecodeError as e:
        if not lenient:
            raise ParseError(f"invalid JSON ({e.msg} at character {e.pos})") from None
        data = json_repair.loads(candidate)
    if not isinstance(data, dict):
        raise ParseError(f"expected a JSON object, got {type(data).__name__}: {body[:80]!r}")
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
    use_cache: bool = True,
) -> StructuredResult[M]:
    """One call, plus one repair retry when the output does not parse. Never raises for bad
    output (the failure is returned); an unreachable endpoint still raises EndpointError."""
    fmt = response_format(model, name)
    first = (await client.sample(messages, n=1, temperature=temperature, max_tokens=max_tokens,
                                 response_format=fmt, use_cache=use_cache))[0]
    if not first.ok:
        return StructuredResult(None, [None], error=f"request failed: {first.error}")
    try:
        return StructuredResult(parse_output(first.text, model, lenient=False), [first.text])
    except ParseError as e:
        error = str(e)
    repair = messages + [
        {"role": "assistant", "content": first.text or ""},
        {"role": "user", "content": f"Your reply could not be read: {error}. Reply again with only the corrected JSON object that matches the schema."},
    ]
    second = (await client.sample(repair, n=1, temperature=temperature, max_tokens=max_tokens,
                                  response_format=fmt, use_cache=use_cache))[0]
    if not second.ok:
        return StructuredResult(None, [first.text, None], error=f"unparseable output ({error}); repair request failed: {second.error}")
    try:
        return StructuredResult(parse_output(second.text, model), [first.text, second.text])
    except ParseError as e2:
        return StructuredResult(None, [first.text, second.text], error=f"unparseable output after one repair: {e2}")
