"""Batch consolidation: every proposal of a step goes to one judge call that returns the ops to
apply (DELETE beats UPDATE, duplicate ADDs merged, restated lessons become UPDATEs).

With no proposal there is no call. When the call fails the step applies nothing; the
proposals stay recorded in ``groups.jsonl`` and the failure in ``ops.jsonl``.

The answer is bounded by the batch's proposals (``bound_ops``): consolidation merges, rewords
and resolves, it does not invent. It may return at most as many ADDs as were proposed, at most
as many edits carrying a text (ADD, UPDATE, MERGE) as proposals carrying one plus the MERGE
candidates it was shown, DELETEs only of ids a proposal deleted and MERGEs only of ids a
proposal named or a candidate pointed at (a MERGE retires its sources). Ops beyond that are not
applied and are recorded as rejected, so a judge that answers with a thousand invented ADDs
cannot grow the library (and every later prompt) by a thousand lessons in one step.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Iterable, Literal

from pydantic import BaseModel, Field, field_validator, model_validator

from experience_store import ExperienceOp, Injection, Library, Stats, apply_ops, prune_ops, render_experiences
from tfgrpo.training_free.config import JudgeConfig, LibraryConfig
from tfgrpo.training_free.judge import (ProposedOp, check_op_fields, judge_messages, lesson_id, schema_text, text_or_empty,
                                        upper_op)
from tfgrpo.llm.client import LLMClient
from tfgrpo.training_free.prompting import Prompts
from tfgrpo.training_free.structured import ask_structured


class ConsolidatedOp(BaseModel):
    op: Literal["ADD", "UPDATE", "DELETE", "MERGE", "NONE"]
    id: str | None = Field(None, description="Library id for UPDATE and DELETE")
    ids: list[str] = Field(default_factory=list, description="Library ids replaced by a MERGE")
    text: str = Field("", description="Lesson text for ADD, UPDATE and MERGE")
    reason: str = Field("", description="One sentence: why this edit")

    _op = field_validator("op", mode="before")(upper_op)
    _id = field_validator("id", mode="before")(lesson_id)
    _text = field_validator("text", "reason", mode="before")(text_or_empty)
    _fields = model_validator(mode="after")(check_op_fields)

    @field_validator("ids", mode="before")
    @classmethod
    def _ids(cls, v: object) -> object:
        return [lesson_id(i) for i in v] if isinstance(v, list) else v


class Consolidation(BaseModel):
    ops: list[ConsolidatedOp] = Field(description="The edits to apply; [] for none")


@dataclass
class Distilled:
    ops: list[ExperienceOp] = field(default_factory=list)
    error: str | None = None
    called: bool = False
    raw: list[str | None] = field(default_factory=list)
    dropped: list[tuple[ExperienceOp, str]] = field(default_factory=list)  # ops beyond bound_ops' limits, with why


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
    candidates: list[dict] | None = None,
) -> Distilled:
    live = [p for p in proposals if p.op != "NONE"]
    if not live:
        return Distilled()
    user = prompts.render(
        "consolidate.j2", library=library, proposals=json.dumps(order_proposals(live), indent=1, ensure_ascii=False),
        schema=schema_text(client, cfg, Consolidation),
        candidates=json.dumps(candidates, indent=1, ensure_ascii=False) if candidates else "",
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
    kept, dropped = bound_ops(ops, live, candidates or [])
    return Distilled(ops=kept, called=True, raw=out.raw, dropped=dropped)


TEXT_OPS = ("ADD", "UPDATE", "MERGE")


def bound_ops(ops: list[ExperienceOp], proposals: list[ProposedOp], candidates: list[dict]) -> tuple[list[ExperienceOp], list[tuple[ExperienceOp, str]]]:
    """The consolidated ops the batch's (non-NONE) ``proposals`` and MERGE ``candidates``
    (:func:`merge_candidates`) allow, in the judge's order, and the rest with the reason each was
    dropped (see the module docstring)."""
    max_adds = sum(p.op == "ADD" for p in proposals)
    max_text = sum(p.op in ("ADD", "UPDATE") for p in proposals) + len(candidates)
    deletable = {p.id for p in proposals if p.op == "DELETE" and p.id}
    mergeable = {p.id for p in proposals if p.id} | {s["id"] for c in candidates for s in c.get("similar_to", [])}
    kept: list[ExperienceOp] = []
    dropped: list[tuple[ExperienceOp, str]] = []
    adds = texts = 0
    for op in ops:
        if op.op == "DELETE" and op.id not in deletable:
            dropped.append((op, f"consolidation: DELETE {op.id} was not proposed by any group"))
            continue
        if op.op == "MERGE" and not set(op.ids) <= mergeable:
            # a MERGE retires its sources: only lessons a proposal named or a candidate pointed at
            stray = sorted(set(op.ids) - mergeable, key=_id_key)
            dropped.append((op, f"consolidation: MERGE retires {', '.join(stray)}, which no proposal or candidate named"))
            continue
        if op.op == "ADD" and adds >= max_adds:
            dropped.append((op, f"consolidation: more ADDs than the {max_adds} proposed"))
            continue
        if op.op in TEXT_OPS and texts >= max_text:
            dropped.append((op, f"consolidation: more edits with a text than the {max_text} the batch allows"))
            continue
        adds += op.op == "ADD"
        texts += op.op in TEXT_OPS
        kept.append(op)
    return kept, dropped


def merge_candidates(library: Library, proposals: list[ProposedOp], threshold: float) -> list[dict]:
    """Library lessons whose embedding is within ``threshold`` cosine of a proposed ADD or
    UPDATE text (an UPDATE's own target excluded): consolidation sees them as MERGE candidates."""
    live = [p for p in proposals if p.op in ("ADD", "UPDATE") and p.text.strip()]
    hits = library.near_duplicates([p.text for p in live], threshold)
    out = []
    for p, near in zip(live, hits):
        similar = [{"id": i, "similarity": round(s, 3)} for i, s in near if i != p.id]
        if similar:
            out.append({"proposal": p.text, "op": p.op, "id": p.id, "similar_to": similar})
    return out


def prune_for(library: Library, cfg: LibraryConfig, credit: dict[str, Stats], step: int, ops: list[ExperienceOp]) -> list[ExperienceOp]:
    """Prune DELETEs for this step, judged on the stats including this step's credit, leaving
    alone the lessons this step's ops already touch. Retiring for harm needs ``prune_harmful``
    (off by default): the within-group comparisons of experience_store.credit."""
    touched = {i for o in ops for i in (o.id, *o.ids) if i}
    preview, _ = apply_ops(library.state, [], step, credit=credit)
    pruned = prune_ops(preview, step, unused_steps=cfg.prune_unused_steps, min_votes=cfg.prune_min_votes,
                       harmful_share=cfg.prune_harmful_share if cfg.prune_harmful else 1.0)
    return [o for o in pruned if o.id not in touched]


def consolidation_view(library: Library, cfg: LibraryConfig, shown: Iterable[Injection], candidates: list[dict],
                       proposals: list[ProposedOp]) -> str:
    """The library as consolidation sees it: all of it in ``all`` mode; otherwise the lessons
    this step's prompts showed plus those the proposals name or nearly duplicate, so the prompt
    stays bounded however large the library grows."""
    if cfg.injection.mode == "all":
        return library.render()
    ids = {i for inj in shown for i in inj.ids} | {p.id for p in proposals if p.id}
    ids |= {s["id"] for c in candidates for s in c["similar_to"]}
    return render_experiences(e for e in library.experiences if e.id in ids)
