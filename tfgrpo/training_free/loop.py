"""The training-free GRPO loop: epochs x batches of queries; each step samples a group per query,
scores it, asks the judge for the semantic advantage of the groups with contrast, consolidates
the proposals and applies them to the library as one versioned transaction.

The run directory (``tfgrpo.rundir``, docs/architecture.md) holds what each step wrote. A line
in steps.jsonl is a step's commit: on resume, anything a later, unfinished step wrote is
discarded and the step is redone; its LLM calls come back from the response cache, so no
finished call is paid twice and the library ends exactly as an uninterrupted run's would.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from experience_store import ExperienceOp, Injection, Library, OpResult, Provenance, usage_credit
from tfgrpo.training_free.budget import Budget
from tfgrpo.training_free.config import RunConfig
from tfgrpo.training_free.distill import consolidate, consolidation_view, merge_candidates, prune_for
from tfgrpo.training_free.judge import GroupJudgement, judge_group
from tfgrpo.hooks import Hooks
from tfgrpo.training_free.leak import LeakGuard
from tfgrpo.llm.endpoints import Models
from tfgrpo.llm.usage import Usage
from tfgrpo.training_free.prompting import Prompts
from tfgrpo.records import GroupRecord, JudgeFailure, RolloutRecord, StepRecord
from tfgrpo.rewards import group_advantages, has_contrast, mean_of
from tfgrpo.rundir import GROUPS, LIBRARY, OPS, ROLLOUTS, STEPS, RunDir
from tfgrpo.training_free.rollout import Group, cited_text, group_attempts, injector, sample_group, stable_seed, task_context
from tfgrpo.task_registry import Task

log = logging.getLogger(__name__)


@dataclass
class TrainResult:
    run_dir: Path
    steps: list[StepRecord]
    library_size: int
    usage: Usage
    wall_s: float
    resumed_from: int = 0
    stopped: str | None = None  # why a budget stopped the run before its last step
    selection: dict[str, Any] | None = None  # --select best-val: selection.json

    def summary(self) -> dict[str, Any]:
        usage = self.usage.to_dict()
        return {
            "steps": len(self.steps),
            "library_size": self.library_size,
            "reward_by_step": [s.mean_reward for s in self.steps],
            "calls": {role: u["calls"] for role, u in usage.items()},
            "tokens": {role: u["total_tokens"] for role, u in usage.items()},
            "usage": usage,
            "judge_failures": sum(s.judge_failures for s in self.steps),
            "rollout_failures": sum(s.rollout_failures for s in self.steps),
            "ops_applied": sum(s.ops_applied for s in self.steps),
            "ops_rejected": sum(s.ops_rejected for s in self.steps),
            "leaks": sum(s.ops_leaked for s in self.steps),
            "status": "stopped_by_budget" if self.stopped else "finished",
            "stopped_reason": self.stopped,
            "resumed_from_step": self.resumed_from,
            "wall_s": round(self.wall_s, 3),
            "run_dir": str(self.run_dir),
            "library": str(self.run_dir / LIBRARY),
            **({"selected_step": self.selection["chosen"]["step"]} if self.selection else {}),
        }


def plan_batches(n_samples: int, batch_size: int, epochs: int, seed: int) -> list[tuple[int, list[int]]]:
    """(epoch index, sample indices) for every step of the run, reshuffled each epoch by the seed.
    The index counts from 0 and only seeds (shuffles, rollouts: the response cache's keys);
    what a run writes and shows counts epochs from 1 (``epoch index + 1``)."""
    plan = []
    for epoch in range(epochs):
        order = list(range(n_samples))
        random.Random(stable_seed(seed, "epoch", epoch)).shuffle(order)
        for start in range(0, n_samples, batch_size):
            plan.append((epoch, order[start : start + batch_size]))
    return plan


def _usage_delta(before: dict[str, Any], after: Usage) -> dict[str, Any]:
    now = after.to_dict()
    out = {}
    for role, vals in now.items():
        prev = before.get(role, {})
        out[role] = {k: (v - (prev.get(k) or 0) if isinstance(v, (int, float)) and v is not None else v) for k, v in vals.items()}
    return out


def credit_evidence(groups: list[Group], answered: list[list[int]], shown: list[list[str]],
                    advantages: list[list[float]]) -> list[list[tuple[list[str], str, float]]]:  # fmt: skip
    """What usage credit compares, per group: (ids shown, cited text, advantage) of each answer
    that came back AND was scored. An unscored answer (a reward that failed) has advantage 0.0
    only as a placeholder: it is no evidence for or against the lessons it cites."""
    return [[(shown[i], cited_text(g.completions[j]), advantages[i][j]) for j in answered[i] if g.combined[j] is not None]
            for i, g in enumerate(groups)]


def _skip_reason(cfg: RunConfig, task: Task, group: Group, answered: int) -> str | None:
    """Why a group is not judged (None: it is): fewer than two answers (the other requests
    failed), or no contrast among its answers' rewards."""
    size = len(group.completions)
    if answered < min(2, size):
        return f"only {answered} of {size} answers ({size - answered} requests failed)"
    if size == 1:  # G = 1 has no contrast to filter on: every group is judged, as the reference's ablation does
        return None
    if cfg.judge.ground_truth and cfg.judge.skip_equal_groups and not has_contrast(group.combined, task.min_reward, task.max_reward):
        return "all answers scored the same"
    return None


async def train_loop(
    cfg: RunConfig,
    task: Task,
    models: Models,
    run_dir: RunDir,
    *,
    prompts: Prompts,
    hooks: Hooks | None = None,
) -> TrainResult:
    hooks = hooks or Hooks()
    started = time.monotonic()
    run_dir.create().write_config(cfg)
    done = run_dir.steps()
    last = done[-1].step if done else 0
    run_dir.discard_after(last)
    library = Library(run_dir.library_path, embedding=cfg.library.embedding, store=cfg.library.store,
                      collection=cfg.library.collection or (run_dir.path.name if cfg.library.store else None))
    inject = injector(library, cfg.library, models.policy_name)
    library.discard_after(last)
    library.sync()

    samples = task.dataset[: cfg.limit] if cfg.limit else task.dataset
    sampling = cfg.sampling
    plan = plan_batches(len(samples), cfg.batch_size, cfg.epochs, sampling.seed)
    steps = list(done)
    budget, stopped = Budget(cfg.budget), None
    run_dir.write_status("training_free", "running", steps_done=len(done), steps_planned=len(plan))  # still "running" after a crash: resumable
    guard = LeakGuard(s.user_text() for s in samples) if cfg.judge.leak_guard != "off" else None
    judge_context = task_context(task, prompts)
    if cfg.sampling.group_size == 1:
        log.warning("group size 1: no group has a contrast, so the judge reviews every group on its own")
    use_cache = cfg.cache
    assert models.judge is not None
    for step, (epoch_index, indices) in enumerate(plan, start=1):
        epoch = epoch_index + 1  # records, provenance and the screen count epochs from 1
        if step <= last:
            continue
        stopped = budget.stop_reason([s.usage for s in steps])
        if stopped:
            break
        t0 = time.monotonic()
        usage_before = models.usage.to_dict()
        batch = [samples[i] for i in indices]
        shown: dict[str, Injection] = {}  # sample id -> the experiences injected into its prompt

        hooks.on_phase(f"step {step}/{len(plan)} rollouts", len(batch))

        async def one(sample, _epoch=epoch_index):
            injected = inject(sample)
            shown[sample.id] = injected
            g = await sample_group(models.policy, task, sample, injected.text, prompts, sampling,
                                   seed=stable_seed(sampling.seed, "rollout", _epoch, sample.id), use_cache=use_cache)
            hooks.on_advance("rollouts")
            return g

        groups: list[Group] = await asyncio.gather(*(one(s) for s in batch))
        advantages = group_advantages([g.rewards for g in groups], task.weights, cfg.advantage, std=cfg.advantage_std)

        # A failed rollout is no answer: the judge sees only the answers a group has.
        answered = [[j for j, c in enumerate(g.completions) if c.ok] for g in groups]
        skipped = {i: why for i, g in enumerate(groups) if (why := _skip_reason(cfg, task, g, len(answered[i])))}
        to_judge = [i for i in range(len(groups)) if i not in skipped]
        hooks.on_phase(f"step {step}/{len(plan)} judging", len(to_judge))

        async def judge_one(i: int) -> GroupJudgement:
            g = groups[i]
            attempts = group_attempts(g, [r.name for r in task.rewards], answered[i])
            out = await judge_group(models.judge, prompts, cfg.judge, g.sample, attempts, shown[g.sample.id].text,
                                    pass_threshold=task.pass_threshold, use_cache=use_cache, context=judge_context,
                                    shown_ids=shown[g.sample.id].ids)
            hooks.on_advance("judging")
            return out

        judgements = dict(zip(to_judge, await asyncio.gather(*(judge_one(i) for i in to_judge))))
        proposals = [p for j in judgements.values() for p in j.proposals]
        hooks.on_phase(f"step {step}/{len(plan)} consolidating", 1 if proposals else 0)
        candidates = merge_candidates(library, proposals, cfg.library.dedup_threshold)
        view = consolidation_view(library, cfg.library, shown.values(), candidates, proposals)
        distilled = await consolidate(models.judge, prompts, cfg.judge, proposals, view, use_cache=use_cache,
                                      candidates=candidates)
        if distilled.called:
            hooks.on_advance("consolidating")
        leaks = []
        if guard is not None:
            distilled.ops, leaks = guard.screen(distilled.ops, step, cfg.judge.leak_guard)

        # ---- write the step: records first, then the library version, then the commit line
        rollouts, group_records, failures, judge_dropped = [], [], [], []
        for i, g in enumerate(groups):
            for j, c in enumerate(g.completions):
                rollouts.append(RolloutRecord(
                    step=step, epoch=epoch, rollout_id=f"s{step}-{g.sample.id}-{j}", sample_id=g.sample.id, index=j,
                    text=c.text, error=c.error, finish_reason=c.finish_reason, cached=c.cached,
                    rewards=g.rewards[j], reward=g.combined[j], advantage=advantages[i][j],
                    trajectory=g.trajectories[j].model_dump() if g.trajectories else None,
                ))
            jd = judgements.get(i)
            group_records.append(GroupRecord(
                step=step, epoch=epoch, sample_id=g.sample.id, rewards=g.combined, advantages=advantages[i],
                judged=jd is not None, skip_reason=skipped.get(i),
                analysis=jd.comparison.analysis if jd and jd.comparison else None,
                proposals=[p.model_dump() for p in (jd.comparison.ops if jd and jd.comparison else [])],
                summaries=jd.summaries if jd else [], error=jd.error if jd else None,
            ))
            if jd is not None and jd.error:
                failures.append(JudgeFailure(step=step, stage="group_comparison", sample_id=g.sample.id, error=jd.error, raw=jd.raw))
            for index, error, raw in jd.summary_failures if jd is not None else []:
                failures.append(JudgeFailure(step=step, stage="sample_summary", sample_id=g.sample.id,
                                             error=f"attempt {index}: {error}", raw=raw))
            for op, why in jd.dropped if jd is not None else []:
                judge_dropped.append(OpResult(step=step, op=ExperienceOp(op=op.op, id=op.id, text=op.text, reason=op.reason),
                                              status="rejected", error=why))
        if distilled.error:
            failures.append(JudgeFailure(step=step, stage="consolidation", error=distilled.error, raw=distilled.raw))
        source_ids = sorted({groups[i].sample.id for i, j in judgements.items() if j.proposals})
        provenance = Provenance(
            run=run_dir.path.name, epoch=epoch, step=step, task=task.name, query_ids=source_ids,
            rollout_ids=[r.rollout_id for r in rollouts if r.sample_id in source_ids],
            judge_model=models.judge_name,
        )
        run_dir.append(ROLLOUTS, rollouts)
        run_dir.append(GROUPS, group_records)
        credit = usage_credit(credit_evidence(groups, answered, [shown[g.sample.id].ids for g in groups], advantages), step)
        pruned = prune_for(library, cfg.library, credit, step, distilled.ops)
        results = library.apply([*distilled.ops, *pruned], step, provenance, credit=credit)
        dropped = [OpResult(step=step, op=op, status="rejected", error=why) for op, why in distilled.dropped]
        run_dir.append(OPS, [*results, *judge_dropped, *dropped, *leaks, *failures])

        kinds = Counter(r.op.op for r in results if r.status == "applied")
        record = StepRecord(
            step=step, epoch=epoch, sample_ids=[s.id for s in batch],
            mean_reward=mean_of([r for g in groups for r in g.combined]),
            group_mean_rewards=[mean_of(g.combined) for g in groups],
            groups=len(groups), judged=len(judgements), proposals=len(proposals),
            ops_applied=sum(kinds.values()), ops_rejected=sum(1 for r in results if r.status == "rejected") + len(dropped),
            ops_by_kind=dict(kinds), judge_failures=len(failures), ops_leaked=len(leaks),
            rollout_failures=sum(1 for g in groups for c in g.completions if not c.ok),
            library_size=len(library), usage=_usage_delta(usage_before, models.usage),
            wall_s=round(time.monotonic() - t0, 3),
        )
        run_dir.append(STEPS, [record])
        steps.append(record)
        hooks.on_step(record)

    run_dir.write_status("training_free", "stopped_by_budget" if stopped else "finished", reason=stopped,
                         steps_done=len(steps), steps_planned=len(plan))
    return TrainResult(
        run_dir=run_dir.path, steps=steps, library_size=len(library), usage=models.usage,
        wall_s=time.monotonic() - started, resumed_from=last, stopped=stopped,
    )
