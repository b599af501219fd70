"""Mean@k and Pass@k for the baseline (no experiences) and with a library, on the same problems
with the same sampling seeds, side by side.

Mean@k: the fraction of right answers among k samples, averaged over problems.
Pass@k: the unbiased estimator 1 - C(n-c, k) / C(n, k) from n >= k samples with c right
(Chen et al., 2021); with n = k it is the fraction of problems solved at least once.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from math import comb
from typing import Any, Callable

from tfgrpo.llm.client import LLMClient
from tfgrpo.prompting import Prompts
from tfgrpo.rollout import sample_group, stable_seed
from tfgrpo.tasks import Sample, Task


def pass_at_k(n: int, c: int, k: int) -> float:
    if k > n:
        raise ValueError(f"k={k} is larger than the number of samples n={n}")
    if n - c < k:
        return 1.0
    return 1.0 - comb(n - c, k) / comb(n, k)


@dataclass
class ArmResult:
    """One arm of the comparison (baseline or library)."""

    correct: dict[str, int] = field(default_factory=dict)
    n: int = 0
    failures: int = 0

    def mean_at_k(self) -> float:
        return sum(c / self.n for c in self.correct.values()) / len(self.correct) if self.correct else 0.0

    def pass_at(self, k: int) -> float:
        return sum(pass_at_k(self.n, c, k) for c in self.correct.values()) / len(self.correct) if self.correct else 0.0

    def to_dict(self, k: int) -> dict[str, Any]:
        return {"mean_at_k": round(self.mean_at_k(), 6), "pass_at_k": round(self.pass_at(k), 6),
                "problems": len(self.correct), "samples": self.n * len(self.correct), "failures": self.failures}


async def run_arm(
    client: LLMClient, task: Task, samples: list[Sample], experiences: str, prompts: Prompts, *,
    k: int, seed: int, temperature: float, max_tokens: int | None, on_advance: Callable[[], None] = lambda: None,
) -> ArmResult:
    arm = ArmResult(n=k)

    async def one(s: Sample) -> None:
        g = await sample_group(client, task, s, experiences, prompts, n=k, temperature=temperature,
                               max_tokens=max_tokens, seed=stable_seed(seed, "eval", s.id))
        arm.correct[s.id] = sum(1 for r in g.combined if r is not None and r >= task.pass_threshold)
        arm.failures += sum(1 for c in g.completions if not c.ok)
        on_advance()

    await asyncio.gather(*(one(s) for s in samples))
    return arm


async def compare(
    client: LLMClient, task: Task, samples: list[Sample], library_block: str, prompts: Prompts, *,
    k: int, seed: int, temperature: float, max_tokens: int | None, on_advance: Callable[[], None] = lambda: None,
) -> dict[str, Any]:
    kwargs = dict(k=k, seed=seed, temperature=temperature, max_tokens=max_tokens, on_advance=on_advance)
    base = await run_arm(client, task, samples, "", prompts, **kwargs)
    lib = await run_arm(client, task, samples, library_block, prompts, **kwargs)
    return {"baseline": base.to_dict(k), "library": lib.to_dict(k), "n_problems": len(samples), "k": k, "seed": seed}
