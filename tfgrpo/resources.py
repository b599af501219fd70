"""Where the bundled resources are: the built-in ``tasks/`` folder with its ``tasks/data/``,
and the ``prompts/`` templates. In an installed wheel they live under ``tfgrpo/_builtin``;
in a checkout, beside the package. Also a small JSONL reader for bundled data files, for
readers of the built-in datasets that import no task module.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from tfgrpo.nesting import json_loads

Kind = Literal["tasks", "prompts"]


def builtin_dir(kind: Kind) -> Path:
    """Folder of the bundled ``tasks`` or ``prompts``: wheel copy first, else the checkout's."""
    here = Path(__file__).resolve().parent
    bundled = here / "_builtin" / kind
    if bundled.is_dir():
        return bundled
    return here.parent / kind


def task_data(name: str) -> Path:
    """A file of the built-in tasks' data folder (``tasks/data/<name>``)."""
    return builtin_dir("tasks") / "data" / name


def jsonl_rows(path: str | Path) -> list[dict[str, Any]]:
    """The JSON objects of a JSONL file, one per non-empty line; a bad line is a ValueError
    naming it. Lines end at "\n" only (U+2028, U+2029 and NEL are characters inside a value)."""
    p = Path(path)
    rows = []
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise ValueError(f"{p}: not UTF-8 text (byte {e.start})") from None
    for lineno, line in enumerate(text.split("\n"), 1):
        if not line.strip():
            continue
        try:
            row = json_loads(line)
        except json.JSONDecodeError as e:
            raise ValueError(f"{p}:{lineno}: invalid JSON: {e.msg}") from None
        except ValueError as e:  # nested too deeply, integers of thousands of digits
            raise ValueError(f"{p}:{lineno}: invalid JSON: {str(e)[:80]}") from None
        if not isinstance(row, dict):
            raise ValueError(f"{p}:{lineno}: each line must be a JSON object")
        rows.append(row)
    return rows


@lru_cache(maxsize=32)
def read_jsonl(path: str | Path) -> tuple[dict[str, Any], ...]:
    """``jsonl_rows`` of a bundled data file, cached (bundled data does not change while a
    process runs)."""
    return tuple(jsonl_rows(path))
