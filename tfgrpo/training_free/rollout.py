"""Group sampling: G answers per query from the policy, with the library injected into the
system prompt (the same place in training and evaluation)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, Callable

from experience_store import Injection, Library
from tfgrpo.llm.client import Completion, LLMClient
from tfgrpo.training_free.agent import Trajectory
from tfgrpo.training_free.config import LibraryConfig, SamplingConfig
from tfgrpo.training_free.prompting import Prompts
from tfgrpo.rewards import combine, score_group
from tfgrpo.task_registry import Sample, Task


def stable_seed(*parts: Any) -> int:
    """A seed that depends only on its parts (not on Python's per-process hash salt)."""
    digest = hashlib.sha256(":".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF


def token_counter(model: str | None) -> Callable[[str], int]:
    """Token counting for the injection budget: the policy's tokenizer through litellm where
    it is known, else experience_store's estimate (the simulated model has no tokenizer)."""
    from experience_store import estimate_tokens
    from tfgrpo.llm.endpoints import is_sim

    if model is None or is_sim(model):
        return estimate_tokens
    import litellm

    def count(text: str) -> int:
        try:
            return int(litellm.token_counter(model=model, text=text))
        except Exception:  # unknown model or tokenizer not available offline
            return estimate_tokens(text)

    return count


def injector(library: Library, settings: LibraryConfig, model: str | None) -> Callable[[Sample], Injection]:
    """The experiences each query gets under a run's injection settings (``LibraryConfig``):
    one function for training, validation and evaluation, so all see the library alike.
    Returns ``experience_store.Injection`` (``.text`` is the block for the prompt)."""
    count = token_counter(model)

    def inject(sample: Sample) -> Injection:
        return library.inject(sample.user_text(), settings.injection, count_tokens=count)

    return inject


def agent_messages(task: Task, sample: Sample, experiences: str, prompts: Prompts) -> list[dict[str, Any]]:
    system = prompts.render(task.template, instructions=task.instructions, experiences=experiences)
    if sample.messages:
        rest = [m for m in sample.messages if m.get("role") != "system"]
        given = "\n\n".join(str(m.get("content", "")) for m in sample.messages if m.get("role") == "system")
        return [{"role": "system", "content": f"{system}\n\n{given}".strip()}, *rest]
    return [{"role": "system", "content": system}, {"role": "user", "content": sample.prompt or ""}]


@dataclass
class Group:
    """One query's G answers with their rewards (rewards[G][K]) and combined reward per answer."""

    sample: Sample
    completions: list[Completion]
    rewards: list[list[float | None]]
    combined: list[float | None]
    trajectories: list[Trajectory] | None = None  # one per answer, for tasks with tools

    def attempt_text(self, j: int) -> str:
        """Answer ``j`` as the judge sees it: the whole trajectory for a tool-calling rollout."""
        if self.trajectories is not None and self.trajectories[j] is not None:
            return self.trajectories[j].render()
        c = self.completions[j]
        return c.text if c.ok else f"(no answer: request failed: {c.error})"


async def sample_group(
    client: LLMClient,
    task: Task,
    sample: Sample,
    experiences: str,
    prompts: Prompts,
    sampling: SamplingConfig,
    *,
    seed: int,
    use_cache: bool = True,
) -> Group:
    """``sampling.group_size`` answers to one query, scored. A task with tools runs that many
    tool-calling rollouts (limits from ``sampling.agent``) instead of one request. ``seed`` is
    this group's own seed (derived from ``sampling.seed``, the epoch and the query)."""
    messages = agent_messages(task, sample, experiences, prompts)
    if task.tools:
        return await _sample_agent_group(client, task, sample, messages, sampling, seed=seed, use_cache=use_cache)
    completions = await client.sample(
        messages, n=sampling.group_size, temperature=sampling.temperature,
        max_tokens=sampling.max_tokens or task.max_tokens, seed=seed, use_cache=use_cache,
    )
    rewards = await score_group(task.rewards, sample, [c.text for c in completions])
    combined = [combine(row, task.weights) for row in rewards]
    return Group(sample=sample, completions=completions, rewards=rewards, combined=combined)


async def _sample_agent_group(client: LLMClient, task: Task, sample: Sample, messages: list[dict[str, Any]],
                              sampling: SamplingConfig, *, seed: int, use_cache: bool) -> Group:
    import asyncio

    from tfgrpo.training_free.agent import run_agent
    from tfgrpo.tools.base import toolset

    tools = toolset(task.tools)
    runs = await asyncio.gather(*(
        run_agent(client, messages, tools, limits=sampling.agent, temperature=sampling.temperature, seed=seed + i,
                  max_tokens=sampling.max_tokens or task.max_tokens, use_cache=use_cache)
        for i in range(sampling.group_size)
    ))
    completions = []
    for i, (c, _) in enumerate(runs):
        c.index = i
        completions.append(c)
    rewards = await score_group(task.rewards, sample, [c.text for c in completions])
    combined = [combine(row, task.weights) for row in rewards]
    return Group(sample=sample, completions=completions, rewards=rewards, combined=combined,
                 trajectories=[t for _, t in runs])


def group_attempts(group: Group, reward_names: list[str], indices: list[int] | None = None) -> list[Any]:
    """The group's answers as the judge sees them (``judge.Attempt``): text, combined reward,
    each reward's value by name, and whether the answer was cut off by its token limit; only the
    answers at ``indices`` (default: all), numbered from 1 in that order."""
    from tfgrpo.training_free.judge import Attempt

    out = []
    for n, j in enumerate(range(len(group.completions)) if indices is None else indices):
        c = group.completions[j]
        stopped = group.trajectories[j].stopped_by if group.trajectories and group.trajectories[j] is not None else None
        out.append(Attempt(n + 1, group.attempt_text(j), group.combined[j], dict(zip(reward_names, group.rewards[j])),
                           truncated=c.finish_reason == "length" or stopped == "tokens"))
    return out


def cited_text(c: Completion) -> str | None:
    """Where an answer's citations are read: its text and a reasoning model's reasoning."""
    return "\n".join(t for t in (c.reasoning, c.text) if t) or None


def task_context(task: Task, prompts: Prompts) -> Any:
    """What the judge is told about the task (``judge.JudgeContext``): the agent's system prompt
    without lessons, its tools, and the rewards that score it."""
    from tfgrpo.tools.base import toolset
    from tfgrpo.training_free.judge import JudgeContext

    tools = [f"{t.name}: {t.description}" for t in toolset(task.tools).values()] if task.tools else []
    objective = []
    for r in task.rewards:
        doc = " ".join((getattr(r.fn, "__doc__", None) or "").split())
        objective.append(f"{r.name} (weight {r.weight:g}){': ' + doc if doc else ''}")
    return JudgeContext(instructions=prompts.render(task.template, instructions=task.instructions, experiences=""),
                        tools=tools, objective=objective, pass_threshold=task.pass_threshold)
