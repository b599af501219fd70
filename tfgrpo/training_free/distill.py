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
from typing import Iterable

from pydantic import BaseModel, Field

from experience_store import ExperienceOp, Injection, Library, Stats, apply_ops, prune_ops, render_experiences
from tfgrpo.training_free.config import LibraryConfig
from tfgrpo.training_free.judge import Judge
from tfgrpo.training_free.judge_data import library_block, proposals_block
from tfgrpo.training_free.ops import STRICT_SCHEMA, TEXT_OPS, ConsolidatedOp, ProposedOp


class Consolidation(BaseModel):
    model_config = STRICT_SCHEMA

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


class Curator:
    """The consolidation stage, built once per run: it turns a step's proposals into the ops to
    apply (one judge call, bounded by the proposals), and picks the lessons to prune."""

    def __init__(self, judge: Judge, settings: LibraryConfig, library: Library) -> None:
        self.judge, self.settings, self.library = judge, settings, library

    async def curate(self, proposals: list[ProposedOp], shown: Iterable[Injection]) -> Distilled:
        """The step's proposals (and the lessons its prompts showed) -> the ops to apply."""
        live = [p for p in proposals if p.op != "NONE"]
        if not live:
            return Distilled()
        candidates = merge_candidates(self.library, live, self.settings.dedup_threshold)
        view = consolidation_view(self.library, self.settings, shown, candidates, live)
        proposals_json = json.dumps(order_proposals(live), indent=1, ensure_ascii=False)
        user = self.judge.prompts.render(
            "consolidate.j2",
            library=view,
            library_block=library_block(view),
            proposals=proposals_json,
            proposals_block=proposals_block(proposals_json),
            schema=self.judge.schema_text(Consolidation),
            candidates=json.dumps(candidates, indent=1, ensure_ascii=False) if candidates else "",
        )
        out = await self.judge.ask(user, Consolidation, "consolidation")
        if not out.ok:
            return Distilled(error=out.error, called=True, raw=out.raw)
        assert out.value is not None
        ops = [o.to_experience() for o in out.value.ops if o.op != "NONE"]
        kept, dropped = bound_ops(ops, live, candidates)
        return Distilled(ops=kept, called=True, raw=out.raw, dropped=dropped)

    def prune(self, credit: dict[str, Stats], step: int, ops: list[ExperienceOp]) -> list[ExperienceOp]:
        return prune_for(self.library, self.settings, credit, step, ops)


def bound_ops(
    ops: list[ExperienceOp], proposals: list[ProposedOp], candidates: list[dict]
) -> tuple[list[ExperienceOp], list[tuple[ExperienceOp, str]]]:
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
            dropped.append(
                (op, f"consolidation: MERGE retires {', '.join(stray)}, which no proposal or candidate named")
            )
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


def prune_for(
    library: Library, cfg: LibraryConfig, credit: dict[str, Stats], step: int, ops: list[ExperienceOp]
) -> list[ExperienceOp]:
    """Prune DELETEs for this step, judged on the stats including this step's credit, leaving
    alone the lessons this step's ops already touch. Retiring for harm needs ``prune_harmful``
    (off by default): the within-group comparisons of experience_store.credit."""
    touched = {i for o in ops for i in (o.id, *o.ids) if i}
    preview, _ = apply_ops(library.state, [], step, credit=credit)
    pruned = prune_ops(
        preview,
        step,
        unused_steps=cfg.prune_unused_steps,
        min_votes=cfg.prune_min_votes,
        harmful_share=cfg.prune_harmful_share if cfg.prune_harmful else 1.0,
    )
    return [o for o in pruned if o.id not in touched]


def consolidation_view(
    library: Library,
    cfg: LibraryConfig,
    shown: Iterable[Injection],
    candidates: list[dict],
    proposals: list[ProposedOp],
) -> str:
    """The library as consolidation sees it: all of it in ``all`` mode; otherwise the lessons
    this step's prompts showed plus those the proposals name or nearly duplicate, so the prompt
    stays bounded however large the library grows."""
    if cfg.injection.mode == "all":
        return library.render()
    ids = {i for inj in shown for i in inj.ids} | {p.id for p in proposals if p.id}
    ids |= {s["id"] for c in candidates for s in c["similar_to"]}
    return render_experiences(e for e in library.experiences if e.id in ids)
