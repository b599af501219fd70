"""Mean@k and Pass@k for the baseline (no experiences) and with a library, on the same problems
with the same sampling seeds, with intervals and a paired test of the difference.

* n >= k answers per problem and seed. Mean@k: the fraction right (c/n estimates the
  expected fraction among k). Pass@k: the unbiased 1 - C(n-c, k)/C(n, k) (tfgrpo.training_free.stats).
* Several seeds: a problem's value is its mean over seeds; seeds are reported one by one too.
* Intervals: BCa bootstrap over problems (95%). The difference library - baseline is
  paired per problem; its p-value comes from a sign-flip permutation test. "Significant"
  means the interval of the difference excludes 0 AND p < 0.05; where the two disagree the
  weaker claim wins and the verdict says, in words, "no significant difference". Below
  ``SMALL_SAMPLE`` problems the verdict warns that the sample is small.
* ``placebo`` (``tfgrpo eval --placebo``): a third arm with the library's block, its lessons
  replaced by neutral text of equal token length (tfgrpo.training_free.placebo), on the same
  problems and seeds. The summary's ``placebo`` object is shaped like ``baseline`` and adds
  ``diff``: library - placebo, paired like the main difference, so the lessons' content is
  told apart from the prompt format (preamble, citation request, length).

Saved results (``tfgrpo.rundir.save_eval``): ``results.jsonl`` one line per answer,
``summary.json`` the summary printed by ``tfgrpo eval --json``.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence, Union

from experience_store import Library
from tfgrpo.errors import UserError
from tfgrpo.training_free.policy import Policy
from tfgrpo.training_free.rollout import Scorer, stable_seed
from tfgrpo.training_free.stats import ALPHA, SMALL_SAMPLE, bootstrap_ci, paired_permutation_p, pass_at_k
from tfgrpo.task_registry import Sample

__all__ = ["ArmRun", "EvalReport", "Evaluator", "arm_summary", "pass_at_k"]


@dataclass
class ArmRun:
    """One arm (baseline or library): right answers per (seed, problem), and every answer."""

    name: str
    n: int
    correct: dict[tuple[int, str], int] = field(default_factory=dict)
    answers: list[dict[str, Any]] = field(default_factory=list)
    failures: int = 0  # requests that failed
    unscored: int = 0  # answers that came back but whose reward failed (None)

    def per_problem(self, ids: Sequence[str], seeds: Sequence[int], k: int) -> tuple[list[float], list[float]]:
        """Mean@k and Pass@k of each problem (in ``ids`` order), averaged over seeds."""
        means, passes = [], []
        for sid in ids:
            cs = [self.correct[(s, sid)] for s in seeds]
            means.append(sum(cs) / (self.n * len(cs)))  # one division: equal counts give equal values in any order
            passes.append(sum(pass_at_k(self.n, c, k) for c in cs) / len(cs))
        return means, passes


Experiences = Union[str, Callable[[Sample], Any]]  # one block for all, or an injector (rollout.injector)


def _r(x: float) -> float:
    return round(float(x), 6)


def arm_summary(arm: ArmRun, ids: Sequence[str], seeds: Sequence[int], k: int) -> dict[str, Any]:
    """Mean@k, Pass@k and their bootstrap intervals over problems for one arm."""
    means, passes = arm.per_problem(ids, seeds, k)
    boot = seeds[0] if seeds else 0
    return {
        "mean_at_k": _r(sum(means) / len(means)),
        "pass_at_k": _r(sum(passes) / len(passes)),
        "ci95": [_r(v) for v in bootstrap_ci(means, seed=boot)],
        "pass_ci95": [_r(v) for v in bootstrap_ci(passes, seed=boot + 1)],
        "problems": len(ids),
        "samples": arm.n * len(ids) * len(seeds),
        "failures": arm.failures,
        "unscored": arm.unscored,
    }


def paired_diff(base: Sequence[float], lib: Sequence[float], seed: int = 0) -> dict[str, Any]:
    """Per-problem differences lib - base: mean, BCa interval, permutation p-value. Significant
    only when both agree (the interval excludes 0 and p < ALPHA): where they disagree, the
    weaker claim wins."""
    d = [round(b2 - b1, 12) for b1, b2 in zip(base, lib)]  # float noise (1e-16) is no difference
    low, high = bootstrap_ci(d, seed=seed + 2)
    mean = sum(d) / len(d)
    p = paired_permutation_p(d, seed=seed + 3)
    significant = not (low <= 0.0 <= high) and any(d) and p < ALPHA
    return {"mean": _r(mean), "ci95": [_r(low), _r(high)], "p_value": _r(p), "significant": bool(significant)}


def verdict(diff: dict[str, Any], k: int, problems: int | None = None) -> str:
    """One sentence; below ``SMALL_SAMPLE`` problems it says the sample is small."""
    low, high = diff["ci95"]
    numbers = f"95% CI [{low:+.3f}, {high:+.3f}], p = {diff['p_value']:.3g}"
    small = (
        f"; only {problems} problems (fewer than {SMALL_SAMPLE}): a rough indication at best"
        if problems is not None and problems < SMALL_SAMPLE
        else ""
    )
    if not diff["significant"]:
        why = (
            "interval and test disagree, the weaker wins"
            if (not (low <= 0.0 <= high)) != (diff["p_value"] < ALPHA)
            else ""
        )
        return (
            f"no significant difference: Mean@{k} library - baseline = {diff['mean']:+.3f}, {numbers}"
            + (f" ({why})" if why else "")
            + small
        )
    better = "better" if diff["mean"] > 0 else "worse"
    return f"library {better} than baseline: Mean@{k} {diff['mean']:+.3f}, {numbers}{small}"


def _failed(base: ArmRun, lib: ArmRun) -> str:
    """The verdict's note on failed requests and failed rewards: they count as wrong answers, so
    a failure tied to one arm (a library prompt over the context window) shows up as a difference."""
    notes = [
        f"{what}, counted as wrong: {getattr(lib, key)} library, {getattr(base, key)} baseline"
        for what, key in (("failed requests", "failures"), ("answers whose reward failed", "unscored"))
        if getattr(lib, key) or getattr(base, key)
    ]
    return "".join(f"; {n}" for n in notes)


@dataclass
class EvalReport:
    summary: dict[str, Any]
    answers: list[dict[str, Any]]


class Evaluator:
    """Arms of ``n`` answers per problem and seed from ``policy`` (whose group size is ``n``),
    scored by ``scorer``, on the same problems and seeds."""

    def __init__(
        self,
        policy: Policy,
        scorer: Scorer,
        n: int,
        seeds: Sequence[int] = (0,),
        on_advance: Callable[[], None] = lambda: None,
    ) -> None:
        self.policy, self.scorer, self.n, self.seeds, self.on_advance = policy, scorer, n, list(seeds), on_advance

    async def run_arm(self, samples: list[Sample], experiences: Experiences, name: str) -> ArmRun:
        arm, task = ArmRun(name=name, n=self.n), self.scorer.task

        async def one(seed: int, s: Sample) -> None:
            block = experiences(s).text if callable(experiences) else experiences
            g = await self.scorer.score(await self.policy.sample_group(s, block, stable_seed(seed, "eval", s.id)))
            right = [r is not None and r >= task.pass_threshold for r in g.combined]
            arm.correct[(seed, s.id)] = sum(right)
            arm.failures += sum(1 for c in g.completions if not c.ok)
            arm.unscored += sum(1 for c, r in zip(g.completions, g.combined) if c.ok and r is None)
            arm.answers.extend(
                {
                    "version": 1,
                    "arm": name,
                    "seed": seed,
                    "sample_id": s.id,
                    "index": c.index,
                    "reward": g.combined[j],
                    "correct": right[j],
                    "text": c.text,
                    "error": c.error,
                    "cached": c.cached,
                }
                for j, c in enumerate(g.completions)
            )
            self.on_advance()

        await asyncio.gather(*(one(seed, s) for seed in self.seeds for s in samples))
        arm.answers.sort(key=lambda a: (a["seed"], a["sample_id"], a["index"]))
        if arm.answers and arm.failures == len(arm.answers):
            raise UserError(f"every policy request of the {name} arm failed ({arm.failures} of {arm.failures}), e.g. "
                            f"{str(arm.answers[0]['error'])[:300]}; nothing was saved: check --model, --api-base "
                            "(and --agent) and the server")  # fmt: skip
        return arm

    async def compare(
        self, samples: list[Sample], library: Experiences, k: int, placebo: Experiences | None = None
    ) -> EvalReport:
        """Baseline and library (and the ``placebo`` arm when given), Mean@k and Pass@k with
        intervals and the paired difference. Raises ValueError on k > n or no problems (the API
        checks these first)."""
        n, seeds = self.n, self.seeds
        if k > n:
            raise ValueError(f"k={k} is larger than n={n}")
        if not samples:
            raise ValueError("no problems to evaluate")
        base = await self.run_arm(samples, "", "baseline")
        lib = await self.run_arm(samples, library, "library")
        arms = [base, lib] + ([await self.run_arm(samples, placebo, "placebo")] if placebo is not None else [])
        ids = [s.id for s in samples]
        diff = paired_diff(base.per_problem(ids, seeds, k)[0], lib.per_problem(ids, seeds, k)[0], seed=seeds[0])
        summary = {
            "baseline": arm_summary(base, ids, seeds, k),
            "library": arm_summary(lib, ids, seeds, k),
            "diff": diff,
            "verdict": verdict(diff, k, len(samples)) + _failed(base, lib),
            "small_sample": len(samples) < SMALL_SAMPLE,
            "n_problems": len(samples),
            "k": k,
            "n": n,
            "seeds": seeds,
            "seed": seeds[0],
            "task": self.scorer.task.name,
            "by_seed": _by_seed(arms, ids, seeds, k),
        }
        if placebo is not None:
            pla = arms[2]
            summary["placebo"] = {
                **arm_summary(pla, ids, seeds, k),
                "diff": paired_diff(
                    pla.per_problem(ids, seeds, k)[0], lib.per_problem(ids, seeds, k)[0], seed=seeds[0]
                ),
            }
        return EvalReport(summary=summary, answers=[a for arm in arms for a in arm.answers])

    async def baseline(self, samples: list[Sample], k: int) -> EvalReport:
        """The policy alone (no library): Mean@k and Pass@k with their intervals, no comparison."""
        seeds = self.seeds
        base = await self.run_arm(samples, "", "baseline")
        ids = [s.id for s in samples]
        summary = {
            "baseline": arm_summary(base, ids, seeds, k),
            "verdict": "baseline only (no library)",
            "n_problems": len(samples),
            "small_sample": len(samples) < SMALL_SAMPLE,
            "k": k,
            "n": self.n,
            "seeds": seeds,
            "seed": seeds[0],
            "task": self.scorer.task.name,
            "by_seed": _by_seed([base], ids, seeds, k),
        }
        return EvalReport(summary=summary, answers=base.answers)

    async def select_best_epoch(
        self,
        validation: list[Sample],
        versions: dict[int, tuple[int, Library]],
        inject: Callable[[Library], Experiences],
    ) -> dict[str, Any]:
        """Score the library after each epoch (``versions``: epoch, from 1 -> (its last step, the
        library at that step), injected by ``inject``) on the validation split by Mean@n and
        choose the best; ties go to the earlier epoch (fewer lessons to carry). The baseline (no
        library) is scored alongside."""
        ids, n, seed = [s.id for s in validation], self.n, self.seeds[0]
        base = await self.run_arm(validation, "", "baseline")
        candidates = []
        for epoch, (step, lib) in sorted(versions.items()):
            summary = arm_summary(await self.run_arm(validation, inject(lib), f"epoch {epoch}"), ids, [seed], n)
            candidates.append(
                {
                    "epoch": epoch,
                    "step": step,
                    "library_size": len(lib),
                    "mean_at_k": summary["mean_at_k"],
                    "ci95": summary["ci95"],
                }
            )
        best = max(candidates, key=lambda c: (c["mean_at_k"], -c["step"]))
        return {
            "version": 1,
            "criterion": "best-val",
            "metric": f"Mean@{n} on the validation split",
            "validation_problems": len(validation),
            "n": n,
            "seed": seed,
            "baseline": {k: v for k, v in arm_summary(base, ids, [seed], n).items() if k in ("mean_at_k", "ci95")},
            "candidates": candidates,
            "chosen": {"epoch": best["epoch"], "step": best["step"]},
        }


def _by_seed(arms: list[ArmRun], ids: list[str], seeds: list[int], k: int) -> list[dict[str, Any]]:
    return [
        {
            "seed": s,
            **{
                arm.name: {key: arm_summary(arm, ids, [s], k)[key] for key in ("mean_at_k", "pass_at_k")}
                for arm in arms
            },
        }
        for s in seeds
    ]
