"""What a finished step writes to its run directory: the rollout, group and op records, then the
library version, then the step record (steps.jsonl is the step's commit mark)."""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from experience_store import ExperienceOp, Injection, Library, OpResult, Provenance, usage_credit
from tfgrpo.llm.usage import Usage
from tfgrpo.records import GroupRecord, JudgeFailure, RolloutRecord, StepRecord
from tfgrpo.rewards import mean_of
from tfgrpo.rundir import GROUPS, OPS, ROLLOUTS, STEPS, RunDir
from tfgrpo.task_registry import Sample
from tfgrpo.training_free.distill import Curator, Distilled
from tfgrpo.training_free.judge import GroupJudgement
from tfgrpo.training_free.rollout import Group, cited_text


@dataclass
class StepWork:
    """Everything one step computed, before anything is written."""

    step: int
    epoch: int  # from 1
    batch: list[Sample]
    shown: dict[str, Injection]  # sample id -> the experiences injected into its prompt
    groups: list[Group]
    advantages: list[list[float]]
    answered: list[list[int]]  # per group, the answers whose request succeeded
    skipped: dict[int, str]  # group index -> why it was not judged
    judgements: dict[int, GroupJudgement]
    started: float  # time.monotonic() when the step began: its wall time counts the rollouts
    usage_before: dict[str, Any]  # the run's usage when the step began: the step's own is the difference
    distilled: Distilled = field(default_factory=Distilled)
    leaks: list[OpResult] = field(default_factory=list)
    identical: int = 0  # groups whose answers were all the same text

    @property
    def proposals(self) -> list[Any]:
        return [p for j in self.judgements.values() for p in j.proposals]


def credit_evidence(
    groups: list[Group], answered: list[list[int]], shown: list[list[str]], advantages: list[list[float]]
) -> list[list[tuple[list[str], str | None, float]]]:
    """What usage credit compares, per group: (ids shown, cited text, advantage) of each answer
    that came back AND was scored. An unscored answer (a reward that failed) has advantage 0.0
    only as a placeholder: it is no evidence for or against the lessons it cites."""
    return [
        [(shown[i], cited_text(g.completions[j]), advantages[i][j]) for j in answered[i] if g.combined[j] is not None]
        for i, g in enumerate(groups)
    ]


def _usage_delta(before: dict[str, Any], after: Usage) -> dict[str, Any]:
    out = {}
    for role, vals in after.to_dict().items():
        prev = before.get(role, {})
        out[role] = {
            k: (v - (prev.get(k) or 0) if isinstance(v, (int, float)) and v is not None else v) for k, v in vals.items()
        }
    return out


def _records(w: StepWork) -> tuple[list[RolloutRecord], list[GroupRecord], list[JudgeFailure], list[OpResult]]:
    rollouts, groups, failures, dropped = [], [], [], []
    for i, g in enumerate(w.groups):
        for j, c in enumerate(g.completions):
            rollouts.append(
                RolloutRecord(
                    step=w.step,
                    epoch=w.epoch,
                    rollout_id=f"s{w.step}-{g.sample.id}-{j}",
                    sample_id=g.sample.id,
                    index=j,
                    text=c.text,
                    error=c.error,
                    finish_reason=c.finish_reason,
                    cached=c.cached,
                    rewards=g.rewards[j],
                    reward=g.combined[j],
                    advantage=w.advantages[i][j],
                    trajectory=g.trajectories[j].model_dump() if g.trajectories else None,
                )
            )
        jd = w.judgements.get(i)
        comparison = jd.comparison if jd else None
        groups.append(
            GroupRecord(
                step=w.step,
                epoch=w.epoch,
                sample_id=g.sample.id,
                rewards=g.combined,
                advantages=w.advantages[i],
                judged=jd is not None,
                skip_reason=w.skipped.get(i),
                analysis=comparison.reasoning if comparison else None,
                proposals=[p.model_dump() for p in (comparison.ops if comparison else [])],
                summaries=jd.summaries if jd else [],
                error=jd.error if jd else None,
            )
        )
        if jd is None:
            continue
        if jd.error:
            failures.append(
                JudgeFailure(step=w.step, stage="group_comparison", sample_id=g.sample.id, error=jd.error, raw=jd.raw)
            )
        failures += [
            JudgeFailure(
                step=w.step, stage="sample_summary", sample_id=g.sample.id, error=f"attempt {index}: {error}", raw=raw
            )
            for index, error, raw in jd.summary_failures
        ]
        dropped += [
            OpResult(step=w.step, op=op.to_experience(), status="rejected", error=why) for op, why in jd.dropped
        ]
    if w.distilled.error:
        failures.append(JudgeFailure(step=w.step, stage="consolidation", error=w.distilled.error, raw=w.distilled.raw))
    return rollouts, groups, failures, dropped


def write_step(
    run_dir: RunDir,
    library: Library,
    curator: Curator,
    w: StepWork,
    *,
    task: str,
    judge_model: str | None,
    usage: Usage,
) -> StepRecord:
    """Write the step: records first, then the library version, then the commit line."""
    rollouts, groups, failures, judge_dropped = _records(w)
    source_ids = sorted({w.groups[i].sample.id for i, j in w.judgements.items() if j.proposals})
    provenance = Provenance(
        run=run_dir.path.name,
        epoch=w.epoch,
        step=w.step,
        task=task,
        query_ids=source_ids,
        rollout_ids=[r.rollout_id for r in rollouts if r.sample_id in source_ids],
        judge_model=judge_model,
    )
    run_dir.append(ROLLOUTS, rollouts)
    run_dir.append(GROUPS, groups)
    shown_ids = [w.shown[g.sample.id].ids for g in w.groups]
    credit = usage_credit(credit_evidence(w.groups, w.answered, shown_ids, w.advantages), w.step)
    ops: list[ExperienceOp] = w.distilled.ops
    results = library.apply([*ops, *curator.prune(credit, w.step, ops)], w.step, provenance, credit=credit)
    dropped = [OpResult(step=w.step, op=op, status="rejected", error=why) for op, why in w.distilled.dropped]
    run_dir.append(OPS, [*results, *judge_dropped, *dropped, *w.leaks, *failures])

    kinds = Counter(r.op.op for r in results if r.status == "applied")
    record = StepRecord(
        step=w.step,
        epoch=w.epoch,
        sample_ids=[s.id for s in w.batch],
        mean_reward=mean_of([r for g in w.groups for r in g.combined]),
        group_mean_rewards=[mean_of(g.combined) for g in w.groups],
        groups=len(w.groups),
        judged=len(w.judgements),
        proposals=len(w.proposals),
        ops_applied=sum(kinds.values()),
        ops_rejected=sum(1 for r in results if r.status == "rejected") + len(dropped),
        ops_by_kind=dict(kinds),
        judge_failures=len(failures),
        ops_leaked=len(w.leaks),
        identical_groups=w.identical,
        rollout_failures=sum(1 for g in w.groups for c in g.completions if not c.ok),
        library_size=len(library),
        usage=_usage_delta(w.usage_before, usage),
        wall_s=round(time.monotonic() - w.started, 3),
    )
    run_dir.append(STEPS, [record])
    return record
