"""``demo``: short word problems over eight hidden skills, made for the simulated model.

Each problem exercises one skill (unit conversion, percentages, fence-post counting, ...),
named in the row's ``skill`` field. The built-in SIMULATED model answers a problem far more
often when its context holds a lesson whose advice is right for that skill, so a run with
``--model sim`` shows the library being learned end to end, offline. The problems are real,
with correct answers; any model can be scored on them.
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation
from pathlib import Path

from tfgrpo.rewards import reward
from tfgrpo.task_registry import Sample, Task, read_rows, task

DATA = Path(__file__).resolve().parent / "data" / "demo.jsonl"

INSTRUCTIONS = (
    "Solve the word problem. Reason briefly, in a few sentences, "
    "then end with a final line of the form `Answer: <value>` giving only the number."
)

_ANSWER_LINE = re.compile(r"^\W*answer\W*:\s*(.+?)\s*$", re.IGNORECASE | re.MULTILINE)
_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?|-?\.\d+")


def final_answer(completion: str) -> str | None:
    """The value on the last ``Answer: <value>`` line, or None when there is none."""
    found = _ANSWER_LINE.findall(completion or "")
    return found[-1].strip().strip("*`").strip() if found else None


def _number(text: str) -> Decimal | None:
    m = _NUMBER.search(text)
    if m is None:
        return None
    try:
        return Decimal(m.group().replace(",", ""))
    except InvalidOperation:
        return None


def same_answer(given: str, expected: str) -> bool:
    """Numeric equality when both sides hold a number ("12.0" == "$12" == "12"), else text."""
    a, b = _number(given), _number(expected)
    if a is not None and b is not None:
        return a == b
    return given.strip().lower() == expected.strip().lower()


@reward
def exact_answer(sample: Sample, completion: str) -> float:
    """1.0 when the final ``Answer:`` line equals the reference answer, else 0.0."""
    given = final_answer(completion)
    return 1.0 if given is not None and same_answer(given, str(sample.answer)) else 0.0


def _samples(split: str) -> list[Sample]:
    rows = [r for r in read_rows(DATA) if r["split"] == split]
    for r in rows:
        if not isinstance(r.get("skill"), str) or not r["skill"]:
            raise ValueError(f"{DATA}: row {r['id']} names no skill")
    return [Sample(id=r["id"], prompt=r["question"], answer=r["answer"], metadata={"skill": r["skill"]}) for r in rows]


@task
def demo() -> Task:
    """Word problems over eight hidden skills: 32 train, 32 test samples."""
    return Task(
        dataset=_samples("train"),
        eval_dataset=_samples("test"),
        rewards=[exact_answer],
        instructions=INSTRUCTIONS,
        max_tokens=256,
    )
