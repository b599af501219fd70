"""Usage credit from citations: the agent cites the lessons it used as ``[E12]``.

A lesson shown to an answer counts as ``retrieved``; cited in it, as ``cited``. Whether it
helped is measured against the answers of the same group that were shown the lesson and did
not cite it (same problem, same prompt, so the problem's difficulty cancels out): every pair
(citing answer, non-citing answer) of a group is one comparison, ``helpful`` when the citing
answer scored the higher advantage, ``harmful`` when the lower, nothing on a tie. A group
whose answers all cite the lesson (or none does) says nothing about it. With no effect the
two counts grow alike; counting "cited in an answer with negative advantage" instead would
measure the problem's difficulty (a lesson cited in every answer of a hard problem would
look harmful). Citations of ids that were not shown are ignored.
"""

from __future__ import annotations

import re
from typing import Any, Iterable

from experience_store.models import Stats

# ASCII digits only, at most 9 (an id like E² or a 5000-digit one is no id, and int() stays cheap).
CITATION = re.compile(r"\[\s*(E\s*[0-9]{1,9})\s*\]", re.IGNORECASE)
_ID = re.compile(r"^\[?\s*(?:E\s*)?([0-9]{1,9})\s*\]?$", re.IGNORECASE)

Answer = tuple[Iterable[str], "str | None", float]  # (ids shown, output text, advantage)


def canonical_id(value: Any) -> str | None:
    """A lesson id as the library writes it: ``E12`` for ``E12``, ``[E12]``, ``e12``, ``' E12 '``,
    ``E 12`` or the integer 12. Anything else is returned stripped (and fails to match)."""
    if value is None or isinstance(value, bool):
        return None if value is None else str(value)
    if isinstance(value, int):
        return f"E{value}"
    text = str(value).strip()
    m = _ID.match(text)
    return f"E{int(m.group(1))}" if m else text


def cited_ids(text: str | None) -> list[str]:
    """Ids cited as ``[E12]`` (any case, spaces inside the brackets allowed) in an output, in
    order of first citation."""
    return list(dict.fromkeys(canonical_id(m) for m in CITATION.findall(text or "")))  # type: ignore[misc]


def usage_credit(groups: Iterable[Iterable[Answer]], step: int) -> dict[str, Stats]:
    """Stats deltas by id from the answers of each group: (ids shown, output text, advantage)."""
    credit: dict[str, Stats] = {}
    for group in groups:
        answers = []
        for shown, text, advantage in group:
            shown = [canonical_id(i) or "" for i in shown]
            cited = [i for i in cited_ids(text) if i in shown]
            answers.append((set(shown), set(cited), advantage))
            for exp_id in shown:
                credit.setdefault(exp_id, Stats()).retrieved += 1
            for exp_id in cited:
                credit[exp_id].cited += 1
                credit[exp_id].last_cited_step = step
        for exp_id in {i for shown, _, _ in answers for i in shown}:
            with_it = [a for shown, cited, a in answers if exp_id in cited]
            without = [a for shown, cited, a in answers if exp_id in shown and exp_id not in cited]
            s = credit[exp_id]
            s.helpful += sum(1 for a in with_it for b in without if a > b)
            s.harmful += sum(1 for a in with_it for b in without if a < b)
    return credit
