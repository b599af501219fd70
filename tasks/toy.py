"""``toy``: echo a letter. The smallest verifiable task, for parameter mode on a CPU.

The prompt names a letter (``echo c:``); the answer is that letter, repeated. The reward is
the share of the first ``length`` characters of the response that are that letter, so a
random-initialised model (``--model tiny``) starts near 1/vocabulary and a few dozen GRPO
steps on two CPU cores visibly raise it. The data is generated here, seeded.
"""

from __future__ import annotations

import random

from tfgrpo.rewards import reward
from tfgrpo.task_registry import Sample, Task, task


@reward
def echoes_letter(sample: Sample, completion: str) -> float:
    """Share of the first ``length`` characters of the completion equal to the asked letter."""
    length = int(sample.metadata["length"])
    return sum(1 for ch in completion[:length] if ch == sample.answer) / length


@task
def toy(n: int = 64, letters: str = "abcdef", length: int = 4, seed: int = 0) -> Task:
    """``n`` prompts ``echo <letter>:`` over ``letters``; answers of ``length`` characters."""
    rng = random.Random(seed)
    samples = []
    for i in range(n):
        letter = rng.choice(letters)
        samples.append(Sample(id=f"toy-{i}", prompt=f"echo {letter}:", answer=letter, metadata={"length": length}))
    return Task(dataset=samples, rewards=[echoes_letter], instructions="", max_tokens=length)
