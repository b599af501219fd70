"""Jinja2 prompt templates: the built-in ``prompts/*.j2``, overridable by ``--prompts-dir``.

Values (problems, answers, lessons) are passed as data and never rendered as template code.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jinja2

from tfgrpo.errors import UserError
from tfgrpo.resources import builtin_dir


class Prompts:
    def __init__(self, override_dir: str | Path | None = None):
        dirs: list[str] = []
        if override_dir is not None:
            d = Path(override_dir).expanduser()
            if not d.is_dir():
                raise UserError(f"prompts directory not found: {d}")
            dirs.append(str(d))
        dirs.append(str(builtin_dir("prompts")))
        self.env = jinja2.Environment(
            loader=jinja2.FileSystemLoader(dirs),
            autoescape=False,
            undefined=jinja2.StrictUndefined,
            keep_trailing_newline=False,
        )

    def render(self, name: str, **values: Any) -> str:
        try:
            return self.env.get_template(name).render(**values).strip()
        except jinja2.TemplateNotFound:
            raise UserError(f"prompt template not found: {name}") from None
        except jinja2.UndefinedError as e:
            raise UserError(f"prompt template {name}: {e.message}") from None
        except jinja2.TemplateSyntaxError as e:
            raise UserError(f"prompt template {e.filename or name}:{e.lineno}: {e.message}") from None
