"""``digit_sums``: the sum of two single digits, answered on a line ``Answer: N``.

Each question comes after one worked example in the chat (``What is 3 + 5?`` answered
``Answer: 8``): without it SmolLM2-135M-Instruct never writes the format (0 % measured), with
it the model starts in the middle of the reward range (greedy 57 %, sampled at temperature 1
about 33 % on held-out items): the task ``bench/real_grpo.py`` uses to show GRPO teaching a real
model on a CPU. The reward is 1 when the first ``Answer: <integer>`` in the response carries the
right sum, else 0. Questions come in several phrasings; the data is generated here, seeded,
with a held-out split (``eval_dataset``) of different items.
"""

from __future__ import annotations

import random
import re

from tfgrpo.errors import UserError
from tfgrpo.rewards import reward
from tfgrpo.task_registry import Sample, Task, task

PHRASINGS = (
    "What is {a} + {b}?",
    "Compute {a} plus {b}.",
    "Add {a} and {b}.",
    "What do you get when you add {a} to {b}?",
)
# N whole: not the start of 13.9, 13/2, 13e5 or 13,000 (a full stop after it is fine)
ANSWER = re.compile(r"Answer:\s*(-?\d+)(?!\d|[.,/]\d|[eE][-+]?\d)")
EXAMPLE = [{"role": "user", "content": "What is 3 + 5?"}, {"role": "assistant", "content": "Answer: 8"}]


@reward
def answer_line(sample: Sample, completion: str) -> float:
    """1 when the first ``Answer: N`` of the completion has the right N."""
    m = ANSWER.search(completion)
    return float(m is not None and int(m.group(1)) == int(sample.answer))


@task
def digit_sums(heldout: int = 200, seed: int = 0) -> Task:
    """All 100 digit pairs in every phrasing, shuffled; the last ``heldout`` items are held out."""
    items = [(a, b, k) for a in range(10) for b in range(10) for k in range(len(PHRASINGS))]
    if not 0 < heldout < len(items):
        raise UserError(f"digit_sums: heldout must be between 1 and {len(items) - 1}, got {heldout}")
    random.Random(seed).shuffle(items)
    samples = [
        Sample(
            id=f"sum-{a}-{b}-{k}",
            answer=a + b,
            messages=EXAMPLE + [{"role": "user", "content": PHRASINGS[k].format(a=a, b=b)}],
        )
        for a, b, k in items
    ]
    return Task(
        dataset=samples[:-heldout],
        eval_dataset=samples[-heldout:],
        rewards=[answer_line],
        instructions="Reply with one line of the form 'Answer: N', where N is the number.",
        max_tokens=16,
    )
