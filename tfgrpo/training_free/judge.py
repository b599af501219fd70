"""The semantic advantage: the judge compares a group's better and worse answers and proposes
edits to the library.

Stages (docs/architecture.md): optional per-sample summaries, then one group comparison that returns an
analysis and at most a few proposed ops. Following the GEPA contract, one bad group never
raises: its failure is returned and recorded; only an unreachable endpoint raises.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, Field, field_validator, model_validator

from tfgrpo.training_free.config import JudgeConfig
from tfgrpo.llm.client import LLMClient
from tfgrpo.training_free.prompting import Prompts
from tfgrpo.training_free.structured import ask_structured, schema_for
from tfgrpo.task_registry import Sample


def upper_op(v: Any) -> Any:
    return v.strip().upper() if isinstance(v, str) else v


def check_op_fields(op: Any) -> Any:
    """An op must carry what its kind needs, so that output cut off mid-op (which the tolerant
    parser can close) is caught and repaired instead of applied half-empty."""
    if op.op in ("ADD", "UPDATE", "MERGE") and not op.text.strip():
        raise ValueError(f"{op.op} needs a non-empty text")
    if op.op in ("UPDATE", "DELETE") and not op.id:
        raise ValueError(f"{op.op} needs the id of the lesson it changes")
    if op.op == "MERGE" and len(getattr(op, "ids", [])) < 2:
        raise ValueError("MERGE needs at least two ids")
    return op


class ProposedOp(BaseModel):
    op: Literal["ADD", "UPDATE", "DELETE", "NONE"]
    id: str | None = Field(None, description="Library id for UPDATE and DELETE, e.g. E3")
    text: str = Field("", description="The lesson: 'When <condition>, <strategy>.'")
    reason: str = Field("", description="One sentence: why this edit")

    _op = field_validator("op", mode="before")(upper_op)
    _fields = model_validator(mode="after")(check_op_fields)


class GroupComparison(BaseModel):
    analysis: str = Field(description="What the better attempts did that the worse did not")
    ops: list[ProposedOp] = Field(description="At most a few edits; [] when nothing general was learned")


class SampleSummary(BaseModel):
    summary: str


@dataclass
class Attempt:
    index: int
    text: str
    reward: float | None


@dataclass
class GroupJudgement:
    """The judge's result for one group; ``error`` set when the judge failed on it."""

    sample_id: str
    comparison: GroupComparison | None = None
    summaries: list[str] = field(default_factory=list)
    error: str | None = None
    raw: list[str | None] = field(default_factory=list)

    @property
    def proposals(self) -> list[ProposedOp]:
        return [op for op in (self.comparison.ops if self.comparison else []) if op.op != "NONE"]


def judge_messages(prompts: Prompts, user: str) -> list[dict[str, str]]:
    return [{"role": "system", "content": prompts.render("judge_system.j2")}, {"role": "user", "content": user}]


async def judge_group(
    client: LLMClient,
    prompts: Prompts,
    cfg: JudgeConfig,
    sample: Sample,
    attempts: list[Attempt],
    library: str,
    *,
    pass_threshold: float,
    use_cache: bool = True,
) -> GroupJudgement:
    result = GroupJudgement(sample_id=sample.id)
    texts = [a.text for a in attempts]
    if cfg.summaries:
        schema = json.dumps(schema_for(SampleSummary))
        calls = [
            ask_structured(
                client,
                judge_messages(prompts, prompts.render(
                    "summary.j2", problem=sample.user_text(), answer=sample.answer, attempt=a.text,
                    reward=a.reward, correct=(a.reward or 0) >= pass_threshold, ground_truth=cfg.ground_truth,
                    schema=schema)),
                SampleSummary, "sample_summary", temperature=cfg.temperature, max_tokens=cfg.max_tokens,
                use_cache=use_cache,
            )
            for a in attempts
        ]
        outs = await asyncio.gather(*calls)
        # A failed summary falls back to the attempt itself: the comparison still sees everything.
        texts = [o.value.summary if o.ok else a.text for o, a in zip(outs, attempts)]
        result.summaries = [o.value.summary if o.ok else "" for o in outs]
    shown = [Attempt(a.index, t, a.reward) for a, t in zip(attempts, texts)]
    user = prompts.render(
        "compare.j2", problem=sample.user_text(), answer=sample.answer, attempts=shown, library=library,
        ground_truth=cfg.ground_truth, max_ops=cfg.max_ops_per_group, schema=json.dumps(schema_for(GroupComparison)),
    )
    out = await ask_structured(client, judge_messages(prompts, user), GroupComparison, "group_comparison",
                               temperature=cfg.temperature, max_tokens=cfg.max_tokens, use_cache=use_cache)
    result.raw = out.raw
    if not out.ok:
        result.error = out.error
        return result
    comparison = out.value
    assert comparison is not None
    comparison.ops = comparison.ops[: cfg.max_ops_per_group]
    result.comparison = comparison
    return result
