"""The SIMULATED policy model: answers demo problems, better when a lesson in its context
gives the right advice for the problem.

This is not a language model. It looks the question up in the demo data (its "knowledge" of
the problem), reads the lessons in its context (``[E<n>] ...`` lines and the other lines of an
``<experiences>`` block, plus any line naming a skill) and judges each one's advice for the
problem's skill (:func:`tfgrpo.sim.skills.advice`). Each answer follows each relevant lesson
with probability ``FOLLOW_P`` and cites the ones it followed. A followed harmful lesson gives
``HARMED_P``; else a followed right one ``SKILLED_P``; else ``BASE_P``; hard skills use the
``HARD_*`` levels (0.2 even with the right lesson). Every lesson that does not concern the
problem costs ``DILUTION`` of the accuracy (context dilution). Each answer is a pure function
of (server seed, request seed, messages, choice index).
"""

from __future__ import annotations

import hashlib
import json
import random
from decimal import Decimal, InvalidOperation
from typing import Any

from tfgrpo.sim.skills import SKILLS_BY_NAME, Skill, advice, find_row, lesson_lines, skill_in_text

BASE_P = 0.3
SKILLED_P = 0.85
HARMED_P = 0.1
HARD_BASE_P = 0.05
HARD_SKILLED_P = 0.2
HARD_HARMED_P = 0.02
FOLLOW_P = 0.8  # chance that one answer follows (and cites) one relevant lesson in its context
DILUTION = 0.015  # share of the accuracy lost per lesson that does not concern the problem
MAX_DILUTION = 0.15
STRAY_CITE_P = 0.05  # chance that an answer also cites one lesson it did not use


def levels(skill: Skill) -> tuple[float, float, float]:
    """(without a lesson, following a right one, following a harmful one) for ``skill``."""
    return (HARD_BASE_P, HARD_SKILLED_P, HARD_HARMED_P) if skill.hard else (BASE_P, SKILLED_P, HARMED_P)


def _dilution(irrelevant: int) -> float:
    return 1.0 - min(MAX_DILUTION, DILUTION * irrelevant)


def expected_accuracy(skill: Skill, lessons: list[str]) -> float:
    """The accuracy the policy has on a problem of ``skill`` with these lessons in context."""
    kinds = [advice(t, skill) for t in lessons]
    base, skilled, harmed = levels(skill)
    p_harm = 1 - (1 - FOLLOW_P) ** kinds.count("harmful")
    p_right = (1 - p_harm) * (1 - (1 - FOLLOW_P) ** kinds.count("right"))
    acc = p_harm * harmed + p_right * skilled + (1 - p_harm - p_right) * base
    return acc * _dilution(kinds.count(None))


def context_lessons(context: str) -> list[tuple[str | None, str]]:
    """The lessons the policy reads in its context: lesson lines, and any other line that
    names a skill (a hint written into the prompt)."""
    lessons = lesson_lines(context)
    listed = {t for _, t in lessons}
    extra = [
        (None, line.strip())
        for line in context.splitlines()
        if line.strip() and line.strip() not in listed and skill_in_text(line) and not lesson_lines(line)
    ]
    return lessons + extra


def follow(
    skill: Skill, lessons: list[tuple[str | None, str]], rng: random.Random
) -> tuple[float, list[str], str | None]:
    """One answer's chance of being right, the ids it cites and the advice it followed
    ("harmful", "right" or None), given the lessons it reads."""
    base, skilled, harmed = levels(skill)
    kinds = [(i, advice(t, skill)) for i, t in lessons]
    followed = [(i, k) for i, k in kinds if k is not None and rng.random() < FOLLOW_P]
    used = "harmful" if any(k == "harmful" for _, k in followed) else "right" if followed else None
    p = {"harmful": harmed, "right": skilled, None: base}[used]
    cites = [i for i, _ in followed if i]
    stray = [i for i, k in kinds if k is None and i]
    if stray and rng.random() < STRAY_CITE_P:
        cites.append(rng.choice(stray))
    return p * _dilution(sum(1 for _, k in kinds if k is None)), cites, used


def text_of(content: Any) -> str:
    """A message's text, whether plain or a list of OpenAI content parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    return "" if content is None else str(content)


def choice_rng(
    server_seed: int, request_seed: Any, messages: list[dict[str, Any]], index: int, salt: str = ""
) -> random.Random:
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
    candidates = [
        a + step,
        a - step,
        a * 10,
        a + step * rng.randint(2, 9),
        a - step * rng.randint(2, 9),
        a * 2,
        (a / 2).quantize(step),
    ]
    candidates = [c for c in candidates if c != a]
    return _fmt(rng.choice(candidates))


def policy_completion(messages: list[dict[str, Any]], rng: random.Random) -> str:
    """One simulated answer: a sentence or two of reasoning, then ``Answer: <value>``. A right
    answer states the skill's approach; a wrong one its mistake, or the approach with a slip
    when it followed a lesson."""
    users = [text_of(m.get("content")) for m in messages if m.get("role") == "user"]
    row = None
    for text in reversed(users):
        row = find_row(text)
        if row is not None:
            break
    if row is None:
        return f"I am not sure which method applies, so I estimate.\nAnswer: {rng.randint(1, 100)}"
    skill = SKILLS_BY_NAME[row["skill"]]
    context = "\n".join(text_of(m.get("content")) for m in messages if m.get("role") in ("system", "user"))
    p, cites, used = follow(skill, context_lessons(context), rng)
    cite = f" (following {', '.join(f'[{i}]' for i in cites)})" if cites else ""
    if rng.random() < p:
        opener = rng.choice(["The key step is to", "First I", "Here I"])
        return f"{opener} {skill.approach}{cite}. Working through it carefully gives {row['answer']}.\nAnswer: {row['answer']}"
    value = wrong_answer(row["answer"], rng)
    if used == "right":  # it followed the right advice and still slipped
        return f"First I {skill.approach}{cite}, but I slip in the arithmetic. That gives {value}.\nAnswer: {value}"
    return f"{skill.mistake}{cite}. That gives {value}.\nAnswer: {value}"
