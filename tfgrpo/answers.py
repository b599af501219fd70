"""Answer checks shared by the built-in tasks (imported normally, like any helper).

``math_verified``: math-verify equality of a completion's final answer with the reference,
used by the ``math`` and ``math-tools`` tasks.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from math_verify import parse, verify

from tfgrpo.rewards import reward

CHECK_TIMEOUT_S = 10.0
# We run math-verify without its signal-based timeouts (they fail off the main thread) and
# bound each check ourselves; its warning about that is noise here.
logging.getLogger("math_verify").setLevel(logging.ERROR)


def _parse_gold(answer: str) -> list[Any]:
    gold = parse(answer, parsing_timeout=None)  # signal-based timeouts fail off the main thread
    if not gold and "$" not in answer and "\\boxed" not in answer:
        gold = parse(f"${answer}$", parsing_timeout=None)
    return gold


def math_check(answer: str, completion: str) -> float:
    """1.0 when the completion's final answer is mathematically equal to ``answer``."""
    gold = _parse_gold(answer)
    if not gold:
        return 0.0
    pred = parse(completion or "", parsing_timeout=None)
    if not pred:
        return 0.0
    return 1.0 if verify(gold, pred, timeout_seconds=None) else 0.0


@reward
async def math_verified(sample: Any, completion: str) -> float:
    """math-verify equality with the reference answer; a check that runs past
    CHECK_TIMEOUT_S (a pathological expression) scores 0."""
    try:
        return await asyncio.wait_for(asyncio.to_thread(math_check, str(sample.answer), completion), CHECK_TIMEOUT_S)
    except asyncio.TimeoutError:
        return 0.0
