"""The experience library: stable ids, one version per step, ops applied as a transaction.

Layout of a library directory::

    library/
      versions/000003.json   the whole library after step 3 (atomic write; the source of truth)
      chroma/                Chroma persistent index of the active experiences (rebuilt from
                             the latest version whenever the two disagree, e.g. after a crash)

A step's ops are applied to a copy of the state; the copy becomes the new version only when
every write succeeded, so an error leaves the library exactly as it was.
"""

from __future__ import annotations

import json
import logging
import os
import re
from pathlib import Path
from typing import Any, Iterable

from pydantic import BaseModel, Field

from experience_store.embedding import embedding_from_spec
from experience_store.models import Experience, ExperienceOp, OpResult, Provenance
from experience_store.render import DEFAULT_BLOCK, render_experiences

log = logging.getLogger(__name__)
COLLECTION = "experiences"
MAX_LESSON_CHARS = 2000


class LibraryState(BaseModel):
    """One version of the library. Field order is the file format."""

    version: int = 1
    step: int = 0
    next_id: int = 1
    embedding: dict[str, Any] = Field(default_factory=lambda: {"name": "lexical", "dim": 512})
    experiences: list[Experience] = Field(default_factory=list)

    def get(self, exp_id: str) -> Experience | None:
        for e in self.experiences:
            if e.id == exp_id:
                return e
        return None

    def active(self) -> list[Experience]:
        return [e for e in self.experiences if e.status == "active"]


def _norm(text: str) -> str:
    return re.sub(r"\s+", " ", text.strip().lower())


def apply_ops(
    state: LibraryState, ops: Iterable[ExperienceOp], step: int, provenance: Provenance | None = None
) -> tuple[LibraryState, list[OpResult]]:
    """Pure function: the next state and one result per op. Unknown ids are rejected, never
    turned into ADD; an exact duplicate of an active lesson is never stored twice."""
    new = state.model_copy(deep=True)
    new.step = step
    results: list[OpResult] = []
    prov = provenance or Provenance(step=step)

    def reject(op: ExperienceOp, why: str) -> None:
        results.append(OpResult(step=step, op=op, status="rejected", error=why))

    def active_or_none(exp_id: str | None) -> Experience | None:
        e = new.get(exp_id) if exp_id else None
        return e if e is not None and e.status == "active" else None

    def add(op: ExperienceOp, text: str, provenance: Provenance) -> None:
        exp = Experience(
            id=f"E{new.next_id}", text=text, title=op.title, tags=list(op.tags),
            created_step=step, updated_step=step, provenance=provenance,
        )
        new.next_id += 1
        new.experiences.append(exp)
        results.append(OpResult(step=step, op=op, status="applied", result_id=exp.id))

    def duplicate_of(text: str, ignore: set[str] = frozenset()) -> Experience | None:  # type: ignore[assignment]
        key = _norm(text)
        return next((e for e in new.active() if e.id not in ignore and _norm(e.text) == key), None)

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
                results.append(OpResult(step=step, op=op, status="noop", error=f"duplicate of {dup.id}", result_id=dup.id))
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
            target.updated_step = step
            target.provenance.query_ids = sorted(set(target.provenance.query_ids) | set(prov.query_ids))
            results.append(OpResult(step=step, op=op, status="applied", result_id=target.id))
        elif op.op == "DELETE":
            target = active_or_none(op.id)
            if target is None:
                reject(op, f"unknown or retired id {op.id!r}")
                continue
            target.status = "retired"
            target.updated_step = step
            results.append(OpResult(step=step, op=op, status="applied", result_id=target.id))
        elif op.op == "MERGE":
            ids = list(dict.fromkeys(op.ids))
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
            dup = duplicate_of(text)
            if dup is not None:
                results.append(OpResult(step=step, op=op, status="applied", result_id=dup.id))
                continue
            add(op, text, merged_prov)
    return new, results


class Library:
    """A versioned experience library in a directory, indexed in Chroma."""

    def __init__(self, path: str | Path, *, at_step: int | None = None, embedding: dict[str, Any] | None = None):
        self.path = Path(path)
        self.versions_dir = self.path / "versions"
        self.versions_dir.mkdir(parents=True, exist_ok=True)
        self.state = self._load(at_step)
        if embedding is not None and not self.versions():
            self.state.embedding = dict(embedding)
        self._client = None
        self._collection = None

    # ---------------------------------------------------------------- versions
    def versions(self) -> list[int]:
        return sorted(int(p.stem) for p in self.versions_dir.glob("*.json") if p.stem.isdigit())

    def _version_path(self, step: int) -> Path:
        return self.versions_dir / f"{step:06d}.json"

    def _load(self, at_step: int | None) -> LibraryState:
        steps = [s for s in self.versions() if at_step is None or s <= at_step]
        if not steps:
            return LibraryState()
        return LibraryState.model_validate_json(self._version_path(steps[-1]).read_text())

    def state_at(self, step: int) -> LibraryState:
        return self._load(step)

    def discard_after(self, step: int) -> None:
        """Forget versions written by a step that never committed (a run killed mid-step)."""
        for s in self.versions():
            if s > step:
                self._version_path(s).unlink()
        self.state = self._load(step)

    # ----------------------------------------------------------------- reading
    @property
    def experiences(self) -> list[Experience]:
        return self.state.active()

    def __len__(self) -> int:
        return len(self.state.active())

    def render(self, template: str = DEFAULT_BLOCK) -> str:
        return render_experiences(self.state.active(), template)

    # ----------------------------------------------------------------- writing
    def apply(self, ops: Iterable[ExperienceOp], step: int, provenance: Provenance | None = None) -> list[OpResult]:
        """Apply a step's ops as one transaction and write version ``step``."""
        new, results = apply_ops(self.state, ops, step, provenance)
        path = self._version_path(step)
        tmp = path.with_suffix(".tmp")
        existed = path.exists()
        try:
            tmp.write_text(new.model_dump_json(indent=1))
            os.replace(tmp, path)
            self._sync_index(new)
        except BaseException:
            tmp.unlink(missing_ok=True)
            if not existed:
                path.unlink(missing_ok=True)
            self._sync_index_quietly(self.state)
            raise
        self.state = new
        return results

    # ------------------------------------------------------------------- index
    def collection(self):
        if self._collection is None:
            import chromadb

            self._client = chromadb.PersistentClient(
                path=str(self.path / "chroma"), settings=chromadb.Settings(anonymized_telemetry=False)
            )
            self._collection = self._client.get_or_create_collection(
                COLLECTION, embedding_function=None, metadata={"hnsw:space": "cosine"}
            )
        return self._collection

    def sync(self) -> None:
        """Bring the Chroma index in line with the current version (cheap when it already is)."""
        self._sync_index(self.state)

    def _sync_index(self, state: LibraryState) -> None:
        col = self.collection()
        have = col.get(include=["documents", "metadatas"])
        indexed = {i: (d, (m or {}).get("revision")) for i, d, m in zip(have["ids"], have["documents"], have["metadatas"])}
        want = {e.id: e for e in state.active()}
        stale = [i for i in indexed if i not in want]
        if stale:
            col.delete(ids=stale)
        changed = [e for e in want.values() if indexed.get(e.id) != (e.text, e.revision)]
        if changed:
            embed = embedding_from_spec(state.embedding)
            col.upsert(
                ids=[e.id for e in changed],
                documents=[e.text for e in changed],
                embeddings=embed([e.text for e in changed]),
                metadatas=[{"revision": e.revision, "created_step": e.created_step, "updated_step": e.updated_step} for e in changed],
            )

    def _sync_index_quietly(self, state: LibraryState) -> None:
        try:
            self._sync_index(state)
        except Exception as e:  # the version files stay the source of truth; next open resyncs
            log.warning("could not restore the Chroma index: %s", e)

    def export_jsonl(self) -> str:
        return "".join(json.dumps(e.model_dump(), ensure_ascii=False) + "\n" for e in self.state.experiences)
