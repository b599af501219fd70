"""Usage credit from citations: the agent cites the lessons it used as ``[E12]``.

A lesson shown to a sample counts as ``retrieved``; cited in it, as ``cited``; cited in a
sample whose advantage is positive, ``helpful``; negative, ``harmful``. Citations of ids that
were not shown are ignored (the model cannot have used them).
"""

from __future__ import annotations

import re
from typing import Iterable

from experience_store.models import Stats

CITATION = re.compile(r"\[(E\d+)\]")


def cited_ids(text: str | None) -> list[str]:
    """Ids cited as ``[E12]`` in an output, in order of first citation."""
    return list(dict.fromkeys(CITATION.findall(text or "")))


def usage_credit(outputs: Iterable[tuple[Iterable[str], str | None, float]], step: int) -> dict[str, Stats]:
    """Stats deltas by id from (ids shown, output text, advantage) per sampled answer."""
    credit: dict[str, Stats] = {}
    for shown, text, advantage in outputs:
        shown = list(shown)
        for exp_id in shown:
            credit.setdefault(exp_id, Stats()).retrieved += 1
        for exp_id in cited_ids(text):
            if exp_id not in shown:
                continue
            s = credit[exp_id]
            s.cited += 1
            s.last_cited_step = step
            if advantage > 0:
                s.helpful += 1
            elif advantage < 0:
                s.harmful += 1
    return credit
