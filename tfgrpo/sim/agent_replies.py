"""The SIMULATED tool-calling agent for the agentic tasks (math-tools, docqa, sql, code).

Not a language model. It recognises a question of one of the bundled agentic datasets and
plays a plan: which tool calls to make and how to answer from what they return. Whether it
takes the good plan (use the tool well) or a poor one depends on a random draw, far more
often good when a lesson in its context gives the right tool-use advice, less often when one
gives harmful advice (the policy's levels, tfgrpo.sim.policy_replies.follow). The final
answer says what the agent did (the skill's approach or its mistake) and cites the lessons
it followed. Answers come from the real tool results: the python tool's printed output, the
passages the BM25 search returned, the SQL the agent settled on, the code whose tests ran.
The plan of a rollout is drawn once from (seed, first messages), so it stays the same over
the rollout's turns; malformed tool-call arguments returned to it are simply retried.
"""

from __future__ import annotations

import json
import random
import re
from functools import lru_cache
from typing import Any, Callable

from tfgrpo.sim.policy_replies import context_lessons, follow, text_of, wrong_answer
from tfgrpo.sim.skills import TOOL_SKILLS_BY_TASK
from tfgrpo.resources import read_jsonl, task_data

BASE_P = 0.3  # chance of a right answer by hand when the poor plan is drawn
DATA = {"math-tools": "math_tools.jsonl", "docqa": "docqa.jsonl", "sql": "sql.jsonl", "code": "code.jsonl"}
MALFORMED_NOTE = "Error: the arguments of this"


@lru_cache(maxsize=1)
def _rows() -> dict[str, tuple[str, dict[str, Any]]]:
    out = {}
    for task, name in DATA.items():
        for row in read_jsonl(task_data(name)):
            out[row["question"].strip()] = (task, row)
    return out


def find_tool_row(text: str) -> tuple[str, dict[str, Any]] | None:
    """(task, row) of the agentic question that is ``text`` or occurs in it."""
    rows = _rows()
    text = text.strip()
    if text in rows:
        return rows[text]
    inside = [q for q in rows if q in text]
    return rows[max(inside, key=len)] if inside else None


Call = tuple[str, dict[str, Any]]
Plan = tuple[list[Call], Callable[[list[str]], str]]  # tool calls, then the answer from their results


def _last_number(text: str) -> str | None:
    m = re.findall(r"-?\d+(?:\.\d+)?", text.split("stdout:", 1)[-1])
    return m[-1] if m else None


def _plan(task: str, row: dict[str, Any], good: bool, rng: random.Random) -> Plan:
    if task == "math-tools":
        if good:
            return [
                ("python", {"code": row["code"]})
            ], lambda res: f"The program printed {_last_number(res[-1])}.\n\\boxed{{{_last_number(res[-1])}}}"
        value = row["answer"] if rng.random() < BASE_P else wrong_answer(row["answer"], rng)
        return [], lambda res: f"Working it out by hand, I get {value}.\n\\boxed{{{value}}}"
    if task == "docqa":
        answer = row["answer"]
        if good:
            return [
                ("search", {"query": row["query"]})
            ], lambda res: f"The passage says so.\nAnswer: {answer if answer.lower() in res[-1].lower() else 'unknown'}"
        guess = rng.choice(["1900", "Mirefield", "Tuesday", "Anselm", "300", "Brenmoor"])
        return [], lambda res: f"I believe I remember this.\nAnswer: {guess}"
    if task == "sql":
        if good:
            calls = [
                ("sql", {"query": "SELECT name, sql FROM sqlite_master WHERE type = 'table'"}),
                ("sql", {"query": row["sql"]}),
            ]
            return calls, lambda res: f"The query returns:\n{res[-1]}\n```sql\n{row['sql']}\n```"
        return [
            ("sql", {"query": row["wrong_sql"]})
        ], lambda res: f"The query returns:\n{res[-1]}\n```sql\n{row['wrong_sql']}\n```"
    if task == "code":
        tests = row["tests"]
        if good:
            calls = [("python", {"code": f"{row['solution']}\n\n{tests}\nprint('all tests passed')"})]
            if rng.random() < 0.5:  # a first try with the bug, caught by the tests, then fixed
                calls.insert(0, ("python", {"code": f"{row['buggy']}\n\n{tests}\nprint('all tests passed')"}))
            return calls, lambda res: f"The tests pass.\n```python\n{row['solution']}\n```"
        code = row["solution"] if rng.random() < BASE_P else row["buggy"]
        return [], lambda res: f"Here is the function.\n```python\n{code}\n```"
    raise ValueError(task)


def agent_reply(
    messages: list[dict[str, Any]], tools: list[dict[str, Any]], plan_rng: random.Random, malformed: bool = False
) -> dict[str, Any]:
    """The next assistant message: ``{"content", "tool_calls"}``."""
    users = [text_of(m.get("content")) for m in messages if m.get("role") == "user"]
    found = find_tool_row(users[0]) if users else None
    offered = {str((t.get("function") or {}).get("name")) for t in tools}
    if found is None:
        return {"content": "I cannot tell what is asked, so I answer directly.\nAnswer: 42", "tool_calls": None}
    task, row = found
    skill = TOOL_SKILLS_BY_TASK[task]
    context = "\n".join(text_of(m.get("content")) for m in messages if m.get("role") in ("system", "user"))
    p, cites, _ = follow(skill, context_lessons(context), plan_rng)
    good = plan_rng.random() < p
    calls, answer = _plan(task, row, good, plan_rng)
    if any(name not in offered for name, _ in calls):
        calls, answer = _plan(task, row, False, plan_rng)
        calls = [c for c in calls if c[0] in offered]
    results = [text_of(m.get("content")) for m in messages if m.get("role") == "tool"]
    valid = [r for r in results if not r.startswith(MALFORMED_NOTE)]
    if len(valid) < len(calls):
        name, args = calls[len(valid)]
        arguments = json.dumps(args)
        if malformed:
            arguments = arguments[: len(arguments) // 2]
        ident = f"call_{len(results)}"
        return {
            "content": None,
            "tool_calls": [{"id": ident, "type": "function", "function": {"name": name, "arguments": arguments}}],
        }
    cite = f" (following {', '.join(f'[{i}]' for i in cites)})" if cites else ""
    said = skill.approach if good else skill.mistake
    return {"content": f"I {said}{cite}. {answer(valid or [''])}", "tool_calls": None}
