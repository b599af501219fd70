"""What the SIMULATED model knows about the skills behind the built-in tasks.

Each ``demo`` problem exercises one skill (its row's ``skill``); each agentic task has one
tool-use skill. The simulated policy reads the lessons in its context and judges each one's
ADVICE for the problem at hand (:func:`advice`): a lesson naming the skill and telling the
right method raises its accuracy, one naming it and telling it to skip or invert the method
("never bother with unit conversion") lowers it, any other lesson costs a little. Right
answers state the skill's ``approach``, wrong ones its ``mistake``, and the simulated judge
reads those back from the attempts it is shown. Keywords never occur in the demo questions
nor in the task's instructions, so only an injected lesson can supply them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Literal

from tfgrpo.resources import read_jsonl, task_data


@dataclass(frozen=True)
class Skill:
    name: str
    keyword: str  # lower-case phrase; its presence in the context marks the skill as known
    lesson: str  # "When <condition>, <strategy>", contains ``keyword``
    rewordings: tuple[str, ...]  # other phrasings of the lesson, each containing ``keyword``
    approach: str  # one clause the simulated policy writes when it gets the problem right
    mistake: str = ""  # one clause it writes when it gets the problem wrong
    harmful: str = ""  # a lesson that names the skill but gives the wrong advice
    hard: bool = False  # right only HARD_SKILLED_P of the time even with the right lesson


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
        mistake="I use the numbers as they are given, whatever their units",
        harmful="When quantities come in different units, never bother with unit conversion: use the numbers as they are given.",
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
        mistake="I take the percent off the amount as a plain number",
        harmful="When a price or amount changes by a percentage, skip the percentage arithmetic and subtract the percent as a plain number.",
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
        mistake="I divide the length by the gap and count that many",
        harmful="When counting posts along a line, ignore the fence-post correction: the count is the length divided by the gap.",
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
        mistake="I compute strictly from left to right as written",
        harmful="When an expression mixes operators, do not bother with the order of operations and compute strictly from left to right.",
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
        mistake="I report how many full groups there are",
        harmful="When things are shared out in equal groups, ignore the remainder and answer with the number of full groups.",
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
        mistake="I round every intermediate value as I go",
        harmful="When a result must be rounded, never leave the rounding to the end; round every intermediate value as you go.",
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
        mistake="I treat the given mean as if it were the missing value",
        harmful="When a problem gives an average, do not turn the average into a total; treat it as the missing value.",
        hard=True,
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
        mistake="I subtract the hours and the minutes separately",
        harmful="When a problem involves times of day, skip the clock arithmetic and subtract the hours and the minutes separately.",
        hard=True,
    ),
)

# One tool-use skill per agentic task (math-tools, docqa, sql, code): the simulated agent
# uses its tools well far more often when its context names the keyword (sim/agent_replies.py).
TOOL_SKILLS: tuple[Skill, ...] = (
    Skill(
        "math-tools",
        "run it in python",
        "When a computation has more than two steps, write a short program and run it in python before answering; copy the printed result.",
        (
            "When arithmetic is long or error-prone, do not work it out by hand: run it in python and answer with what the program prints.",
        ),
        "wrote a program for the computation and ran it with the python tool",
        mistake="worked the arithmetic out by hand",
        harmful="When a computation has several steps, never run it in python; work it out by hand instead.",
    ),
    Skill(
        "docqa",
        "search the corpus",
        "When a question asks for a specific fact, search the corpus with its most distinctive names first, and answer only from what the passages say.",
        (
            "When a fact is asked about a named place or person, search the corpus for that name before answering instead of guessing.",
        ),
        "searched for the distinctive names and answered from the passage",
        mistake="answered from memory",
        harmful="When a question asks for a fact, do not search the corpus; answer from memory.",
    ),
    Skill(
        "sql",
        "inspect the schema",
        "When querying a database, inspect the schema first (sqlite_master) and write the query with the exact tables, columns and filters the question needs.",
        (
            "When a question is about a database, inspect the schema before writing SQL, and check that the query answers exactly what was asked.",
        ),
        "looked at the schema first and wrote the query against the exact columns",
        mistake="wrote the query without looking at the tables",
        harmful="When querying a database, skip the step to inspect the schema and write the query from the question's words.",
    ),
    Skill(
        "code",
        "run the tests",
        "When writing a function, run the tests from the problem statement in python before giving the final code, and fix every failure first.",
        ("When asked for code, run the tests with the python tool and only answer once they pass.",),
        "ran the given tests, saw the failure and fixed the code",
        mistake="gave the code without running it",
        harmful="When writing a function, never run the tests; give the code as soon as it is written.",
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


# ---------------------------------------------------------------------------------------
# Reading lessons: which lines of a context are lessons, and what a lesson advises

_ID_LINE = re.compile(r"^\s*(?:[-*]\s*)?\[(E\d+)\]\s*(\S.*?)\s*$", re.MULTILINE | re.IGNORECASE)
_BLOCK = re.compile(r"<experiences>(.*?)</experiences>", re.DOTALL | re.IGNORECASE)
# A negation before the skill's keyword within one clause: "never bother with unit conversion".
_NEGATION = r"\b(?:never|skip|skipping|ignore|ignoring|don't|do not|no need to|not bother|without)\b[^.;:]{0,60}?"

Advice = Literal["right", "harmful"]


def lesson_lines(context: str) -> list[tuple[str | None, str]]:
    """``(id, text)`` of the lessons in a context: every ``[E<n>] text`` line, and the other
    non-empty lines of an ``<experiences>`` block (id None)."""
    out = [(i.upper(), t) for i, t in _ID_LINE.findall(context)]
    for block in _BLOCK.findall(context):
        out += [(None, line.strip()) for line in block.splitlines() if line.strip() and not _ID_LINE.match(line)]
    return out


def advice(lesson: str, skill: Skill) -> Advice | None:
    """What ``lesson`` advises for a problem of ``skill``: None when it does not name the
    skill; "harmful" when its strategy (after the "When ...," condition) negates the skill's
    method or tells the skill's known mistake; else "right"."""
    low = lesson.lower()
    if skill.keyword not in low:
        return None
    strategy = low.split(",", 1)[1] if low.startswith("when ") and "," in low else low
    if re.search(_NEGATION + re.escape(skill.keyword), strategy) or (
        skill.mistake and skill.mistake.lower() in strategy
    ):
        return "harmful"
    return "right"
