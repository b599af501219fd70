"""``math``: competition-style problems with verifiable answers, checked by math-verify.

Data: a local JSONL, JSON or Parquet file (``--data problems.jsonl``), or a Hugging Face
dataset id (``--data org/name``) when the ``datasets`` package and a network are there.
Each row needs the problem (column ``problem``, ``question`` or ``prompt``) and the reference
answer (``answer``, ``final_answer``, ``ground_truth`` or ``solution``); an ``id`` is optional.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tfgrpo.answers import math_verified
from tfgrpo.errors import UserError
from tfgrpo.task_registry import Sample, Task, read_rows, task

PROBLEM_KEYS = ("problem", "question", "prompt")
ANSWER_KEYS = ("answer", "final_answer", "ground_truth", "solution")
INSTRUCTIONS = (
    "Solve the math problem. Reason step by step, check your work, and put the final answer in \\boxed{} at the end."
)


def _rows(data: str, split: str) -> list[dict[str, Any]]:
    if Path(data).expanduser().exists() or data.endswith((".jsonl", ".json", ".parquet")):
        return read_rows(data)
    try:
        import datasets  # optional: only for hub dataset ids
    except ImportError:
        raise UserError(
            f"data file not found: {data} (a Hugging Face dataset id needs: pip install datasets)"
        ) from None
    try:
        return [dict(r) for r in datasets.load_dataset(data, split=split)]
    except Exception as e:
        raise UserError(f"could not load dataset {data!r} split {split!r}: {type(e).__name__}: {e}") from None


def _first(row: dict[str, Any], keys: tuple[str, ...]) -> Any:
    for k in keys:
        if row.get(k) not in (None, ""):
            return row[k]
    return None


def samples_from_rows(rows: list[dict[str, Any]], source: str) -> list[Sample]:
    samples = []
    for n, row in enumerate(rows, 1):
        ident = row.get("id", n)
        if isinstance(ident, bool) or not isinstance(ident, (str, int)):
            raise UserError(f"{source}: row {n} has an id of type {type(ident).__name__}; ids are strings or integers")
        ident = str(ident)
        problem = _first(row, PROBLEM_KEYS)
        if problem is None:
            raise UserError(f"{source}: row {ident} has no problem text (one of: {', '.join(PROBLEM_KEYS)})")
        answer = _first(row, ANSWER_KEYS)
        if answer is None:
            raise UserError(
                f"{source}: row {ident} has no answer (one of: {', '.join(ANSWER_KEYS)}), which the math reward needs"
            )
        meta = {k: v for k, v in row.items() if k not in (*PROBLEM_KEYS, *ANSWER_KEYS, "id")}
        samples.append(Sample(id=ident, prompt=str(problem), answer=str(answer), metadata=meta))
    return samples


@task
def math(data: str | None = None, split: str = "train", max_tokens: int | None = None) -> Task:
    """Math problems from ``data``; rewards by math-verify."""
    if data is None:
        raise UserError("task math needs data: --data problems.jsonl (JSONL/JSON/Parquet) or a dataset id")
    samples = samples_from_rows(_rows(data, split), data)
    return Task(dataset=samples, rewards=[math_verified], instructions=INSTRUCTIONS, max_tokens=max_tokens)
