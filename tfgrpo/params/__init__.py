"""Parameter mode: GRPO weight updates on local hardware with the same tasks, rewards and
``group_advantages`` as the training-free loop.

The only part of tfgrpo that uses torch (extra ``[train]``). Importing this package does not
import torch; :func:`run` does, when training starts.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tfgrpo.params.config import ParamsConfig, make_config

__all__ = ["ParamsConfig", "make_config", "train_params"]


def train_params(cfg: ParamsConfig, *, resume: str | Path | None = None, progress: bool = False) -> dict[str, Any]:
    """Train ``cfg.model`` on ``cfg.task`` by GRPO; returns a summary (``steps``, ``reward_by_step``,
    ``run_dir``, ``final_checkpoint``, ``wall_s``, ...). Metrics go to the run directory's
    ``steps.jsonl`` and, when ``progress``, to stderr; nothing is printed otherwise."""
    from tfgrpo.params.trainer import train_weights

    return train_weights(cfg, resume=str(resume) if resume is not None else None, progress=progress)
