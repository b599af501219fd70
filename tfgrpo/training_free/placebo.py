"""The placebo arm of ``tfgrpo eval --placebo``: the library's block with every lesson replaced
by neutral text of the same token length.

The library arm differs from the baseline in two ways: its prompt carries the experiences
preamble and a request to cite lessons, and the lessons themselves. The placebo keeps the
first (same template, same ids, same number of lines and tokens) and removes the second, so
library - placebo measures what the lessons SAY and placebo - baseline the prompt format.
Neutral text is drawn from a fixed list of statements that advise nothing about solving a
problem; which statement fills which line is fixed by the lesson's id, so the arm is
deterministic.
"""

from __future__ import annotations

import hashlib
import re
from typing import Callable

from experience_store import Injection
from tfgrpo.task_registry import Sample

NEUTRAL = (
    "This line is a placeholder with no advice in it.",
    "The sky over the sea was grey on the morning the ship left the harbour.",
    "Some libraries keep their older books on the highest shelves of a quiet reading room.",
    "A week has seven days, and many calendars start it on a Monday.",
    "The garden had a small pond, three apple trees and a wooden bench by the wall.",
    "Trains on the coastal line run a little more slowly when the wind is strong.",
)
_LINE = re.compile(r"^(\s*(?:[-*]\s*)?\[[^\]]+\]\s*)(\S.*)$")

TokenCounter = Callable[[str], int]


def neutral_text(key: str, tokens: int, count: TokenCounter) -> str:
    """Neutral statements (starting at one chosen by ``key``) cut to about ``tokens`` tokens."""
    start = int(hashlib.sha256(key.encode()).hexdigest(), 16) % len(NEUTRAL)
    words: list[str] = []
    i = start
    while count(" ".join(words)) < tokens:
        words += NEUTRAL[i % len(NEUTRAL)].split()
        i += 1
    while len(words) > 1 and count(" ".join(words[:-1])) >= tokens:
        words.pop()
    return " ".join(words)


def placebo_block(block: str, count: TokenCounter) -> str:
    """``block`` with the text of each ``[E12] ...`` line replaced by neutral text of the same
    token count; other lines (a template's preamble) are kept as they are."""
    out = []
    for line in block.split("\n"):
        m = _LINE.match(line)
        out.append(m.group(1) + neutral_text(m.group(1).strip(), count(m.group(2)), count) if m else line)
    return "\n".join(out)


def placebo_injector(inject: Callable[[Sample], Injection], count: TokenCounter) -> Callable[[Sample], Injection]:
    """The placebo of an injector (``rollout.injector``): the same lessons selected for each
    query, each shown as neutral text of its token length."""

    def placebo(sample: Sample) -> Injection:
        got = inject(sample)
        text = placebo_block(got.text, count)
        return Injection(text=text, ids=list(got.ids), tokens=count(text) if text else 0, mode=got.mode)

    return placebo
