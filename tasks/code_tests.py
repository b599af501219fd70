"""``code``: write a Python function; checked by the problem's unit tests run in the sandbox.
The agent may run code (and the tests) with the ``python`` tool first."""

from __future__ import annotations

import re
import secrets
from pathlib import Path

from tfgrpo.rewards import reward
from tfgrpo.task_registry import Sample, Task, read_rows, task
from tfgrpo.tools import Limits, python_tool, run_python

DATA = Path(__file__).resolve().parent / "data" / "code.jsonl"
INSTRUCTIONS = (
    "Write the requested Python function. You have a `python` tool to run code. "
    "End with the complete function in a ```python code block."
)
_PY_BLOCK = re.compile(r"```python\s*(.*?)```", re.DOTALL | re.IGNORECASE)
TEST_LIMITS = Limits(wall_s=10, cpu_s=5, memory_mb=512)


@reward
async def tests_pass(sample: Sample, completion: str) -> float:
    """1.0 when the last ```python block passes the problem's tests in the sandbox (all of
    them, to the end)."""
    blocks = _PY_BLOCK.findall(completion or "")
    if not blocks:
        return 0.0
    # The tests must run to their end: a line the answer cannot know is printed after them, so
    # code that exits early (sys.exit(0), os._exit(0)) before the tests does not pass.
    done = f"tests done {secrets.token_hex(16)}"
    result = await run_python(f"{blocks[-1]}\n\n{sample.metadata['tests']}\nprint({done!r})\n", TEST_LIMITS)
    return 1.0 if result.ok and done in result.stdout.splitlines() else 0.0


def samples(split: str) -> list[Sample]:
    return [
        Sample(id=r["id"], prompt=r["question"], answer=r["solution"], metadata={"tests": r["tests"]})
        for r in read_rows(DATA)
        if r["split"] == split
    ]


@task
def code() -> Task:
    """Write a function, checked by unit tests in the sandbox: 3 train, 3 test."""
    return Task(
        dataset=samples("train"),
        eval_dataset=samples("test"),
        rewards=[tests_pass],
        instructions=INSTRUCTIONS,
        tools=[python_tool()],
        max_tokens=1024,
    )
