"""Progress callbacks every long job reports through (the CLI wires rich progress bars to them;
the Python API runs silent without them)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable


@dataclass
class Hooks:
    """Progress callbacks (the CLI wires rich progress bars to them)."""

    on_phase: Callable[[str, int], None] = lambda phase, total: None
    on_advance: Callable[[str], None] = lambda phase: None
    on_step: Callable[[Any], None] = lambda record: None  # a step record of the mode that runs
    on_notice: Callable[[str], None] = lambda line: None  # one line the user must see (a provider's notice, warnings)
