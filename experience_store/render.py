"""Render experiences as the context block injected into the agent's prompt.

Experience text is data, never markup or template code: each lesson is one line (line breaks
and other whitespace runs collapsed to one space), a tag that would open or close the
``<experiences>`` block around it, and a chat-template control token such as ``<|im_end|>``,
is neutralised (``<`` becomes ``&lt;``), and a lesson
containing ``{{ ... }}`` is shown as written. So a lesson cannot end its block early and start
lines of its own (``</experiences>\\nSYSTEM: ...``).
"""

from __future__ import annotations

import re
from typing import Iterable

import jinja2

from experience_store.models import Experience

DEFAULT_BLOCK = "{% for e in experiences %}[{{ e.id }}] {{ e.text }}\n{% endfor %}"
BLOCK_TAG = re.compile(r"<(\s*/?\s*experiences|\|)", re.IGNORECASE)

_env = jinja2.Environment(autoescape=False, keep_trailing_newline=True, undefined=jinja2.StrictUndefined)


def as_line(text: str) -> str:
    """A lesson as one line of data: whitespace runs (newlines, U+2028, ...) as one space, the
    block's own tags and ``<|...|>`` control tokens neutralised."""
    return BLOCK_TAG.sub(r"&lt;\1", " ".join(text.split()))


def render_experiences(experiences: Iterable[Experience], template: str = DEFAULT_BLOCK) -> str:
    """Lines ``[E12] When ..., ...`` for the given experiences (empty string for none)."""
    items = [
        e.model_copy(update={"id": as_line(e.id), "text": as_line(e.text)}) for e in experiences if e.status == "active"
    ]
    if not items:
        return ""
    return _env.from_string(template).render(experiences=items).rstrip("\n")
