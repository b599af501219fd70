"""The data blocks the judge is shown, rendered here and placed by the prompt templates.

Templates (``prompts/compare.j2``, ``consolidate.j2``) are the user's to override; these blocks
are the stable format beneath them, documented in docs/architecture.md ("What the judge is
shown"), which prompt authors keep and test doubles read:

* ``<problem>TEXT</problem>``, then ``<reference_answer>TEXT</reference_answer>`` when ground
  truth is shown;
* one ``<attempt index="N" reward="R" [NAME="V" ...] [truncated="true">]>TEXT</attempt>`` per
  attempt (rewards only with ground truth; each reward by name when there are several);
* ``<library>`` with one ``[ID] lesson`` line per lesson (``(empty)`` for none) ``</library>``;
* ``<proposals>`` a JSON list of proposed ops ``</proposals>`` for consolidation.
"""

from __future__ import annotations

from html import escape
from typing import Any, Sequence


def group_block(problem: str, answer: Any, attempts: Sequence[Any], *, ground_truth: bool) -> str:
    parts = [f"<problem>\n{problem}\n</problem>"]
    if ground_truth and answer is not None:
        parts.append(f"<reference_answer>{answer}</reference_answer>")
    for a in attempts:
        attrs = f' index="{a.index}"'
        if ground_truth:
            attrs += f' reward="{a.reward}"'
            if len(a.rewards) > 1:
                attrs += "".join(f' {escape(str(name))}="{value}"' for name, value in a.rewards.items())
        if a.truncated:
            attrs += ' truncated="true"'
        cut = "\n[This attempt was cut off by its token limit before it finished.]" if a.truncated else ""
        parts.append(f"<attempt{attrs}>\n{a.text}{cut}\n</attempt>")
    return "\n\n".join(parts)


def library_block(library: str) -> str:
    return f"<library>\n{library or '(empty)'}\n</library>"


def proposals_block(proposals_json: str) -> str:
    return f"<proposals>\n{proposals_json}\n</proposals>"
