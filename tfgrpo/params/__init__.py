"""Parameter mode: GRPO weight updates on local hardware with the same tasks, rewards and
``group_advantages`` as the training-free loop.

The only part of tfgrpo that uses torch (extra ``[train]``). Importing this package does not
import torch; :func:`train_params` does, when training starts.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tfgrpo.hooks import Hooks
from tfgrpo.params.config import ParamsConfig, make_config
from tfgrpo.params.result import ParamsResult

__all__ = ["ParamsConfig", "ParamsResult", "make_config", "train_params"]


def train_params(
    config: ParamsConfig | dict[str, Any],
    *,
    out: str | Path | None = None,
    resume: bool | str | Path = False,
    hooks: Hooks | None = None,
) -> ParamsResult:
    """Train ``config.model`` on ``config.task`` by GRPO, as :func:`tfgrpo.train` runs the
    training-free mode: ``out`` is the run directory (default ``runs/grpo-<task>-<time>``; one
    that holds a run is refused). ``resume=True`` continues the run in ``out`` from its newest
    checkpoint; ``resume=PATH`` continues the run of PATH (its directory or one of its
    checkpoints) in place. A resumed run keeps its settings but steps, checkpoints, trackers and
    the hardware layout (``checkpoint.RESUMABLE``).

    Returns a :class:`ParamsResult` (``summary()`` is ``tfgrpo grpo --json``'s object). Never
    prints: each step's metrics go to ``steps.jsonl`` and ``hooks.on_step`` (a dict), notices
    (resumed from, checkpoints set aside, forward layout) to ``hooks.on_notice``; under a
    multi-process launch only the main process calls the hooks."""
    from tfgrpo.config import build
    from tfgrpo.params.trainer import train_weights

    return train_weights(build(ParamsConfig, config), out=out, resume=resume, hooks=hooks)
