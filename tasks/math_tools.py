"""``math-tools``: multi-step arithmetic with a sandboxed ``python`` tool; answers checked by
math-verify (the ``math`` task's check). Small, computed problems: tasks/data/math_tools.jsonl."""

from __future__ import annotations

import sys
from pathlib import Path

from tfgrpo.rewards import reward
from tfgrpo.task_registry import Sample, Task, available_tasks, read_rows, task
from tfgrpo.tools import python_tool

DATA = Path(__file__).resolve().parent / "data" / "math_tools.jsonl"
INSTRUCTIONS = (
    "Solve the math problem. You have a `python` tool that runs a Python program and shows what it prints. "
    "Put the final answer in \\boxed{} at the end."
)


def _math_check():
    """The ``math`` task's math-verify check (built-in tasks are loaded as one family)."""
    mod = sys.modules.get("tfgrpo_builtin_tasks.math_answers")
    if mod is None:
        available_tasks()  # imports every built-in task module
        mod = sys.modules["tfgrpo_builtin_tasks.math_answers"]
    return mod.math_verified


@reward
async def math_verified(sample: Sample, completion: str) -> float:
    """math-verify equality of the final boxed answer with the reference."""
    return await _math_check().fn(sample, completion)


def samples(split: str) -> list[Sample]:
    return [Sample(id=r["id"], prompt=r["question"], answer=r["answer"]) for r in read_rows(DATA) if r["split"] == split]


@task(name="math-tools")
def math_tools() -> Task:
    """Multi-step arithmetic with the python tool: 6 train, 6 test problems."""
    return Task(dataset=samples("train"), eval_dataset=samples("test"), rewards=[math_verified],
                instructions=INSTRUCTIONS, tools=[python_tool()], max_tokens=1024)
