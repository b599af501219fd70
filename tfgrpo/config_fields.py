"""How config models declare their command-line flags.

A pydantic field becomes a CLI flag when it carries ``flag(...)``; the CLI generates the
option from the field's type, default and description, so a setting is declared once.
"""

from __future__ import annotations

from typing import Any


def flag(name: str, short: str | None = None) -> dict[str, Any]:
    """``Field(..., json_schema_extra=flag("group-size"))`` exposes the field as ``--group-size``."""
    extra: dict[str, Any] = {"flag": name}
    if short:
        extra["short"] = short
    return extra
