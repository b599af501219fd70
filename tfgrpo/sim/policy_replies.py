"""The SIMULATED policy model: answers demo problems, better when its context names the skill.

This is not a language model. It looks the question up in the demo data and answers right
with probability ``BASE_P``, or ``SKILLED_P`` when any system or user message contains the
problem's skill keyword (what an injected experience naming the skill provides). Each
answer is a pure function of (server seed, request seed, messages, choice index).
"""

from __future__ import annotations

import hashlib
import json
import random
import re
from decimal import Decimal, InvalidOperation
from typing import Any

from tfgrpo.sim.skills import SKILLS_BY_NAME, find_row

BASE_P = 0.3
SKILLED_P = 0.85


def expected_accuracy(covered_fraction: float) -> float:
    """Accuracy the simulator implies when this fraction of the problems' skills is named."""
    return covered_fraction * SKILLED_P + (1.0 - covered_fraction) * BASE_P


def text_of(content: Any) -> str:
    """A message's text, whether plain or a list of OpenAI content parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    return "" if content is None else str(content)


def choice_rng(server_seed: int, request_seed: Any, messages: list[dict[str, Any]], index: int, salt: str = "") -> random.Random:
    """The random stream of one choice: independent of call order and threads."""
    key = json.dumps(
        [server_seed, request_seed, salt, index, [[m.get("role"), text_of(m.get("content"))] for m in messages]],
        ensure_ascii=False,
    )
    return random.Random(hashlib.sha256(key.encode()).digest())


def _fmt(d: Decimal) -> str:
    return format(d.normalize(), "f") if d != d.to_integral_value() else str(int(d))


def wrong_answer(answer: str, rng: random.Random) -> str:
    """A plausible wrong number: off by one, a slipped digit, a missed step."""
    try:
        a = Decimal(answer)
    except InvalidOperation:
        return str(rng.randint(1, 100))
    step = Decimal(1) if a == a.to_integral_value() else Decimal("0.1")
    candidates = [a + step, a - step, a * 10, a + step * rng.randint(2, 9), a - step * rng.randint(2, 9), a * 2, (a / 2).quantize(step)]
    candidates = [c for c in candidates if c != a]
    return _fmt(rng.choice(candidates))


def policy_completion(messages: list[dict[str, Any]], rng: random.Random) -> str:
    """One simulated answer: a sentence or two of reasoning, then ``Answer: <value>``."""
    users = [text_of(m.get("content")) for m in messages if m.get("role") == "user"]
    row = None
    for text in reversed(users):
        row = find_row(text)
        if row is not None:
            break
    if row is None:
        return f"I am not sure which method applies, so I estimate.\nAnswer: {rng.randint(1, 100)}"
    skill = SKILLS_BY_NAME[row["skill"]]
    context = "\n".join(text_of(m.get("content")) for m in messages if m.get("role") in ("system", "user")).lower()
    p = SKILLED_P if skill.keyword in context else BASE_P
    # Like a real agent told to cite what it used, cite the lesson that names the skill.
    cited = re.search(r"\[(e\d+)\][^\n]*" + re.escape(skill.keyword), context)
    cite = f" (following [{cited.group(1).upper()}])" if cited else ""
    if rng.random() < p:
        opener = rng.choice(["The key step is to", "First I", "Here I"])
        return f"{opener} {skill.approach}{cite}. Working through it carefully gives {row['answer']}.\nAnswer: {row['answer']}"
    value = wrong_answer(row["answer"], rng)
    opener = rng.choice(["I take the numbers as they are given", "I compute directly from left to right", "A quick estimate is enough here"])
    return f"{opener}{cite}. That gives {value}.\nAnswer: {value}"
