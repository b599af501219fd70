"""From samples to scored groups: prompt encoding, sampling, rewards, dynamic sampling.

Rewards and advantages are the training-free loop's (``score_group``, ``combine``,
``group_advantages`` in :mod:`tfgrpo.rewards`); nothing here re-implements them.
"""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass, field

from tfgrpo.params.losses import overlong_penalty
from tfgrpo.rewards import combine, has_contrast, score_group
from tfgrpo.task_registry import Sample, Task


@dataclass
class TokenGroup:
    """One prompt and its G sampled responses, scored."""

    sample: Sample
    prompt: list[int]
    responses: list[list[int]]
    texts: list[str]
    rewards: list[list[float | None]] = field(default_factory=list)  # [G][K] (+ overlong column)
    combined: list[float | None] = field(default_factory=list)  # task reward per response, [G]


class SampleOrder:
    """Endless, seeded pass over the dataset, one shuffled epoch after another; ``cursor``
    (samples handed out so far) is all a resume needs."""

    def __init__(self, dataset: list[Sample], seed: int, cursor: int = 0):
        self.dataset, self.seed, self.cursor = dataset, seed, cursor

    def take(self, n: int) -> list[Sample]:
        out = []
        for _ in range(n):
            epoch, pos = divmod(self.cursor, len(self.dataset))
            order = list(range(len(self.dataset)))
            random.Random(self.seed * 1_000_003 + epoch).shuffle(order)
            out.append(self.dataset[order[pos]])
            self.cursor += 1
        return out


def encode_prompt(tokenizer, task: Task, sample: Sample, max_len: int) -> list[int]:
    """Token ids of what the policy sees: the chat template when the tokenizer has one
    (task instructions as system message), else the plain text. Cut from the left."""
    if getattr(tokenizer, "chat_template", None):
        messages = list(sample.messages or [{"role": "user", "content": sample.user_text()}])
        if task.instructions:
            messages.insert(0, {"role": "system", "content": task.instructions})
        ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
        if isinstance(ids, dict) or hasattr(ids, "input_ids"):
            ids = ids["input_ids"]
    else:
        text = f"{task.instructions}\n{sample.user_text()}" if task.instructions else sample.user_text()
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    return list(ids)[-max_len:]


def sample_groups(
    generator, tokenizer, task: Task, samples: list[Sample], *, group_size: int, max_prompt_len: int
) -> list[TokenGroup]:
    prompts = [encode_prompt(tokenizer, task, s, max_prompt_len) for s in samples]
    responses = generator.sample(prompts, group_size)
    return [
        TokenGroup(sample=s, prompt=p, responses=r, texts=[tokenizer.decode(t, skip_special_tokens=True) for t in r])
        for s, p, r in zip(samples, prompts, responses)
    ]


def score_groups(task: Task, groups: list[TokenGroup], *, max_len: int, overlong_buffer: int) -> None:
    """Fill ``rewards`` and ``combined``. A reward that raises on one sample gives None there
    (missing, skipped by the advantage); the step goes on. With an overlong buffer the DAPO
    length penalty is one more reward column (weight 1)."""

    async def all_groups():
        return await asyncio.gather(*(score_group(task.rewards, g.sample, g.texts) for g in groups))

    for g, table in zip(groups, asyncio.run(all_groups())):
        g.combined = [combine(row, task.weights) for row in table]
        if overlong_buffer:
            table = [row + [overlong_penalty(len(r), max_len, overlong_buffer)] for row, r in zip(table, g.responses)]
        g.rewards = table


def reward_weights(task: Task, overlong_buffer: int) -> list[float]:
    return task.weights + ([1.0] if overlong_buffer else [])


def keep_informative(groups: list[TokenGroup], weights: list[float]) -> list[TokenGroup]:
    """DAPO dynamic sampling: the groups whose (weighted) rewards are not all equal."""
    return [g for g in groups if has_contrast([combine(row, weights) for row in g.rewards])]
