"""The SIMULATED judge: fills the JSON schema a request sends, dispatching on its name.

Contract with the judge prompts (the user message; tags are literal):

* ``group_comparison``: attempts in ``<attempt ... reward="r">...</attempt>`` tags, the
  library as lines ``[E<n>] <text>`` between ``<library>`` and ``</library>``, optionally a
  ``<reference_answer>``. It sees only that: it scores the attempts by the rewards shown, else
  by the reference answer, else by majority vote of their final answers, and reads what the
  better attempts did that no worse one did (a skill's approach, or, when misled, its
  mistake). Returns ``{"reasoning", "ops": [{"op", "id", "text", "reason"}]}`` (``analysis`` instead of
  ``reasoning`` for a schema that asks for that):
  ADD the lesson for each such difference when no library line names the skill; else UPDATE
  that line (p ~0.3) or NONE; with p ~0.1 a vague ADD naming no skill instead. No attempts,
  equal scores or no readable difference (only slips): NONE.
* ``consolidation``: ``<library>`` as above and the proposed ops as a JSON list between
  ``<proposals>`` and ``</proposals>``. Returns ``{"ops": [{"op", "id", "ids", "text",
  "reason"}]}``: ADDs of one skill merged into one; an ADD whose skill the library already
  names becomes an UPDATE of that line; two library lines naming one skill are MERGEd;
  UPDATE/DELETE kept; NONE dropped.
* ``sample_summary``: ``{"summary"}`` of the attempt in the user message.
* any other schema: a minimal instance that validates.

Every answer is then conformed to the schema sent, so a prompt's model may differ in detail
(extra optional fields, ``additionalProperties: false``) and the answer still validates.
"""

from __future__ import annotations

import json
import random
import re
from collections import Counter
from typing import Any

from tfgrpo.sim.policy_replies import text_of
from tfgrpo.sim.agent_replies import find_tool_row
from tfgrpo.sim.skills import ALL_SKILLS, VAGUE_LESSON, Skill, advice, find_row, skill_in_text

UPDATE_P = 0.3
VAGUE_P = 0.1

_LIB_LINE = re.compile(r"^\s*\[(E\d+)\]\s*(.*?)\s*$", re.MULTILINE)


def _between(text: str, tag: str) -> str | None:
    m = re.search(rf"<{tag}(?:\s[^>]*)?>(.*?)</{tag}>", text, re.DOTALL)
    return m.group(1) if m else None


def parse_library(text: str) -> list[tuple[str, str]]:
    """``[(id, text)]`` of the ``[E<n>] <text>`` lines inside ``<library>``."""
    body = _between(text, "library") or ""
    return _LIB_LINE.findall(body)


def _line_naming(library: list[tuple[str, str]], skill: Skill) -> list[str]:
    return [eid for eid, text in library if skill.keyword in text.lower()]


def _op(
    op: str, text: str = "", reason: str = "", id: str | None = None, ids: list[str] | None = None
) -> dict[str, Any]:
    out: dict[str, Any] = {"op": op, "id": id, "text": text, "reason": reason}
    if ids is not None:
        out["ids"] = ids
    return out


_ATTEMPT = re.compile(r"<attempt\b([^>]*)>(.*?)</attempt>", re.DOTALL)
_REWARD = re.compile(r'reward="([^"]*)"')
_FINAL = re.compile(r"(?:Answer\s*:|Final answer:)\s*(.+)")


def _final(text: str) -> str:
    found = _FINAL.findall(text)
    return found[-1].strip().lower() if found else ""


def scored_attempts(user: str) -> list[tuple[float, str]]:
    """(score, text) of the attempts shown: by their rewards, else by the reference answer,
    else by majority vote of the final answers (self-consistency; no majority, no scores)."""
    attempts = _ATTEMPT.findall(user)
    out = []
    for attrs, text in attempts:
        m = _REWARD.search(attrs)
        if m and re.fullmatch(r"-?\d+(?:\.\d+)?(?:e-?\d+)?", m.group(1)):
            out.append((float(m.group(1)), text))
    if out:
        return out
    texts = [t for _, t in attempts]
    reference = (_between(user, "reference_answer") or "").strip().lower()
    if reference:
        return [(1.0 if reference and reference in _final(t) else 0.0, t) for t in texts]
    votes = Counter(_final(t) for t in texts if _final(t))
    top = votes.most_common(2)
    if not top or top[0][1] < 2 or (len(top) > 1 and top[1][1] == top[0][1]):
        return []
    return [(1.0 if _final(t) == top[0][0] else 0.0, t) for t in texts]


def differences(scored: list[tuple[float, str]]) -> list[tuple[Skill, str]]:
    """(skill, "right" | "harmful") for what a better attempt did and no worse one did: a
    skill's approach (a right lesson), or its mistake (a harmful one: the judge was misled
    into taking a wrong attempt for a better one)."""
    if len(scored) < 2:
        return []
    hi, lo = max(sc for sc, _ in scored), min(sc for sc, _ in scored)
    if hi == lo:
        return []
    better = [t for sc, t in scored if sc == hi]
    worse = [t for sc, t in scored if sc == lo]
    found: list[tuple[Skill, str]] = []
    for skill in ALL_SKILLS:
        for phrase, kind in ((skill.approach, "right"), (skill.mistake, "harmful")):
            if phrase and any(phrase in b for b in better) and not any(phrase in w for w in worse):
                found.append((skill, kind))
                break
    return found


def group_comparison(user: str, rng: random.Random) -> dict[str, Any]:
    scored = scored_attempts(user)
    found = differences(scored)
    if not found:
        why = "The attempts carry no usable difference (none, equal scores, or only slips), so no lesson is drawn."
        return {"reasoning": why, "ops": [_op("NONE", reason="No usable difference.")]}
    library = parse_library(user)
    if rng.random() < VAGUE_P:
        why = "The attempts differ in care."
        return {"reasoning": why, "ops": [_op("ADD", VAGUE_LESSON, "A general reminder to be careful.")]}
    ops, notes = [], []
    for skill, kind in found:
        did = skill.approach if kind == "right" else skill.mistake
        notes.append(f"The better attempts {did}; the worse ones did not.")
        named = [eid for eid, text in library if advice(text, skill) is not None]
        if not named:
            text = rng.choice((skill.lesson, *skill.rewordings)) if kind == "right" else skill.harmful
            ops.append(_op("ADD", text, f"No lesson yet covers {skill.keyword}."))
        elif kind == "right" and rng.random() < UPDATE_P:
            ops.append(
                _op("UPDATE", rng.choice(skill.rewordings), "A clearer wording of the existing lesson.", id=named[0])
            )
        else:
            notes.append("The library already covers this.")
            ops.append(_op("NONE", reason="Already covered."))
    return {"reasoning": " ".join(notes), "ops": ops}


def consolidation(user: str) -> dict[str, Any]:
    library = parse_library(user)
    try:
        proposals = json.loads(_between(user, "proposals") or "[]")
    except json.JSONDecodeError:
        proposals = []
    proposals = [p for p in proposals if isinstance(p, dict)] if isinstance(proposals, list) else []
    kind = lambda p: str(p.get("op", "")).upper()  # noqa: E731
    # DELETE wins over every other edit of its id; a merged id takes no other edit either.
    deleted = [str(p["id"]) for p in proposals if kind(p) == "DELETE" and p.get("id")]
    out = [_op("DELETE", "", "As proposed.", id=i) for i in dict.fromkeys(deleted)]
    touched = set(deleted)
    merged_skills: set[str] = set()
    for skill in ALL_SKILLS:  # two live library lines naming one skill: merge them
        named = [i for i in _line_naming(library, skill) if i not in touched]
        if len(named) > 1:
            out.append(_op("MERGE", skill.lesson, f"These lines all teach {skill.keyword}.", ids=named))
            touched.update(named)
            merged_skills.add(skill.name)
    added: set[str] = set()
    for p in proposals:
        text = str(p.get("text") or "")
        if kind(p) == "UPDATE" and p.get("id") and str(p["id"]) not in touched:
            touched.add(str(p["id"]))
            out.append(_op("UPDATE", text, str(p.get("reason") or "As proposed."), id=str(p["id"])))
        if kind(p) != "ADD" or not text:
            continue
        skill = skill_in_text(text)
        key = skill.name if skill else text
        if key in added or key in merged_skills:
            continue
        added.add(key)
        named = [i for i in _line_naming(library, skill) if i not in deleted] if skill else []
        if named and named[0] not in touched:
            touched.add(named[0])
            out.append(_op("UPDATE", text, f"The library already covers {skill.keyword}.", id=named[0]))  # type: ignore[union-attr]
        elif not named:
            out.append(
                _op(
                    "ADD",
                    text,
                    f"One lesson for {skill.keyword}." if skill else str(p.get("reason") or "A new lesson."),
                )
            )
    return {"ops": [{**o, "ids": o.get("ids", [])} for o in out]}


_CALLED = re.compile(r"the agent called (\w+)\((.*?)\)( \[(\w+)\])?\n\s*-> (.*)")


_WROTE = re.compile(r"the agent wrote:\s*(.+?[.!?])(?:\s|$)")
_FIRST_SENTENCE = re.compile(r"^\s*(.+?[.!?])(?:\s|$)")


def _said(text: str) -> str:
    """What the agent said it did: the first sentence of its last message in a trajectory
    (where a simulated answer names its approach or its mistake), else of the answer."""
    wrote = _WROTE.findall(text)
    if wrote:
        return wrote[-1].strip()
    m = _FIRST_SENTENCE.match(text.strip())
    return m.group(1).strip() if m else ""


def sample_summary(user: str) -> dict[str, Any]:
    """What a summariser keeps: the tools called with what came back, what the agent said it
    did (its first sentence, where the approach or the mistake is named) and its final answer."""
    attempt = _between(user, "attempt") or user
    calls = _CALLED.findall(attempt)
    said = _said(attempt)
    said = f" It said: {said}" if said and not said.startswith("Final answer") else ""
    if calls or "Final answer:" in attempt:  # a tool-calling trajectory
        steps = [
            f"called {name}" + (f" ({err}, told so)" if err else f", which returned: {result.strip()[:80]}")
            for name, _, _, err, result in calls
        ]
        final = attempt.rsplit("Final answer:", 1)[-1].strip().splitlines()
        stopped = " It was stopped by a limit." if "was stopped by its" in attempt else ""
        done = "; then ".join(steps) if steps else "used no tool"
        return {"summary": f"The agent {done}.{said}{stopped} Final answer: {(final[-1] if final else '(none)')[:120]}"}
    answers = re.findall(r"Answer\s*:\s*(.+)", attempt)
    if answers:
        return {"summary": f"The attempt reasons in a sentence or two and answers {answers[-1].strip()}.{said}"}
    return {"summary": "The attempt gives no final answer line."}


def grade(user: str) -> dict[str, Any]:
    """The simulated grader: right when the attempt's last ``Answer:`` line holds the expected
    answer (the reference answer shown, else the bundled dataset's)."""
    problem = (_between(user, "problem") or "").strip()
    expected = (_between(user, "reference_answer") or "").strip()
    if not expected:
        found = find_tool_row(problem)
        row = found[1] if found else find_row(problem)
        expected = str((row or {}).get("answer", ""))
    answers = re.findall(r"Answer\s*:\s*(.+)", _between(user, "attempt") or "")
    correct = bool(expected) and bool(answers) and expected.lower() in answers[-1].lower()
    return {
        "reason": "The final answer matches." if correct else "The final answer does not match.",
        "correct": correct,
    }


# ---------------------------------------------------------------------------------------
# Generic schema filling


def _resolve(schema: dict[str, Any], root: dict[str, Any]) -> dict[str, Any]:
    while isinstance(schema, dict) and "$ref" in schema:
        ref = schema["$ref"]
        node: Any = root
        for part in ref.lstrip("#/").split("/"):
            node = node.get(part, {}) if part else node
        schema = {**node, **{k: v for k, v in schema.items() if k != "$ref"}}
    return schema


_TYPES = {
    "string": str,
    "integer": int,
    "number": (int, float),
    "boolean": bool,
    "array": list,
    "object": dict,
    "null": type(None),
}


def _fits_type(value: Any, schema: dict[str, Any]) -> bool:
    t = schema.get("type")
    if "enum" in schema:
        return value in schema["enum"]
    if "const" in schema:
        return value == schema["const"]
    if t is None:
        return True
    types = t if isinstance(t, list) else [t]
    for name in types:
        py = _TYPES.get(name)
        if py is not None and isinstance(value, py) and not (name in ("integer", "number") and isinstance(value, bool)):
            return True
    return False


def conform(value: Any, schema: dict[str, Any], root: dict[str, Any] | None = None) -> Any:
    """``value`` made valid for ``schema``: kept where it fits, filled where it is missing."""
    root = schema if root is None else root
    schema = _resolve(schema, root)
    for key in ("anyOf", "oneOf"):
        if key in schema:
            branches = [_resolve(b, root) for b in schema[key]]
            for b in branches:  # a discriminated union: the branch whose enum fields the value matches
                fixed = {k: sub["enum"] for k, sub in b.get("properties", {}).items() if "enum" in sub}
                if fixed and isinstance(value, dict) and all(value.get(k) in e for k, e in fixed.items()):
                    return conform(value, b, root)
            for b in branches:
                if value is not None or b.get("type") == "null":
                    if _fits_type(value, b):
                        return conform(value, b, root)
            return conform(None, branches[0], root)
    if "allOf" in schema and schema["allOf"]:
        return conform(value, {**schema["allOf"][0], **{k: v for k, v in schema.items() if k != "allOf"}}, root)
    if value is not None and not _fits_type(value, schema):
        value = None
    if "const" in schema:
        return schema["const"]
    if "enum" in schema:
        return value if value in schema["enum"] else schema["enum"][0]
    t = schema.get("type")
    t = (t[0] if t else None) if isinstance(t, list) else t
    if t == "object" or (t is None and "properties" in schema):
        src = value if isinstance(value, dict) else {}
        props = schema.get("properties", {})
        out = {}
        for k, sub in props.items():
            if k in src or k in schema.get("required", []):
                out[k] = conform(src.get(k), sub, root)
        if schema.get("additionalProperties", True) is not False:
            out.update({k: v for k, v in src.items() if k not in props})
        return out
    if t == "array":
        items = schema.get("items", {})
        src = value if isinstance(value, list) else []
        out_list = [conform(v, items, root) for v in src]
        while len(out_list) < schema.get("minItems", 0):
            out_list.append(conform(None, items, root))
        return out_list
    if value is not None:
        return value
    if "default" in schema:
        return schema["default"]
    return {"string": "", "integer": 0, "number": 0, "boolean": False, "null": None}.get(t, None)


# ---------------------------------------------------------------------------------------
# Dispatch

_BUILDERS = ("group_comparison", "consolidation", "sample_summary", "grade")


def judge_content(
    messages: list[dict[str, Any]], response_format: dict[str, Any], rng: random.Random, malformed: bool = False
) -> str:
    """The JSON text of one simulated judge answer (cut short when ``malformed``)."""
    user = "\n".join(text_of(m.get("content")) for m in messages if m.get("role") == "user")
    system = "\n".join(text_of(m.get("content")) for m in messages if m.get("role") == "system")
    schema: dict[str, Any] | None = None
    if response_format.get("type") == "json_schema":
        spec = response_format.get("json_schema") or {}
        name = str(spec.get("name", ""))
        schema = spec.get("schema") or {}
    else:
        name = next((n for n in _BUILDERS if n in system), "")
    if name == "group_comparison":
        value: Any = group_comparison(user, rng)
    elif name == "consolidation":
        value = consolidation(user)
    elif name == "sample_summary":
        value = sample_summary(user)
    elif name == "grade":
        value = grade(user)
    else:
        value = {}
    if schema is not None:
        props = schema.get("properties", {})
        if "reasoning" in value and "analysis" in props and "reasoning" not in props:
            value = {"analysis": value.pop("reasoning"), **value}  # a prompt of the older shape
        value = conform(value, schema)
    text = json.dumps(value, ensure_ascii=False)
    return text[: max(1, len(text) // 2)] if malformed else text
