"""Groups: what the library injects into a query's prompt (the same in training and evaluation),
the scored group of G answers, and how the judge is shown it."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, Callable

from experience_store import Injection, Library
from tfgrpo.llm.client import Completion
from tfgrpo.training_free.agent import Trajectory
from tfgrpo.training_free.config import LibraryConfig
from tfgrpo.training_free.policy import Rollouts
from tfgrpo.training_free.prompting import Prompts
from tfgrpo.rewards import combine, score_group
from tfgrpo.task_registry import Sample, Task


def stable_seed(*parts: Any) -> int:
    """A seed that depends only on its parts (not on Python's per-process hash salt)."""
    digest = hashlib.sha256(":".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF


def injector(
    library: Library, settings: LibraryConfig, count_tokens: Callable[[str], int]
) -> Callable[[Sample], Injection]:
    """The experiences each query gets under a run's injection settings (``LibraryConfig``):
    one function for training, validation and evaluation, so all see the library alike.
    ``count_tokens`` is the policy client's. Returns ``experience_store.Injection`` (``.text`` is
    the block for the prompt)."""

    def inject(sample: Sample) -> Injection:
        return library.inject(sample.user_text(), settings.injection, count_tokens=count_tokens)

    return inject


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


class Scorer:
    """The reward stage: a group's answers scored by the task's rewards (rewards[G][K]) and
    combined by their weights."""

    def __init__(self, task: Task) -> None:
        self.task = task

    async def score(self, rollouts: Rollouts) -> Group:
        rewards = await score_group(self.task.rewards, rollouts.sample, [c.text for c in rollouts.completions])
        combined = [combine(row, self.task.weights) for row in rewards]
        return Group(
            sample=rollouts.sample,
            completions=rollouts.completions,
            rewards=rewards,
            combined=combined,
            trajectories=rollouts.trajectories,
        )


def group_attempts(group: Group, reward_names: list[str], indices: list[int] | None = None) -> list[Any]:
    """The group's answers as the judge sees them (``judge.Attempt``): text, combined reward,
    each reward's value by name, and whether the answer was cut off by its token limit; only the
    answers at ``indices`` (default: all), numbered from 1 in that order."""
    from tfgrpo.training_free.judge import Attempt

    out = []
    for n, j in enumerate(range(len(group.completions)) if indices is None else indices):
        c = group.completions[j]
        stopped = group.trajectories[j].stopped_by if group.trajectories and group.trajectories[j] is not None else None
        out.append(
            Attempt(
                n + 1,
                group.attempt_text(j),
                group.combined[j],
                dict(zip(reward_names, group.rewards[j])),
                truncated=c.finish_reason == "length" or stopped == "tokens",
            )
        )
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
    return JudgeContext(
        instructions=prompts.render(task.template, instructions=task.instructions, experiences=""),
        tools=tools,
        objective=objective,
        pass_threshold=task.pass_threshold,
    )
