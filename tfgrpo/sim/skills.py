"""The hidden skills of the built-in ``demo`` task, shared by the task and the SIMULATED model.

Each demo problem exercises one skill. The simulated policy answers a problem much better
when its context names the skill's keyword phrase (as a learned experience would), and the
simulated judge proposes the skill's lesson. Keywords never occur in the demo questions
themselves nor in the task's instructions, so only an injected experience can supply them.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from tfgrpo.resources import read_jsonl, task_data


@dataclass(frozen=True)
class Skill:
    name: str
    keyword: str  # lower-case phrase; its presence in the context marks the skill as known
    lesson: str  # "When <condition>, <strategy>", contains ``keyword``
    rewordings: tuple[str, ...]  # other phrasings of the lesson, each containing ``keyword``
    approach: str  # one clause the simulated policy writes when it gets the problem right


SKILLS: tuple[Skill, ...] = (
    Skill(
        "unit_conversion",
        "unit conversion",
        "When quantities are given in different units, do the unit conversion to one common unit before any other arithmetic.",
        (
            "When a question asks for a result in another unit, finish with an explicit unit conversion (e.g. 1 m = 100 cm, 1 kg = 1000 g).",
            "When units differ, write the unit conversion factor down and multiply by it, checking the result has the unit asked for.",
        ),
        "convert everything to the unit asked for first",
    ),
    Skill(
        "percentage",
        "percentage",
        "When a price or amount changes by a percentage, convert the percentage to a decimal and apply it to the original amount.",
        (
            "When a percentage discount or increase is given, multiply the original amount by (1 - p/100) or (1 + p/100).",
            "When asked for a percentage of something, divide the percentage by 100 before multiplying.",
        ),
        "turn the percent into a decimal and apply it to the original amount",
    ),
    Skill(
        "fence_post",
        "fence-post",
        "When counting posts, trees or stops at both ends of equal gaps, avoid the fence-post error: n gaps need n + 1 items.",
        (
            "When items stand at both ends of a line of equal gaps, remember the fence-post rule: items = length / gap + 1.",
            "When counting markers along a line including both ends, apply the fence-post correction and add one to the number of gaps.",
        ),
        "count the gaps, then add one for the post at the start",
    ),
    Skill(
        "order_of_operations",
        "order of operations",
        "When an expression mixes operators, follow the order of operations: brackets, then multiplication and division left to right, then addition and subtraction.",
        (
            "When evaluating a written expression, respect the order of operations instead of computing left to right.",
            "When + and x appear together, apply the order of operations: do every multiplication and division before adding or subtracting.",
        ),
        "do the multiplication and division before the addition and subtraction",
    ),
    Skill(
        "remainder",
        "remainder",
        "When things are shared out in equal groups and the question asks what is left, compute the remainder of the division, not the quotient.",
        (
            "When a question asks how many are left over after equal sharing, the answer is the remainder: total - groups x size.",
            "When dividing items into full groups, find the largest multiple that fits and report the remainder that is left.",
        ),
        "find how many full groups fit and take what is left over",
    ),
    Skill(
        "rounding",
        "rounding",
        "When a result must be given to some number of decimal places, do the rounding last and look only at the next digit: 5 or more rounds up.",
        (
            "When rounding to a decimal place, look at the first dropped digit only; 5 or more rounds the kept digit up.",
            "When asked to round, keep the exact value until the end, then apply rounding once at the requested place.",
        ),
        "keep the exact value and round once at the requested place",
    ),
    Skill(
        "average",
        "average",
        "When a problem gives an average (mean), turn it into a total by multiplying by the count, then solve for the missing value.",
        (
            "When a mean of several values is known, the average times the count gives the total; subtract the known values to find the rest.",
            "When working with an average, reason with totals (average x count) rather than with the average directly.",
        ),
        "turn the mean into a total and subtract the known values",
    ),
    Skill(
        "clock",
        "clock arithmetic",
        "When a problem involves times of day, use clock arithmetic: convert times to minutes after midnight, subtract, and add 24 hours if the end is past midnight.",
        (
            "When computing a duration between two times, do the clock arithmetic in minutes after midnight rather than subtracting hours and minutes separately.",
            "When adding minutes to a time, use clock arithmetic modulo 60 minutes and 24 hours, carrying into the hour.",
        ),
        "convert both times to minutes after midnight and subtract",
    ),
)

# One tool-use skill per agentic task (math-tools, docqa, sql, code): the simulated agent
# uses its tools well far more often when its context names the keyword (sim/agent_replies.py).
TOOL_SKILLS: tuple[Skill, ...] = (
    Skill(
        "math-tools",
        "run it in python",
        "When a computation has more than two steps, write a short program and run it in python before answering; copy the printed result.",
        ("When arithmetic is long or error-prone, do not work it out by hand: run it in python and answer with what the program prints.",),
        "wrote a program for the computation and ran it with the python tool",
    ),
    Skill(
        "docqa",
        "search the corpus",
        "When a question asks for a specific fact, search the corpus with its most distinctive names first, and answer only from what the passages say.",
        ("When a fact is asked about a named place or person, search the corpus for that name before answering instead of guessing.",),
        "searched for the distinctive names and answered from the passage",
    ),
    Skill(
        "sql",
        "inspect the schema",
        "When querying a database, inspect the schema first (sqlite_master) and write the query with the exact tables, columns and filters the question needs.",
        ("When a question is about a database, inspect the schema before writing SQL, and check that the query answers exactly what was asked.",),
        "looked at the schema first and wrote the query against the exact columns",
    ),
    Skill(
        "code",
        "run the tests",
        "When writing a function, run the tests from the problem statement in python before giving the final code, and fix every failure first.",
        ("When asked for code, run the tests with the python tool and only answer once they pass.",),
        "ran the given tests, saw the failure and fixed the code",
    ),
)
ALL_SKILLS: tuple[Skill, ...] = SKILLS + TOOL_SKILLS
SKILLS_BY_NAME: dict[str, Skill] = {s.name: s for s in SKILLS}
TOOL_SKILLS_BY_TASK: dict[str, Skill] = {s.name: s for s in TOOL_SKILLS}

# A lesson that names no skill: the simulated judge proposes it now and then, as a real
# judge sometimes writes an unhelpful generic rule.
VAGUE_LESSON = "When unsure, re-check the arithmetic before answering."


def skill_in_text(text: str) -> Skill | None:
    """The first skill whose keyword occurs in ``text`` (case-insensitive)."""
    low = text.lower()
    for s in ALL_SKILLS:
        if s.keyword in low:
            return s
    return None


@lru_cache(maxsize=1)
def demo_rows() -> tuple[dict[str, Any], ...]:
    """The rows of ``tasks/data/demo.jsonl`` (id, split, skill, question, answer)."""
    return read_jsonl(task_data("demo.jsonl"))


@lru_cache(maxsize=1)
def _rows_by_question() -> dict[str, dict[str, Any]]:
    return {r["question"].strip(): r for r in demo_rows()}


def find_row(text: str) -> dict[str, Any] | None:
    """The demo row whose question is ``text`` (after strip), else the longest question that
    occurs inside ``text`` (a prompt template may wrap the question)."""
    text = text.strip()
    by_q = _rows_by_question()
    if text in by_q:
        return by_q[text]
    inside = [q for q in by_q if q in text]
    return by_q[max(inside, key=len)] if inside else None

