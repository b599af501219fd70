"""The policy seam: what answers a query G times. ``Policy`` is the one protocol the loop and
evaluation call; ``PromptPolicy`` is the built-in agent (a prompt, and tfgrpo's tool loop for a
task with tools). Rewards are not scored here (``rollout.Scorer`` does that)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any, Protocol

from tfgrpo.llm.client import Completion, LLMClient
from tfgrpo.task_registry import Sample, Task
from tfgrpo.training_free.agent import Trajectory, run_agent
from tfgrpo.training_free.config import SamplingConfig
from tfgrpo.training_free.prompting import Prompts


@dataclass
class Rollouts:
    """A query's G answers, unscored; ``trajectories`` (one per answer) for agents that act."""

    sample: Sample
    completions: list[Completion]
    trajectories: list[Trajectory] | None = None


class Policy(Protocol):
    """Answers one query ``group_size`` times with ``experiences`` (the injected library block,
    "" for none) in its context; ``seed`` is the group's own seed. Never raises for a bad answer
    or a failed request (a failed rollout is a Completion with text None); an unreachable
    endpoint raises EndpointError."""

    async def sample_group(self, sample: Sample, experiences: str, seed: int) -> Rollouts: ...


def agent_messages(task: Task, sample: Sample, experiences: str, prompts: Prompts) -> list[dict[str, Any]]:
    system = prompts.render(task.template, instructions=task.instructions, experiences=experiences)
    if sample.messages:
        rest = [m for m in sample.messages if m.get("role") != "system"]
        given = "\n\n".join(str(m.get("content", "")) for m in sample.messages if m.get("role") == "system")
        return [{"role": "system", "content": f"{system}\n\n{given}".strip()}, *rest]
    return [{"role": "system", "content": system}, {"role": "user", "content": sample.prompt or ""}]


class PromptPolicy:
    """The built-in agent: the task's prompt template with the library in its system prompt; one
    request for G answers, or G tool-calling rollouts (limits from ``sampling.agent``) for a task
    with tools."""

    def __init__(self, client: LLMClient, task: Task, prompts: Prompts, sampling: SamplingConfig) -> None:
        self.client, self.task, self.prompts, self.sampling = client, task, prompts, sampling

    def with_sampling(self, sampling: SamplingConfig) -> "PromptPolicy":
        return PromptPolicy(self.client, self.task, self.prompts, sampling)

    async def sample_group(self, sample: Sample, experiences: str, seed: int) -> Rollouts:
        messages = agent_messages(self.task, sample, experiences, self.prompts)
        sampling, max_tokens = self.sampling, self.sampling.max_tokens or self.task.max_tokens
        if not self.task.tools:
            completions = await self.client.sample(
                messages, n=sampling.group_size, temperature=sampling.temperature, max_tokens=max_tokens, seed=seed
            )
            return Rollouts(sample, completions)
        from tfgrpo.tools.base import toolset

        tools = toolset(self.task.tools)
        runs = await asyncio.gather(
            *(
                run_agent(
                    self.client,
                    messages,
                    tools,
                    limits=sampling.agent,
                    temperature=sampling.temperature,
                    seed=seed + i,
                    max_tokens=max_tokens,
                )
                for i in range(sampling.group_size)
            )
        )
        for i, (c, _) in enumerate(runs):
            c.index = i
        return Rollouts(sample, [c for c, _ in runs], [t for _, t in runs])
