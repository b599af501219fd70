"""Tool-calling rollouts: the model calls tools, reads their results and ends with an answer.

One rollout is a loop of model turns through the OpenAI tools API (litellm passes it to every
provider that has it). Limits per rollout: turns, completion tokens and wall-clock time. A
rollout that hits one is scored on its last answer as it stands and marked (``stopped_by``),
never dropped from its group. Everything is recorded in a :class:`Trajectory`: each message,
tool call, tool result, timing and token count, persisted with the rollout in rollouts.jsonl,
and rendered as text for the judge, whose summary stage condenses it.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, Literal

from pydantic import BaseModel, Field

from tfgrpo.training_free.config import AgentConfig
from tfgrpo.llm.client import Completion, LLMClient
from tfgrpo.tools.base import Tool, call_tool, truncate

StopReason = Literal["turns", "tokens", "time", "error"]
RENDER_RESULT_CHARS = 600  # tool results shown to the judge per call


class ToolCallRecord(BaseModel):
    id: str
    name: str
    arguments: str  # as the model wrote it (possibly not JSON)
    result: str
    error: str | None = None
    truncated: bool = False
    elapsed_s: float = 0.0


class TurnRecord(BaseModel):
    index: int
    started_s: float  # since the rollout began
    elapsed_s: float
    prompt_tokens: int = 0
    completion_tokens: int = 0
    finish_reason: str | None = None
    cached: bool = False
    content: str | None = None
    tool_calls: list[ToolCallRecord] = Field(default_factory=list)
    error: str | None = None


class Trajectory(BaseModel):
    """A whole rollout. Field order is the file format."""

    version: int = 1
    messages: list[dict[str, Any]]
    turns: list[TurnRecord] = Field(default_factory=list)
    final: str | None = None
    stopped_by: StopReason | None = None
    tool_calls: int = 0
    tool_errors: int = 0
    malformed_tool_calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    wall_s: float = 0.0
    # an external agent's rollout (tfgrpo.training_free.external): why it failed, the tail of its
    # stderr, and the calls its endpoint refused (over its limits, or not a chat request)
    agent_error: str | None = None
    stderr_tail: str | None = None
    refused_calls: int = 0

    def render(self) -> str:
        """What the agent did, step by step, for the judge."""
        lines = []
        for t in self.turns:
            if t.content and t.content.strip():
                lines.append(f"Step {t.index + 1}, the agent wrote: {t.content.strip()}")
            for c in t.tool_calls:
                result, _ = truncate(c.result, RENDER_RESULT_CHARS)
                note = f" [{c.error}]" if c.error else ""
                lines.append(f"Step {t.index + 1}, the agent called {c.name}({c.arguments}){note}\n  -> {result}")
            if t.error:
                lines.append(f"Step {t.index + 1}: the model request failed: {t.error}")
        if self.stopped_by:
            lines.append(
                f"The rollout was stopped by its {self.stopped_by} limit before a final answer; scored as it stood."
            )
        if self.refused_calls:
            lines.append(
                f"{self.refused_calls} of the agent's model calls were refused (over its limits or malformed)."
            )
        if self.stderr_tail and self.stderr_tail.strip():
            lines.append(f"The agent's error output ended with:\n{self.stderr_tail.strip()[-800:]}")
        lines.append(f"Final answer: {self.final if self.final else '(none)'}")
        return "\n".join(lines)


async def run_agent(
    client: LLMClient,
    messages: list[dict[str, Any]],
    tools: dict[str, Tool],
    *,
    limits: AgentConfig,
    temperature: float,
    seed: int | None,
    max_tokens: int | None = None,
) -> tuple[Completion, Trajectory]:
    """One rollout. Returns the final answer as a :class:`Completion` (text None only when the
    very first request failed) and the full trajectory. Never raises for what the model or a
    tool does; an unreachable endpoint still raises (a systemic failure)."""
    started = time.monotonic()
    traj = Trajectory(messages=[dict(m) for m in messages])
    schemas = [t.schema() for t in tools.values()]
    last_text: str | None = None
    all_cached = True
    error: str | None = None
    for turn in range(limits.max_turns):
        remaining_s = limits.wall_s - (time.monotonic() - started)
        remaining_tokens = limits.max_tokens - traj.completion_tokens
        if remaining_s <= 0:
            traj.stopped_by = "time"
            break
        if remaining_tokens <= 0:
            traj.stopped_by = "tokens"
            break
        per_turn = min(remaining_tokens, max_tokens) if max_tokens else remaining_tokens
        t0 = time.monotonic()
        try:
            [c] = await asyncio.wait_for(
                client.sample(
                    traj.messages, n=1, temperature=temperature, max_tokens=per_turn, seed=seed, tools=schemas
                ),
                remaining_s,
            )
        except asyncio.TimeoutError:
            traj.stopped_by = "time"
            break
        record = TurnRecord(
            index=turn,
            started_s=round(t0 - started, 3),
            elapsed_s=round(time.monotonic() - t0, 3),
            prompt_tokens=c.prompt_tokens,
            completion_tokens=c.completion_tokens,
            finish_reason=c.finish_reason,
            cached=c.cached,
            content=c.text,
            error=c.error,
        )
        traj.turns.append(record)
        traj.prompt_tokens += c.prompt_tokens
        traj.completion_tokens += c.completion_tokens
        all_cached = all_cached and c.cached
        if not c.ok:
            error = c.error
            traj.stopped_by = "error"
            break
        if c.text and c.text.strip():
            last_text = c.text
        if not c.tool_calls:
            traj.messages.append({"role": "assistant", "content": c.text or ""})
            traj.final = c.text
            break
        traj.messages.append({"role": "assistant", "content": c.text or None, "tool_calls": c.tool_calls})
        for call in c.tool_calls:
            fn = call.get("function") or {}
            name, raw = str(fn.get("name", "")), str(fn.get("arguments", ""))
            remaining_s = limits.wall_s - (time.monotonic() - started)
            outcome = await call_tool(tools, name, raw, timeout_s=max(remaining_s, 0.001))
            record.tool_calls.append(
                ToolCallRecord(
                    id=call["id"],
                    name=name,
                    arguments=raw,
                    result=outcome.content,
                    error=outcome.error,
                    truncated=outcome.truncated,
                    elapsed_s=outcome.elapsed_s,
                )
            )
            traj.tool_calls += 1
            traj.tool_errors += outcome.error is not None
            traj.malformed_tool_calls += outcome.error == "malformed_arguments"
            traj.messages.append({"role": "tool", "tool_call_id": call["id"], "name": name, "content": outcome.content})
    else:
        traj.stopped_by = "turns"
    if traj.final is None:
        traj.final = last_text  # scored as it stands
    traj.wall_s = round(time.monotonic() - started, 3)
    failed_at_once = error is not None and len(traj.turns) == 1
    completion = Completion(
        text=None if failed_at_once else (traj.final or ""),
        index=0,
        finish_reason=f"limit:{traj.stopped_by}" if traj.stopped_by else "stop",
        error=error,
        cached=all_cached and bool(traj.turns),
        prompt_tokens=traj.prompt_tokens,
        completion_tokens=traj.completion_tokens,
    )
    return completion, traj
