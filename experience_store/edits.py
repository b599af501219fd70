"""Edits of a library state, without IO: apply a step's ops, propose prune DELETEs, diff two
versions. ``Library`` persists what these return; a caller can also preview a step with them."""

from __future__ import annotations

from typing import Any, Iterable

from pydantic import BaseModel, Field

from experience_store.credit import canonical_id
from experience_store.embedding import DEFAULT_SPEC
from experience_store.models import Experience, ExperienceOp, OpResult, Provenance, Stats

MAX_LESSON_CHARS = 2000


class LibraryState(BaseModel):
    """One version of the library. Field order is the file format."""

    version: int = 1
    step: int = 0
    next_id: int = 1
    embedding: dict[str, Any] = Field(default_factory=lambda: dict(DEFAULT_SPEC))
    experiences: list[Experience] = Field(default_factory=list)

    def get(self, exp_id: str) -> Experience | None:
        exp_id = canonical_id(exp_id)  # [E1], e1, ' E1 ' and 1 all name E1
        for e in self.experiences:
            if e.id == exp_id:
                return e
        return None

    def active(self) -> list[Experience]:
        return [e for e in self.experiences if e.status == "active"]


def norm_text(text: str) -> str:
    """A lesson's text for exact-duplicate checks: case and spacing aside."""
    return " ".join(text.lower().split())


def apply_ops(
    state: LibraryState,
    ops: Iterable[ExperienceOp],
    step: int,
    provenance: Provenance | None = None,
    credit: dict[str, Stats] | None = None,
) -> tuple[LibraryState, list[OpResult]]:
    """Pure function: the next state and one result per op. Unknown ids are rejected, never
    turned into ADD; an exact duplicate of an active lesson is never stored twice. ``credit``
    (usage counted during the step, by id) is added to the stats before the ops apply."""
    new = state.model_copy(deep=True)
    new.step = step
    by_id = {e.id: e for e in new.experiences}  # one lookup per credited id (a library may hold thousands)
    for exp_id, delta in (credit or {}).items():
        target = by_id.get(exp_id)
        if target is not None:
            target.stats.add(delta)
    results: list[OpResult] = []
    prov = provenance or Provenance(step=step)

    def reject(op: ExperienceOp, why: str) -> None:
        results.append(OpResult(step=step, op=op, status="rejected", error=why))

    def active_or_none(exp_id: str | None) -> Experience | None:
        e = new.get(exp_id) if exp_id else None
        return e if e is not None and e.status == "active" else None

    def add(op: ExperienceOp, text: str, provenance: Provenance) -> Experience:
        exp = Experience(
            id=f"E{new.next_id}",
            text=text,
            title=op.title,
            tags=list(op.tags),
            created_step=step,
            updated_step=step,
            provenance=provenance,
        )
        new.next_id += 1
        new.experiences.append(exp)
        results.append(OpResult(step=step, op=op, status="applied", result_id=exp.id))
        return exp

    def done(op: ExperienceOp, target: Experience) -> None:
        target.updated_step = step
        results.append(OpResult(step=step, op=op, status="applied", result_id=target.id))

    def duplicate_of(text: str, ignore: set[str] = frozenset()) -> Experience | None:  # type: ignore[assignment]
        key = norm_text(text)
        return next((e for e in new.active() if e.id not in ignore and norm_text(e.text) == key), None)

    for op in ops:
        text = op.text.strip()
        if op.op == "NONE":
            results.append(OpResult(step=step, op=op, status="noop"))
            continue
        if op.op in ("ADD", "UPDATE", "MERGE"):
            if not text:
                reject(op, f"{op.op} without text")
                continue
            if len(text) > MAX_LESSON_CHARS:
                reject(op, f"{op.op} text longer than {MAX_LESSON_CHARS} characters")
                continue
        if op.op == "ADD":
            dup = duplicate_of(text)
            if dup is not None:
                results.append(
                    OpResult(step=step, op=op, status="noop", error=f"duplicate of {dup.id}", result_id=dup.id)
                )
                continue
            add(op, text, prov.model_copy(deep=True))
        elif op.op == "UPDATE":
            target = active_or_none(op.id)
            if target is None:
                reject(op, f"unknown or retired id {op.id!r}")
                continue
            dup = duplicate_of(text, ignore={target.id})
            if dup is not None:
                reject(op, f"UPDATE {target.id} would duplicate {dup.id}")
                continue
            target.text = text
            if op.title is not None:
                target.title = op.title
            if op.tags:
                target.tags = list(op.tags)
            target.revision += 1
            target.provenance.query_ids = sorted(set(target.provenance.query_ids) | set(prov.query_ids))
            done(op, target)
        elif op.op == "DELETE":
            target = active_or_none(op.id)
            if target is None:
                reject(op, f"unknown or retired id {op.id!r}")
                continue
            target.status = "retired"
            done(op, target)
        elif op.op == "RESTORE":
            target = new.get(op.id) if op.id else None
            if target is None or target.status != "retired":
                reject(op, f"RESTORE needs a retired id, got {op.id!r}")
                continue
            dup = duplicate_of(target.text)
            if dup is not None:
                reject(op, f"RESTORE {target.id} would duplicate {dup.id}")
                continue
            target.status = "active"
            done(op, target)
        elif op.op == "MERGE":
            ids = list(dict.fromkeys(canonical_id(i) or "" for i in op.ids))
            sources = [active_or_none(i) for i in ids]
            if len(ids) < 2:
                reject(op, "MERGE needs at least two ids")
                continue
            if any(s is None for s in sources):
                bad = [i for i, s in zip(ids, sources) if s is None]
                reject(op, f"MERGE names unknown or retired ids {bad}")
                continue
            for s in sources:
                s.status = "retired"  # type: ignore[union-attr]
                s.updated_step = step  # type: ignore[union-attr]
            merged_prov = prov.model_copy(deep=True)
            merged_prov.merged_from = ids
            merged_prov.query_ids = sorted({q for s in sources for q in s.provenance.query_ids} | set(prov.query_ids))  # type: ignore[union-attr]
            # The sources' evidence goes with their text: a merge must not reset a lesson's
            # comparisons (and so its way to --prune-harmful), as UPDATE does not either.
            evidence = Stats()
            for s in sources:
                evidence.add(s.stats)  # type: ignore[union-attr]
            dup = duplicate_of(text)
            if dup is not None:
                dup.stats.add(evidence)
                dup.updated_step = step
                results.append(OpResult(step=step, op=op, status="applied", result_id=dup.id))
                continue
            add(op, text, merged_prov).stats = evidence
    return new, results


def prune_ops(
    state: LibraryState, step: int, *, unused_steps: int, min_votes: int = 3, harmful_share: float = 0.5
) -> list[ExperienceOp]:
    """DELETE ops (reason "prune: ...") for active lessons that are mostly harmful (at least
    ``min_votes`` within-group comparisons, experience_store.credit, more than ``harmful_share`` of them lost) or not cited for
    ``unused_steps`` steps (0: never prune for disuse). A RESTORE op brings one back."""
    ops = []
    for e in state.active():
        votes = e.stats.helpful + e.stats.harmful
        last = e.stats.last_cited_step if e.stats.last_cited_step is not None else e.created_step
        if votes >= min_votes and e.stats.harmful > harmful_share * votes:
            why = f"prune: lost {e.stats.harmful} of {votes} within-group comparisons"
        elif unused_steps > 0 and step - last >= unused_steps:
            why = f"prune: not cited for {step - last} steps"
        else:
            continue
        ops.append(ExperienceOp(op="DELETE", id=e.id, reason=why))
    return ops


def diff_states(a: LibraryState, b: LibraryState) -> dict[str, list[Experience]]:
    """What changed from version ``a`` to ``b`` by id: added, retired, changed (new text),
    restored, and removed (active in ``a``, absent from ``b``: ``b`` is an earlier version)."""
    before = {e.id: e for e in a.experiences}
    after = {e.id for e in b.experiences}
    out: dict[str, list[Experience]] = {"added": [], "retired": [], "changed": [], "restored": [], "removed": []}
    out["removed"] = [e for e in a.experiences if e.status == "active" and e.id not in after]
    for e in b.experiences:
        old = before.get(e.id)
        was_active = old is not None and old.status == "active"
        if e.status == "active" and old is None:
            out["added"].append(e)
        elif e.status == "active" and not was_active:
            out["restored"].append(e)
        elif e.status == "retired" and was_active:
            out["retired"].append(e)
        elif e.status == "active" and old is not None and old.text != e.text:
            out["changed"].append(e)
    return out
