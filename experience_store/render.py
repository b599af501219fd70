"""Render experiences as the context block injected into the agent's prompt.

Experience text is data passed to the template, never template code: a lesson containing
``{{ ... }}`` is shown as written.
"""

from __future__ import annotations

from typing import Iterable

import jinja2

from experience_store.models import Experience

DEFAULT_BLOCK = "{% for e in experiences %}[{{ e.id }}] {{ e.text }}\n{% endfor %}"

_env = jinja2.Environment(autoescape=False, keep_trailing_newline=True, undefined=jinja2.StrictUndefined)


def render_experiences(experiences: Iterable[Experience], template: str = DEFAULT_BLOCK) -> str:
    """Lines ``[E12] When ..., ...`` for the given experiences (empty string for none)."""
    items = [e for e in experiences if e.status == "active"]
    if not items:
        return ""
    return _env.from_string(template).render(experiences=items).rstrip("\n")
