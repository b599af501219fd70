"""``math-tools``: multi-step arithmetic with a sandboxed ``python`` tool; answers checked by
math-verify (tfgrpo.answers, the ``math`` task's check too). Small, computed problems: tasks/data/math_tools.jsonl."""

from __future__ import annotations

from pathlib import Path

from tfgrpo.answers import math_verified
from tfgrpo.task_registry import Sample, Task, read_rows, task
from tfgrpo.tools import python_tool

DATA = Path(__file__).resolve().parent / "data" / "math_tools.jsonl"
INSTRUCTIONS = (
    "Solve the math problem. You have a `python` tool that runs a Python program and shows what it prints. "
    "Put the final answer in \\boxed{} at the end."
)


def samples(split: str) -> list[Sample]:
    return [
        Sample(id=r["id"], prompt=r["question"], answer=r["answer"]) for r in read_rows(DATA) if r["split"] == split
    ]


@task(name="math-tools")
def math_tools() -> Task:
    """Multi-step arithmetic with the python tool: 6 train, 6 test problems."""
    return Task(
        dataset=samples("train"),
        eval_dataset=samples("test"),
        rewards=[math_verified],
        instructions=INSTRUCTIONS,
        tools=[python_tool()],
        max_tokens=1024,
    )
