"""The recording, injecting endpoint that external agents talk to.

One loopback server per run; every rollout gets a base URL of its own,
``http://127.0.0.1:PORT/r/<token>/v1``, whose token is a random secret that dies with the
rollout. Behind ``POST .../chat/completions`` the rollout's experiences (the arm's block: none,
placebo or the library's) are added to the system message, the request goes to the policy
through tfgrpo's own client (cache, retries, replicas, usage and budgets as for built-in
rollouts; the agent never sees a provider key), and the request and the answer are recorded
under the rollout. ``stream: true`` is answered as server-sent events. A call to an unknown or
finished rollout is 404, a body that is not a chat request 400, a call beyond the rollout's
limits 429: each recorded where it has a rollout, none reaching the model.
"""

from __future__ import annotations

import json
import secrets
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from experience_store.proxy import inject_messages
from tfgrpo.llm.client import Completion, LLMClient
from tfgrpo.nesting import json_loads
from tfgrpo.training_free.config import AgentConfig, SamplingConfig

MAX_BODY = 16 * 1024 * 1024  # bytes of one chat request
MAX_DEPTH = 64  # JSON nesting of one chat request


@dataclass
class Call:
    """One model call an agent made, as it made it (its messages without the injected lessons)."""

    messages: list[dict[str, Any]]
    tools: list[str] = field(default_factory=list)  # names of the tools it offered
    stream: bool = False
    content: str | None = None
    tool_calls: list[dict[str, Any]] | None = None
    finish_reason: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached: bool = False
    started_s: float = 0.0
    elapsed_s: float = 0.0
    error: str | None = None


@dataclass
class Session:
    """One rollout's endpoint: its URL, what it injects, its limits and the calls it recorded."""

    token: str
    base_url: str
    experiences: str
    seed: int
    limits: AgentConfig
    calls: list[Call] = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)
    refused: int = 0  # calls refused for the rollout's limits or a bad body

    @property
    def completion_tokens(self) -> int:
        return sum(c.completion_tokens for c in self.calls)


def _error(status: int, message: str, kind: str = "invalid_request_error") -> web.Response:
    return web.json_response({"error": {"message": message, "type": kind}}, status=status)


class Gateway:
    """The loopback server of a run's external-agent rollouts (:mod:`tfgrpo.training_free.external`)."""

    def __init__(self, client: LLMClient, sampling: SamplingConfig) -> None:
        self.client, self.sampling = client, sampling
        self.sessions: dict[str, Session] = {}
        self.late_calls = 0  # calls to an unknown or finished rollout
        self._runner: web.AppRunner | None = None
        self.port = 0

    async def start(self) -> None:
        app = web.Application(client_max_size=MAX_BODY)
        app.router.add_post("/r/{token}/v1/chat/completions", self._chat)
        app.router.add_get("/r/{token}/v1/models", self._models)
        self._runner = web.AppRunner(app, access_log=None, handler_cancellation=True)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = int(self._runner.addresses[0][1])

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def open(self, experiences: str, seed: int, limits: AgentConfig) -> Session:
        token = secrets.token_urlsafe(18)
        session = Session(token, f"http://127.0.0.1:{self.port}/r/{token}/v1", experiences, seed, limits)
        self.sessions[token] = session
        return session

    def end(self, session: Session) -> None:
        self.sessions.pop(session.token, None)

    async def _models(self, request: web.Request) -> web.Response:
        if request.match_info["token"] not in self.sessions:
            return _error(404, "unknown or finished rollout")
        return web.json_response({"object": "list", "data": [{"id": self.client.model, "object": "model"}]})

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        session = self.sessions.get(request.match_info["token"])
        if session is None:
            self.late_calls += 1
            return _error(404, "unknown or finished rollout: each rollout has its own base URL while it runs")
        try:
            body = json_loads((await request.read()).decode("utf-8"), MAX_DEPTH)
        except (ValueError, UnicodeDecodeError) as e:
            session.refused += 1
            return _error(400, f"the request body is not JSON ({str(e)[:120]})")
        messages = body.get("messages") if isinstance(body, dict) else None
        if not isinstance(messages, list) or not messages or not all(isinstance(m, dict) for m in messages):
            session.refused += 1
            return _error(400, "'messages' must be a non-empty list of message objects")
        limits = session.limits
        if len(session.calls) >= limits.max_turns or session.completion_tokens >= limits.max_tokens:
            session.refused += 1
            return _error(
                429,
                f"this rollout reached its limit ({limits.max_turns} model calls, "
                f"{limits.max_tokens} completion tokens)",
                "rate_limit_error",
            )
        tools = body.get("tools") if isinstance(body.get("tools"), list) else None
        call = Call(
            messages=messages,
            stream=bool(body.get("stream")),
            started_s=round(time.monotonic() - session.started, 3),
            tools=[str((t.get("function") or {}).get("name", "")) for t in tools or [] if isinstance(t, dict)],
        )
        session.calls.append(call)
        c = await self._ask(session, body, tools)
        call.elapsed_s = round(time.monotonic() - session.started - call.started_s, 3)
        call.content, call.tool_calls, call.finish_reason = c.text, c.tool_calls, c.finish_reason
        call.prompt_tokens, call.completion_tokens, call.cached, call.error = (
            c.prompt_tokens,
            c.completion_tokens,
            c.cached,
            c.error,
        )
        if c.error is not None and not c.tool_calls:
            return _error(502, f"the model request failed: {c.error}", "api_error")
        reply = _reply(body, self.client.model, c)
        if call.stream:
            return await _stream(request, reply, body)
        return web.json_response(reply)

    async def _ask(self, session: Session, body: dict[str, Any], tools: list[Any] | None) -> Completion:
        temperature = body.get("temperature")
        max_tokens = body.get("max_completion_tokens") or body.get("max_tokens") or self.sampling.max_tokens
        fmt = body.get("response_format") if isinstance(body.get("response_format"), dict) else None
        [c] = await self.client.sample(
            inject_messages(body["messages"], session.experiences),
            n=1,
            temperature=float(temperature) if isinstance(temperature, (int, float)) else self.sampling.temperature,
            max_tokens=int(max_tokens) if isinstance(max_tokens, int) and max_tokens > 0 else None,
            seed=session.seed,
            tools=tools,
            response_format=fmt,
        )
        return c


def _reply(body: dict[str, Any], model: str, c: Completion) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": c.text if c.text or not c.tool_calls else None}
    if c.tool_calls:
        message["tool_calls"] = c.tool_calls
    finish = c.finish_reason or ("tool_calls" if c.tool_calls else "stop")
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": str(body.get("model") or model),
        "choices": [{"index": 0, "message": message, "finish_reason": finish}],
        "usage": {
            "prompt_tokens": c.prompt_tokens,
            "completion_tokens": c.completion_tokens,
            "total_tokens": c.prompt_tokens + c.completion_tokens,
        },
    }


async def _stream(request: web.Request, reply: dict[str, Any], body: dict[str, Any]) -> web.StreamResponse:
    """The reply as chat.completion.chunk events: the role, the content, the tool calls, the
    finish reason (and the usage when ``stream_options.include_usage``), then ``[DONE]``."""
    out = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
    await out.prepare(request)
    choice = reply["choices"][0]
    base = {k: reply[k] for k in ("id", "created", "model")} | {"object": "chat.completion.chunk"}

    async def send(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> None:
        chunk = {**base, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}], **extra}
        await out.write(f"data: {json.dumps(chunk)}\n\n".encode())

    await send({"role": "assistant", "content": ""})
    if choice["message"].get("content"):
        await send({"content": choice["message"]["content"]})
    for i, tc in enumerate(choice["message"].get("tool_calls") or []):
        await send({"tool_calls": [{"index": i, **tc}]})
    await send({}, choice["finish_reason"])
    options = body.get("stream_options")
    if isinstance(options, dict) and options.get("include_usage"):
        await out.write(f"data: {json.dumps({**base, 'choices': [], 'usage': reply['usage']})}\n\n".encode())
    await out.write(b"data: [DONE]\n\n")
    await out.write_eof()
    return out
