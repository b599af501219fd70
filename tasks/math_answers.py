"""``math``: competition-style problems with verifiable answers, checked by math-verify.

Data: a local JSONL, JSON or Parquet file (``--data problems.jsonl``), or a Hugging Face
dataset id (``--data org/name``) when the ``datasets`` package and a network are there.
Each row needs the problem (column ``problem``, ``question`` or ``prompt``) and the reference
answer (``answer``, ``final_answer``, ``ground_truth`` or ``solution``); an ``id`` is optional.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

from math_verify import parse, verify

from tfgrpo.errors import UserError
from tfgrpo.rewards import reward
from tfgrpo.task_registry import Sample, Task, read_rows, task

PROBLEM_KEYS = ("problem", "question", "prompt")
ANSWER_KEYS = ("answer", "final_answer", "ground_truth", "solution")
CHECK_TIMEOUT_S = 10.0
# We run math-verify without its signal-based timeouts (they fail off the main thread) and
# bound each check ourselves; its warning about that is noise here.
logging.getLogger("math_verify").setLevel(logging.ERROR)

INSTRUCTIONS = (
    "Solve the math problem. Reason step by step, check your work, "
    "and put the final answer in \\boxed{} at the end."
)


def _parse_gold(answer: str) -> list[Any]:
    gold = parse(answer, parsing_timeout=None)  # signal-based timeouts fail off the main thread
    if not gold and "$" not in answer and "\\boxed" not in answer:
        gold = parse(f"${answer}$", parsing_timeout=None)
    return gold


def check(answer: str, completion: str) -> float:
    """1.0 when the completion's final answer is mathematically equal to ``answer``."""
    gold = _parse_gold(answer)
    if not gold:
        return 0.0
    pred = parse(completion or "", parsing_timeout=None)
    if not pred:
        return 0.0
    return 1.0 if verify(gold, pred, timeout_seconds=None) else 0.0


@reward
async def math_verified(sample: Sample, completion: str) -> float:
    """math-verify equality with the reference answer; a check that runs past
    CHECK_TIMEOUT_S (a pathological expression) scores 0."""
    try:
        return await asyncio.wait_for(asyncio.to_thread(check, str(sample.answer), completion), CHECK_TIMEOUT_S)
    except asyncio.TimeoutError:
        return 0.0


def _rows(data: str, split: str) -> list[dict[str, Any]]:
    if Path(data).expanduser().exists() or data.endswith((".jsonl", ".json", ".parquet")):
        return read_rows(data)
    try:
        import datasets  # optional: only for hub dataset ids
    except ImportError:
        raise UserError(f"data file not found: {data} (a Hugging Face dataset id needs: pip install datasets)") from None
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
        ident = str(row.get("id", n))
        problem = _first(row, PROBLEM_KEYS)
        if problem is None:
            raise UserError(f"{source}: row {ident} has no problem text (one of: {', '.join(PROBLEM_KEYS)})")
        answer = _first(row, ANSWER_KEYS)
        if answer is None:
            raise UserError(f"{source}: row {ident} has no answer (one of: {', '.join(ANSWER_KEYS)}), which the math reward needs")
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
