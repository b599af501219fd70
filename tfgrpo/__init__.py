"""tfgrpo: training-free GRPO. A frozen model learns from groups of its own answers through
an experience library that is injected into its context; an optional parameter mode trains
weights with the same tasks and rewards.

The Python API (``tfgrpo.api``) is loaded on first use, so ``import tfgrpo`` stays light (parameter
mode imports it without chromadb or litellm)::

    result = tfgrpo.train(tfgrpo.RunConfig(task="demo", epochs=1), out="runs/demo")
"""

from __future__ import annotations

from typing import Any

from tfgrpo.errors import UserError
from tfgrpo.rewards import Reward, group_advantages, group_reward, reward
from tfgrpo.task_registry import Sample, Task, load_task, task
from tfgrpo.version import __version__

_LAZY = {
    "train": "tfgrpo.api",
    "evaluate": "tfgrpo.api",
    "export_pack": "tfgrpo.api",
    "train_params": "tfgrpo.api",
    "EvalResult": "tfgrpo.api",
    "TrainResult": "tfgrpo.api",
    "Hooks": "tfgrpo.api",
    "ParamsResult": "tfgrpo.params.result",
    "RunConfig": "tfgrpo.training_free.config",
    "EvalConfig": "tfgrpo.training_free.config",
    "SamplingConfig": "tfgrpo.training_free.config",
    "ParamsConfig": "tfgrpo.params.config",
    "RunDir": "tfgrpo.rundir",
}

__all__ = [
    "EvalConfig",
    "EvalResult",
    "Hooks",
    "ParamsConfig",
    "ParamsResult",
    "Reward",
    "RunConfig",
    "RunDir",
    "Sample",
    "SamplingConfig",
    "Task",
    "TrainResult",
    "UserError",
    "__version__",
    "evaluate",
    "export_pack",
    "group_advantages",
    "group_reward",
    "load_task",
    "reward",
    "task",
    "train",
    "train_params",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'tfgrpo' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)
