"""Tools an agent can call: a typed Python function plus the JSON schema the model sees.

``@tool`` turns a function into a :class:`Tool`; the parameters' schema comes from the type
hints (through pydantic) and each parameter's description from the docstring's ``Args:``
section. :func:`call_tool` runs one call the model made and never raises: bad JSON, unknown
tools, invalid arguments, exceptions and timeouts all come back as a result the model reads,
cut to the tool's size limit with a note saying so.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import re
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterable

from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model

from tfgrpo.nesting import json_loads

DEFAULT_TIMEOUT_S = 30.0
DEFAULT_MAX_RESULT_CHARS = 8000


@dataclass
class Tool:
    """One callable tool. ``fn(**arguments)`` may be sync (run in a thread) or async."""

    name: str
    description: str
    fn: Callable[..., Any]
    arguments: type[BaseModel]
    timeout_s: float = DEFAULT_TIMEOUT_S
    max_result_chars: int = DEFAULT_MAX_RESULT_CHARS

    def schema(self) -> dict[str, Any]:
        """The OpenAI ``tools`` entry."""
        params = self.arguments.model_json_schema()
        params.pop("title", None)
        for prop in params.get("properties", {}).values():
            prop.pop("title", None)
        return {
            "type": "function",
            "function": {"name": self.name, "description": self.description, "parameters": params},
        }


def _doc_parts(doc: str) -> tuple[str, dict[str, str]]:
    """(summary, {param: description}) from a Google-style docstring."""
    doc = inspect.cleandoc(doc or "")
    head, _, rest = doc.partition("\nArgs:")
    params: dict[str, str] = {}
    current = None
    for line in rest.splitlines():
        m = re.match(r"^\s{2,}(\w+)\s*(?:\([^)]*\))?\s*:\s*(.*)$", line)
        if m:
            current = m.group(1)
            params[current] = m.group(2).strip()
        elif current and line.startswith(" " * 6) and line.strip():
            params[current] += " " + line.strip()
        elif line.strip() and not line.startswith(" "):
            break  # the next section (Returns:, ...)
    return " ".join(head.split()), params


def tool(
    fn: Callable[..., Any] | None = None,
    *,
    name: str | None = None,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    max_result_chars: int = DEFAULT_MAX_RESULT_CHARS,
):
    """Make a typed function a tool: ``@tool`` or ``@tool(name="x", timeout_s=5)``."""

    def wrap(f: Callable[..., Any]) -> Tool:
        summary, docs = _doc_parts(f.__doc__ or "")
        fields: dict[str, Any] = {}
        hints = _hints(f)
        for p in inspect.signature(f).parameters.values():
            if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
                raise TypeError(f"tool {f.__name__}: *args/**kwargs cannot be described to a model")
            if p.name not in hints:
                raise TypeError(f"tool {f.__name__}: parameter '{p.name}' needs a type hint")
            default = ... if p.default is p.empty else p.default
            fields[p.name] = (hints[p.name], Field(default, description=docs.get(p.name) or None))
        model = create_model(f"{f.__name__}_arguments", __config__=ConfigDict(extra="forbid"), **fields)
        return Tool(
            name=name or f.__name__,
            description=summary or f.__name__,
            fn=f,
            arguments=model,
            timeout_s=timeout_s,
            max_result_chars=max_result_chars,
        )

    return wrap(fn) if fn is not None else wrap


def _hints(f: Callable[..., Any]) -> dict[str, Any]:
    import typing

    try:
        return typing.get_type_hints(f)
    except Exception:  # unresolved forward references: fall back to the raw annotations
        return {k: v for k, v in getattr(f, "__annotations__", {}).items() if k != "return"}


def toolset(tools: Iterable[Tool | Callable[..., Any]] | None) -> dict[str, Tool]:
    """Tools by name; plain functions are wrapped with ``@tool``. Duplicate names are an error."""
    out: dict[str, Tool] = {}
    for t in tools or []:
        t = t if isinstance(t, Tool) else tool(t)
        if t.name in out:
            raise ValueError(f"two tools are named '{t.name}'")
        out[t.name] = t
    return out


@dataclass
class ToolOutcome:
    """What one tool call returned. ``error``: None, or the kind of failure the model was told of
    (``malformed_arguments``, ``unknown_tool``, ``invalid_arguments``, ``exception``, ``timeout``)."""

    content: str
    error: str | None = None
    truncated: bool = False
    elapsed_s: float = 0.0


def truncate(text: str, limit: int) -> tuple[str, bool]:
    if len(text) <= limit:
        return text, False
    return f"{text[:limit]}\n[truncated: {len(text) - limit} more characters of {len(text)} were cut]", True


def _stringify(value: Any) -> str:
    if isinstance(value, str):
        return value
    try:
        return json.dumps(value, ensure_ascii=False, default=str)
    except (TypeError, ValueError):
        return str(value)


async def call_tool(
    tools: dict[str, Tool], name: str, raw_arguments: str | None, *, timeout_s: float | None = None
) -> ToolOutcome:
    """Run one call as the model wrote it. Never raises for anything the call does."""
    started = time.monotonic()

    def done(content: str, error: str | None = None, limit: int = DEFAULT_MAX_RESULT_CHARS) -> ToolOutcome:
        text, cut = truncate(content, limit)
        return ToolOutcome(text, error, cut, round(time.monotonic() - started, 3))

    t = tools.get(name)
    if t is None:
        return done(
            f"Error: there is no tool named '{name}'. Available tools: {', '.join(sorted(tools)) or 'none'}.",
            "unknown_tool",
        )
    try:
        args = json_loads(raw_arguments or "{}")  # nested too deeply: a ValueError too
        if not isinstance(args, dict):
            raise ValueError(f"expected a JSON object, got {type(args).__name__}")
    except ValueError as e:
        return done(
            f"Error: the arguments of this {name} call are not a valid JSON object ({e}). "
            "Call the tool again with a JSON object of arguments.",
            "malformed_arguments",
            t.max_result_chars,
        )
    try:
        parsed = t.arguments.model_validate(args)
    except ValidationError as e:
        errs = "; ".join(f"{'.'.join(map(str, x['loc'])) or 'arguments'}: {x['msg']}" for x in e.errors()[:5])
        return done(f"Error: invalid arguments for {name}: {errs}.", "invalid_arguments", t.max_result_chars)
    kwargs = {k: getattr(parsed, k) for k in t.arguments.model_fields}
    limit_s = t.timeout_s if timeout_s is None else min(t.timeout_s, timeout_s)
    try:
        if inspect.iscoroutinefunction(t.fn):
            value = await asyncio.wait_for(t.fn(**kwargs), limit_s)
        else:
            # A sync tool that overruns keeps its thread until it returns; its result is dropped.
            value = await asyncio.wait_for(asyncio.to_thread(t.fn, **kwargs), limit_s)
    except asyncio.TimeoutError:
        return done(
            f"Error: {name} did not finish within {limit_s:g} seconds and was stopped.", "timeout", t.max_result_chars
        )
    except Exception as e:  # the tool's own failure: the model reads it and goes on
        return done(f"Error: {name} raised {type(e).__name__}: {e}", "exception", t.max_result_chars)
    return done(_stringify(value), None, t.max_result_chars)
