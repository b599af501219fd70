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
import functools
import logging
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from experience_store import Injection, Library
from tfgrpo.errors import UserError, disk_full
from tfgrpo.hooks import Hooks
from tfgrpo.llm.endpoints import Models
from tfgrpo.llm.usage import Usage
from tfgrpo.records import StepRecord
from tfgrpo.rewards import group_advantages, has_contrast
from tfgrpo.rundir import LIBRARY, RunDir
from tfgrpo.task_registry import Sample, Task
from tfgrpo.training_free.budget import Budget
from tfgrpo.training_free.config import RunConfig
from tfgrpo.training_free.distill import Curator
from tfgrpo.training_free.judge import GroupJudgement, Judge
from tfgrpo.training_free.judge_check import check_judge
from tfgrpo.training_free.leak import LeakGuard
from tfgrpo.training_free.policy import Policy, PromptPolicy
from tfgrpo.training_free.prompting import Prompts
from tfgrpo.training_free.rollout import Group, Scorer, group_attempts, injector, stable_seed, task_context
from tfgrpo.training_free.step_writer import StepWork, write_step

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
            "learned_nothing": nothing_learned(self.steps) if self.library_size == 0 else None,
            "stopped_reason": self.stopped,
            "resumed_from_step": self.resumed_from,
            "wall_s": round(self.wall_s, 3),
            "run_dir": str(self.run_dir),
            "library": str(self.run_dir / LIBRARY),
            **({"selected_step": self.selection["chosen"]["step"]} if self.selection else {}),
        }


def nothing_learned(steps: list[StepRecord]) -> str | None:
    """Why a run's library is empty, from its step records (None: no step ran)."""
    if not steps:
        return None
    groups, judged = sum(s.groups for s in steps), sum(s.judged for s in steps)
    if judged == 0:
        identical = sum(s.identical_groups for s in steps)
        if identical == groups:
            return f"every group's answers were identical ({groups} groups): the endpoint does not seem to sample"
        return f"no group had a contrast to judge ({groups} groups; {identical} of identical answers)"
    if sum(s.judge_failures for s in steps) >= judged:
        return f"the judge gave no usable reply for the {judged} groups it judged (ops.jsonl has them)"
    if sum(s.proposals for s in steps) == 0:
        return f"the judge found nothing general to learn in the {judged} groups it judged (NONE)"
    return "every proposed lesson was rejected (ops.jsonl says why)"


def all_failed(step: int, groups: list[Group]) -> str:
    errors = [c.error or "" for g in groups for c in g.completions]
    if all(e.startswith("agent:") for e in errors):
        return (f"step {step}: every rollout of the agent failed ({len(errors)} of {len(errors)}), e.g. {errors[0][:300]}; "
                "nothing of this step was kept: check --agent (run it by hand with a sample on stdin)")  # fmt: skip
    return (f"step {step}: every policy request failed ({len(errors)} of {len(errors)}), e.g. {errors[0][:300]}; "
            "nothing of this step was kept: check --model (a litellm name carries its provider, e.g. "
            "openai/NAME), --api-base and the server")  # fmt: skip


def judge_unusable(judge: str | None, judgements: list[GroupJudgement]) -> str:
    return (f"the judge {judge} gave no usable reply for any of the {len(judgements)} groups of step 1 (e.g. "
            f"{(judgements[0].error or '')[:200]}); nothing was kept: use a more capable --judge, or raise "
            "--judge-max-tokens if its replies were cut off")  # fmt: skip


def is_identical(group: Group) -> bool:
    texts = [c.text for c in group.completions if c.ok]
    return len(texts) > 1 and len(set(texts)) == 1


@dataclass
class Stages:
    """The loop's stages, built once per run: the policy answers, the scorer rewards, the judge
    compares, the curator consolidates; ``inject`` picks each query's lessons."""

    policy: Policy
    scorer: Scorer
    judge: Judge
    curator: Curator
    inject: Callable[[Sample], Injection]


def build_stages(
    cfg: RunConfig, task: Task, models: Models, prompts: Prompts, library: Library, policy: Policy | None = None
) -> Stages:
    """The built-in stages for a run (``policy``: another agent in place of the built-in one)."""
    assert models.judge is not None
    judge = Judge(models.judge, prompts, cfg.judge, task_context(task, prompts))
    return Stages(
        policy=policy or PromptPolicy(models.policy, task, prompts, cfg.sampling),
        scorer=Scorer(task),
        judge=judge,
        curator=Curator(judge, cfg.library, library),
        inject=injector(library, cfg.library, models.policy.count_tokens),
    )


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


def _skip_reason(cfg: RunConfig, task: Task, group: Group, answered: int) -> str | None:
    """Why a group is not judged (None: it is): fewer than two answers (the other requests
    failed), or no contrast among its answers' rewards."""
    size = len(group.completions)
    if answered < min(2, size):
        return f"only {answered} of {size} answers ({size - answered} requests failed)"
    if size == 1:  # G = 1 has no contrast to filter on: every group is judged, as the reference's ablation does
        return None
    if (
        cfg.judge.ground_truth
        and cfg.judge.skip_equal_groups
        and not has_contrast(group.combined, task.min_reward, task.max_reward)
    ):
        return "all answers scored the same"
    return None


async def _every(aws: list[Any]) -> list[Any]:
    """``asyncio.gather``, except that when one fails the others are cancelled and awaited here:
    none ends later with an error nobody reads (e.g. the same full disk), which asyncio prints
    as a traceback when the run stops."""
    tasks = [asyncio.ensure_future(a) for a in aws]
    try:
        return list(await asyncio.gather(*tasks))
    except BaseException:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise


async def rollouts(
    stages: Stages, batch: list[Sample], epoch_index: int, seed: int, hooks: Hooks
) -> tuple[dict[str, Injection], list[Group]]:
    """Each query's lessons, then its group of answers, scored."""
    shown = {s.id: stages.inject(s) for s in batch}

    async def one(sample: Sample) -> Group:
        out = await stages.policy.sample_group(
            sample, shown[sample.id].text, stable_seed(seed, "rollout", epoch_index, sample.id)
        )
        group = await stages.scorer.score(out)
        hooks.on_advance("rollouts")
        return group

    return shown, await _every([one(s) for s in batch])


async def judge_groups(stages: Stages, w: StepWork, reward_names: list[str], hooks: Hooks) -> dict[int, GroupJudgement]:
    """The semantic advantage of each group that has contrast (a failed rollout is no answer:
    the judge sees only the answers a group has)."""
    to_judge = [i for i in range(len(w.groups)) if i not in w.skipped]

    async def one(i: int) -> GroupJudgement:
        g = w.groups[i]
        out = await stages.judge.judge_group(
            g.sample, group_attempts(g, reward_names, w.answered[i]), w.shown[g.sample.id]
        )
        hooks.on_advance("judging")
        return out

    return dict(zip(to_judge, await _every([one(i) for i in to_judge])))


def _full_disk_resumable(train: Callable[..., Any]) -> Callable[..., Any]:
    """A write that finds the disk full (records, library, response cache, status) stops the run
    with one line saying how to go on; what finished is kept, as after a kill."""

    @functools.wraps(train)
    async def run(cfg: RunConfig, task: Task, models: Models, run_dir: RunDir, **kwargs: Any) -> TrainResult:
        try:
            return await train(cfg, task, models, run_dir, **kwargs)
        except Exception as e:
            full = disk_full(e)
            if full is None:
                raise
            go_on = (
                f"every finished step is saved: tfgrpo train --resume {run_dir.path}"
                if run_dir.has_steps()
                else "no step finished, so nothing was kept: run the same command again"
            )
            raise UserError(f"{full}: free some space; {go_on}") from None

    return run


@_full_disk_resumable
async def train_loop(
    cfg: RunConfig,
    task: Task,
    models: Models,
    run_dir: RunDir,
    *,
    prompts: Prompts,
    hooks: Hooks | None = None,
    policy: Policy | None = None,
) -> TrainResult:
    hooks = hooks or Hooks()
    started = time.monotonic()
    run_dir.create().write_config(cfg)
    done = run_dir.steps()
    last = done[-1].step if done else 0
    run_dir.discard_after(last)
    library = Library(
        run_dir.library_path,
        embedding=cfg.library.embedding,
        store=cfg.library.store,
        collection=cfg.library.collection or (run_dir.path.name if cfg.library.store else None),
    )
    library.discard_after(last)
    library.sync()
    stages = build_stages(cfg, task, models, prompts, library, policy)

    samples = task.dataset[: cfg.limit] if cfg.limit else task.dataset
    plan = plan_batches(len(samples), cfg.batch_size, cfg.epochs, cfg.sampling.seed)
    steps = list(done)
    budget, stopped = Budget(cfg.budget), None
    run_dir.write_status(
        "training_free", "running", steps_done=len(done), steps_planned=len(plan)
    )  # still "running" after a crash: resumable
    guard = LeakGuard(s.user_text() for s in samples) if cfg.judge.leak_guard != "off" else None
    if cfg.sampling.group_size == 1:
        log.warning("group size 1: no group has a contrast, so the judge reviews every group on its own")
    reward_names = [r.name for r in task.rewards]
    told_identical = False
    if last == 0 and plan and cfg.judge.check:  # the judge is checked before anything is paid for
        hooks.on_phase("checking the judge on two canned groups", 0)
        await check_judge(stages.judge, models.judge_name)
    for step, (epoch_index, indices) in enumerate(plan, start=1):
        if step <= last:
            continue
        stopped = budget.stop_reason([s.usage for s in steps])
        if stopped:
            break
        usage_before, started_step = models.usage.to_dict(), time.monotonic()
        batch = [samples[i] for i in indices]
        hooks.on_phase(f"step {step}/{len(plan)} rollouts", len(batch))
        shown, groups = await rollouts(stages, batch, epoch_index, cfg.sampling.seed, hooks)
        if all(not c.ok for g in groups for c in g.completions):
            run_dir.write_status("training_free", "failed", reason=(why := all_failed(step, groups)),
                                 steps_done=len(steps), steps_planned=len(plan))  # fmt: skip
            raise UserError(why)
        identical = sum(1 for g in groups if is_identical(g))
        sampled = cfg.sampling.temperature > 0
        if sampled and not told_identical and identical and identical == sum(len(g.completions) > 1 for g in groups):
            told_identical = True
            hooks.on_notice(
                f"warning: step {step}: every group's answers were identical at temperature "
                f"{cfg.sampling.temperature:g}, so no group has a contrast to learn from: the endpoint seems not to "
                "sample (a server that ignores temperature, or a model served greedily); serve it so that it "
                "samples, or try a higher --temperature"
            )
        answered = [[j for j, c in enumerate(g.completions) if c.ok] for g in groups]
        w = StepWork(
            step=step,
            epoch=epoch_index + 1,
            batch=batch,
            shown=shown,
            groups=groups,
            answered=answered,
            advantages=group_advantages(
                [g.rewards for g in groups], task.weights, cfg.advantage, std=cfg.advantage_std
            ),
            skipped={i: why for i, g in enumerate(groups) if (why := _skip_reason(cfg, task, g, len(answered[i])))},
            judgements={},
            usage_before=usage_before,
            started=started_step,
        )
        hooks.on_phase(f"step {step}/{len(plan)} judging", len(groups) - len(w.skipped))
        w.judgements = await judge_groups(stages, w, reward_names, hooks)
        if step == 1 and w.judgements and all(j.error for j in w.judgements.values()):
            raise UserError(judge_unusable(models.judge_name, list(w.judgements.values())))
        hooks.on_phase(f"step {step}/{len(plan)} consolidating", 1 if w.proposals else 0)
        w.distilled = await stages.curator.curate(w.proposals, shown.values())
        if w.distilled.called:
            hooks.on_advance("consolidating")
        if guard is not None:
            w.distilled.ops, w.leaks = guard.screen(w.distilled.ops, step, cfg.judge.leak_guard)
        record = write_step(
            run_dir, library, stages.curator, w, task=task.name, judge_model=models.judge_name, usage=models.usage
        )
        steps.append(record)
        hooks.on_step(record)

    run_dir.write_status(
        "training_free",
        "stopped_by_budget" if stopped else "finished",
        reason=stopped or (nothing_learned(steps) if len(library) == 0 else None),
        steps_done=len(steps),
        steps_planned=len(plan),
    )
    return TrainResult(
        run_dir=run_dir.path,
        steps=steps,
        library_size=len(library),
        usage=models.usage,
        wall_s=time.monotonic() - started,
        resumed_from=last,
        stopped=stopped,
    )
