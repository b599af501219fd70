"""Batch consolidation: every proposal of a step goes to one judge call that returns the ops to
apply (DELETE beats UPDATE, duplicate ADDs merged, restated lessons become UPDATEs).

With no proposal there is no call. When the call fails the step applies nothing; the
proposals stay recorded in ``groups.jsonl`` and the failure in ``ops.jsonl``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Literal

from pydantic import BaseModel, Field, field_validator, model_validator

from experience_store import ExperienceOp
from tfgrpo.config import JudgeConfig
from tfgrpo.judge import ProposedOp, check_op_fields, judge_messages, upper_op
from tfgrpo.llm.client import LLMClient
from tfgrpo.prompting import Prompts
from tfgrpo.structured import ask_structured, schema_for


class ConsolidatedOp(BaseModel):
    op: Literal["ADD", "UPDATE", "DELETE", "MERGE", "NONE"]
    id: str | None = Field(None, description="Library id for UPDATE and DELETE")
    ids: list[str] = Field(default_factory=list, description="Library ids replaced by a MERGE")
    text: str = Field("", description="Lesson text for ADD, UPDATE and MERGE")
    reason: str = Field("", description="One sentence: why this edit")

    _op = field_validator("op", mode="before")(upper_op)
    _fields = model_validator(mode="after")(check_op_fields)


class Consolidation(BaseModel):
    ops: list[ConsolidatedOp] = Field(description="The edits to apply; [] for none")


@dataclass
class Distilled:
    ops: list[ExperienceOp] = field(default_factory=list)
    error: str | None = None
    called: bool = False
    raw: list[str | None] = field(default_factory=list)


def order_proposals(proposals: list[ProposedOp]) -> list[dict]:
    """Proposals grouped by the id they touch (in id order), then those without id."""
    with_id = sorted((p for p in proposals if p.id), key=lambda p: (_id_key(p.id), p.op))
    without = [p for p in proposals if not p.id]
    return [p.model_dump() for p in with_id + without]


def _id_key(exp_id: str | None) -> tuple[int, str]:
    digits = "".join(ch for ch in (exp_id or "") if ch.isdigit())
    return (int(digits) if digits else 0, exp_id or "")


async def consolidate(
    client: LLMClient,
    prompts: Prompts,
    cfg: JudgeConfig,
    proposals: list[ProposedOp],
    library: str,
    *,
    use_cache: bool = True,
) -> Distilled:
    live = [p for p in proposals if p.op != "NONE"]
    if not live:
        return Distilled()
    user = prompts.render(
        "consolidate.j2", library=library, proposals=json.dumps(order_proposals(live), indent=1, ensure_ascii=False),
        schema=json.dumps(schema_for(Consolidation)),
    )
    out = await ask_structured(client, judge_messages(prompts, user), Consolidation, "consolidation",
                               temperature=cfg.temperature, max_tokens=cfg.max_tokens, use_cache=use_cache)
    if not out.ok:
        return Distilled(error=out.error, called=True, raw=out.raw)
    assert out.value is not None
    ops = [
        ExperienceOp(op=o.op, id=o.id, ids=list(o.ids), text=o.text, reason=o.reason)
        for o in out.value.ops
        if o.op != "NONE"
    ]
    return Distilled(ops=ops, called=True, raw=out.raw)
