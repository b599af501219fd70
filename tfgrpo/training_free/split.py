"""Train / validation / test splits of a task's dataset, decided by a seed.

A problem's part depends only on the seed and its id (not on the file's row order), so
``tfgrpo train --split 70/15/15 --split-seed 3`` and ``tfgrpo eval --split 70/15/15
--split-seed 3`` agree on which problems are held out. Without ``--split`` the task's own
sets are used: ``dataset`` for training, ``eval_dataset`` (else ``dataset``) for testing,
and there is no validation part.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from tfgrpo.errors import UserError
from tfgrpo.training_free.rollout import stable_seed
from tfgrpo.task_registry import Sample, Task

PARTS = ("train", "validation", "test")


@dataclass
class Splits:
    train: list[Sample]
    validation: list[Sample] = field(default_factory=list)
    test: list[Sample] = field(default_factory=list)

    def part(self, name: str) -> list[Sample]:
        samples = getattr(self, name)
        if not samples:
            raise UserError(f"the {name} split is empty (choose other --split fractions, e.g. 70/15/15)")
        return samples


def parse_fractions(text: str) -> tuple[float, float, float]:
    """``70/15/15``, ``0.7,0.15,0.15`` or ``80/20`` (no test part) -> fractions summing to 1."""
    parts = [p for p in text.replace(",", "/").split("/") if p.strip()]
    try:
        values = [float(p) for p in parts]
    except ValueError:
        values = []
    if len(values) not in (2, 3) or not all(math.isfinite(v) and v >= 0 for v in values) or sum(values) <= 0:
        raise UserError(f"--split {text!r}: give train/validation/test sizes, e.g. 70/15/15 or 0.8,0.2,0")
    if not any(math.isclose(sum(values), whole, rel_tol=1e-6) for whole in (1, 100)):
        raise UserError(
            f"--split {text!r}: the sizes add up to {sum(values):g}; give fractions of 1 or percentages of 100"
        )
    values += [0.0] * (3 - len(values))
    total = sum(values)
    return (values[0] / total, values[1] / total, values[2] / total)


def split_task(task: Task, fractions: str | None, seed: int = 0) -> Splits:
    if not fractions:
        return Splits(train=list(task.dataset), test=list(task.eval_samples()))
    f_train, f_val, f_test = parse_fractions(fractions)
    order = sorted(task.dataset, key=lambda s: (stable_seed(seed, "split", s.id), s.id))
    n = len(order)
    n_val, n_test = round(n * f_val), round(n * f_test)
    return Splits(train=order[n_val + n_test :], validation=order[:n_val], test=order[n_val : n_val + n_test])
