"""tfgrpo: training-free GRPO. A frozen model learns from groups of its own answers through
an experience library that is injected into its context; an optional parameter mode trains
weights with the same tasks and rewards."""

from tfgrpo.errors import UserError
from tfgrpo.rewards import Reward, group_advantages, group_reward, reward
from tfgrpo.task_registry import Sample, Task, load_task, task

__version__ = "0.1.0"

__all__ = [
    "Reward",
    "Sample",
    "Task",
    "UserError",
    "__version__",
    "group_advantages",
    "group_reward",
    "load_task",
    "reward",
    "task",
]
