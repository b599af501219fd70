"""Rewards and numeric advantages, shared by the training-free loop and parameter mode.

A reward scores one answer (``@reward``) or a whole group (``@group_reward``) and returns a
float, or ``None`` to say "no score" (recorded as missing, never guessed). A reward that
raises on one sample is recorded as missing for that sample; the step goes on.

``group_advantages`` turns a batch of groups of rewards into advantages:

* ``grpo``:    A_i = (r_i - mean(r)) / (std(r) + eps), r the weighted sum of the rewards
* ``dr_grpo``: A_i = r_i - mean(r)
* ``gdpo``:    A_ik = (r_ik - mean_G r_k) / (std_G r_k + eps); A_i = sum_k w_k A_ik; then
               A is normalised over the whole batch: (A - mean_B A) / (std_B A + eps)

Samples with a missing reward take no part in the statistics and get advantage 0.
``std="unbiased"`` divides by G-1 as TRL's GRPOTrainer and ``torch.std`` do (a group of one
then has std 0); ``std="population"`` divides by G, giving advantages sqrt(G/(G-1)) times
larger (1.118x at G=5). The training-free loop defaults to unbiased, so its recorded
advantages are the ones TRL computes; its decisions (which groups are judged, the
within-group credit) depend only on their order within a group, the same either way.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import math
from dataclasses import dataclass
from typing import Any, Callable, Literal, Sequence

log = logging.getLogger(__name__)

AdvantageMode = Literal["grpo", "dr_grpo", "gdpo"]
ADVANTAGE_MODES: tuple[str, ...] = ("grpo", "dr_grpo", "gdpo")
StdMode = Literal["population", "unbiased"]
STD_MODES: tuple[str, ...] = ("population", "unbiased")
EPS = 1e-4


@dataclass(frozen=True)
class Reward:
    """A named, weighted scoring function.

    ``fn(sample, completion) -> float | None`` (may be async), or for a group reward
    ``fn(sample, completions) -> list[float | None]``.
    """

    fn: Callable[..., Any]
    name: str
    weight: float = 1.0
    group: bool = False

    async def score(self, sample: Any, completions: Sequence[str]) -> list[float | None]:
        """Score every completion of one group; errors become ``None`` for that sample."""
        if self.group:
            try:
                out = await _maybe_await(self.fn(sample, list(completions)))
                values = list(out)
                if len(values) != len(completions):
                    raise ValueError(f"returned {len(values)} scores for {len(completions)} completions")
                return [_as_score(v) for v in values]
            except Exception as e:
                log.warning("group reward %s failed on sample %s: %s", self.name, getattr(sample, "id", "?"), e)
                return [None] * len(completions)
        results: list[float | None] = []
        for c in completions:
            try:
                results.append(_as_score(await _maybe_await(self.fn(sample, c))))
            except Exception as e:
                log.warning("reward %s failed on sample %s: %s", self.name, getattr(sample, "id", "?"), e)
                results.append(None)
        return results


def reward(fn: Callable[..., Any] | None = None, *, weight: float = 1.0, name: str | None = None):
    """Mark a per-answer reward function: ``@reward`` or ``@reward(weight=0.5)``."""

    def wrap(f: Callable[..., Any]) -> Reward:
        return Reward(fn=f, name=name or f.__name__, weight=weight)

    return wrap(fn) if fn is not None else wrap


def group_reward(fn: Callable[..., Any] | None = None, *, weight: float = 1.0, name: str | None = None):
    """Mark a reward that scores a whole group at once (e.g. a pairwise comparison)."""

    def wrap(f: Callable[..., Any]) -> Reward:
        return Reward(fn=f, name=name or f.__name__, weight=weight, group=True)

    return wrap(fn) if fn is not None else wrap


async def _maybe_await(value: Any) -> Any:
    if inspect.isawaitable(value):
        return await value
    return value


def _as_score(v: Any) -> float | None:
    if v is None:
        return None
    if isinstance(v, bool):
        return float(v)
    f = float(v)
    if math.isnan(f):
        return None
    return f


async def score_group(
    rewards: Sequence[Reward], sample: Any, completions: Sequence[str | None]
) -> list[list[float | None]]:
    """rewards[G][K] for one group. A failed rollout (``None`` completion: its request failed)
    has no score at all: it is no answer, so it takes no part in the group's mean, advantages
    or contrast (a failure scored 0 would pass for a wrong answer and teach the judge from it)."""
    answered = [i for i, c in enumerate(completions) if c is not None]
    texts = [completions[i] for i in answered]
    per_reward = await asyncio.gather(*(r.score(sample, texts) for r in rewards)) if texts else []
    table: list[list[float | None]] = [[None] * len(rewards) for _ in completions]
    for pos, i in enumerate(answered):
        table[i] = [col[pos] for col in per_reward]
    return table


def combine(row: Sequence[float | None], weights: Sequence[float]) -> float | None:
    """Weighted mean of one sample's rewards; ``None`` when any is missing."""
    if any(v is None for v in row):
        return None
    total = sum(weights)
    if total == 0:
        return 0.0
    return sum(w * v for w, v in zip(weights, row)) / total  # type: ignore[operator]


def _normalise(values: Sequence[float | None], eps: float, scale: bool, std_mode: str = "population") -> list[float]:
    present = [v for v in values if v is not None]
    if not present:
        return [0.0] * len(values)
    mean = sum(present) / len(present)
    dof = len(present) - 1 if std_mode == "unbiased" else len(present)
    std = math.sqrt(sum((v - mean) ** 2 for v in present) / dof) if dof > 0 else 0.0
    out = []
    for v in values:
        if v is None:
            out.append(0.0)
        elif scale:
            out.append((v - mean) / (std + eps))
        else:
            out.append(v - mean)
    return out


def group_advantages(
    rewards: Sequence[Sequence[Sequence[float | None]]],
    weights: Sequence[float] | None = None,
    mode: str = "grpo",
    eps: float = EPS,
    std: str = "population",
) -> list[list[float]]:
    """Advantages for a batch of groups: ``rewards[B][G][K]`` -> ``advantages[B][G]``.

    A single group is a batch of one: ``group_advantages([rows])[0]``. ``std``: "population"
    (divide by G, the default here, which parameter mode's losses are checked against) or
    "unbiased" (divide by G-1, TRL's).
    """
    if mode not in ADVANTAGE_MODES:
        raise ValueError(f"unknown advantage mode '{mode}' (choose from {', '.join(ADVANTAGE_MODES)})")
    if std not in STD_MODES:
        raise ValueError(f"unknown std '{std}' (choose from {', '.join(STD_MODES)})")
    if not rewards:
        return []
    k = len(rewards[0][0]) if rewards[0] else 0
    w = list(weights) if weights is not None else [1.0] * k
    if mode in ("grpo", "dr_grpo"):
        out = []
        for group in rewards:
            summed = [_weighted_sum(row, w) for row in group]
            out.append(_normalise(summed, eps, scale=(mode == "grpo"), std_mode=std))
        return out
    # gdpo: decoupled per-reward normalisation inside each group, then batch normalisation
    per_group: list[list[float | None]] = []
    for group in rewards:
        missing = [any(v is None for v in row) for row in group]
        cols = []
        for j in range(k):
            col = [None if missing[i] else row[j] for i, row in enumerate(group)]
            cols.append(_normalise(col, eps, scale=True, std_mode=std))
        per_group.append([None if missing[i] else sum(w[j] * cols[j][i] for j in range(k)) for i in range(len(group))])
    flat = [a for g in per_group for a in g]
    normed = _normalise(flat, eps, scale=True, std_mode=std)
    out, pos = [], 0
    for g in per_group:
        out.append(normed[pos : pos + len(g)])
        pos += len(g)
    return out


def _weighted_sum(row: Sequence[float | None], w: Sequence[float]) -> float | None:
    if any(v is None for v in row):
        return None
    return sum(wj * v for wj, v in zip(w, row))  # type: ignore[operator]


def has_contrast(combined: Sequence[float | None], lo: float = -math.inf, hi: float = math.inf) -> bool:
    """True when some answers did better than others and the group's mean reward is strictly
    between the lowest and highest possible reward (the paper's group filter; without bounds,
    DAPO's dynamic-sampling filter: the rewards are not all equal)."""
    present = [v for v in combined if v is not None]
    if len(present) < 2:
        return False
    mean = sum(present) / len(present)
    return lo < mean < hi and max(present) > min(present)


def mean_of(values: Sequence[float | None]) -> float | None:
    """Mean of the rewards present (None: a reward that could not be computed), or None."""
    present = [v for v in values if v is not None]
    return sum(present) / len(present) if present else None
