"""Parameter mode: GRPO weight updates on local hardware with the same tasks, rewards and
``group_advantages`` as the training-free loop.

The only part of tfgrpo that uses torch (extra ``[train]``). Importing this package does not
import torch; :func:`run` does, when training starts.
"""

from __future__ import annotations

from typing import Any

from tfgrpo.params.config import ParamsConfig, make_config

__all__ = ["ParamsConfig", "make_config", "run"]


def run(cfg: ParamsConfig, *, resume: str | None = None, progress: bool = True) -> dict[str, Any]:
    """Train ``cfg.model`` on ``cfg.task`` by GRPO; returns a summary (``steps``, ``reward_by_step``,
    ``run_dir``, ``final_checkpoint``, ``wall_s``, ...). Metrics go to ``<out>/steps.jsonl`` and,
    when ``progress``, to stderr."""
    from tfgrpo.params.trainer import train

    return train(cfg, resume=resume, progress=progress)
