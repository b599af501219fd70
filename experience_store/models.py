"""Persisted records of the experience library. Field order is the file format; every record
carries a ``version`` so readers can tell formats apart."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, Field

OpKind = Literal["ADD", "UPDATE", "DELETE", "MERGE", "RESTORE", "NONE"]
MAX_INT = 2**53  # the largest integer that every JSON reader keeps exact
Count = Annotated[int, Field(ge=0, le=MAX_INT)]  # steps, revisions, counts: never negative, never huge


class Provenance(BaseModel):
    """Where a lesson came from."""

    run: str | None = None
    epoch: Count | None = None
    step: Count | None = None
    task: str | None = None
    query_ids: list[str] = Field(default_factory=list)
    rollout_ids: list[str] = Field(default_factory=list)
    judge_model: str | None = None
    merged_from: list[str] = Field(default_factory=list)


class Stats(BaseModel):
    """Usage credit: how often a lesson was shown, cited, and on which side of the advantage."""

    retrieved: Count = 0
    cited: Count = 0
    helpful: Count = 0
    harmful: Count = 0
    last_cited_step: Count | None = None

    def add(self, other: "Stats") -> None:
        self.retrieved += other.retrieved
        self.cited += other.cited
        self.helpful += other.helpful
        self.harmful += other.harmful
        if other.last_cited_step is not None:
            self.last_cited_step = max(self.last_cited_step or 0, other.last_cited_step)


class Experience(BaseModel):
    """One lesson: a short "When <condition>, <strategy>" sentence with a stable id."""

    version: Count = 1
    id: str
    text: str
    title: str | None = None
    tags: list[str] = Field(default_factory=list)
    status: Literal["active", "retired"] = "active"
    revision: Count = 1
    created_step: Count = 0
    updated_step: Count = 0
    provenance: Provenance = Field(default_factory=Provenance)
    stats: Stats = Field(default_factory=Stats)


class ExperienceOp(BaseModel):
    """An edit to the library. UPDATE, DELETE and RESTORE (a retired lesson back) name ``id``;
    MERGE names ``ids`` and the new ``text``."""

    op: OpKind
    id: str | None = None
    ids: list[str] = Field(default_factory=list)
    text: str = ""
    title: str | None = None
    tags: list[str] = Field(default_factory=list)
    reason: str = ""


class OpResult(BaseModel):
    """What happened to one op when a step's ops were applied."""

    version: Count = 1
    step: Count
    op: ExperienceOp
    status: Literal["applied", "rejected", "noop"]
    error: str | None = None
    result_id: str | None = None
