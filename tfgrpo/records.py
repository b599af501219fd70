"""Records of a run directory (JSONL, append-only). Field order is the file format; each
record carries a ``version``.

The rollout, group and step records are version 2 (epochs count from 1, as the screen shows
them). A record of any other version is refused (:func:`version_problem`), never converted."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

RECORD_VERSION = 2  # the version of the rollout, group and step records this tfgrpo writes and reads


def version_problem(row: dict[str, Any]) -> str | None:
    """Why a rollout, group or step row cannot be read by this tfgrpo (its ``version`` is not
    :data:`RECORD_VERSION`), or None. A row without ``version`` (parameter mode's steps) passes."""
    v = row.get("version", RECORD_VERSION)
    if type(v) is int and v == RECORD_VERSION:
        return None
    if type(v) is int and v < RECORD_VERSION:
        return f"run written by an older tfgrpo (record version {v}); this version reads version {RECORD_VERSION} only"
    return f"record version {str(v)[:20]} is not one this tfgrpo reads (version {RECORD_VERSION} only)"


class RolloutRecord(BaseModel):
    version: int = RECORD_VERSION
    step: int
    epoch: int  # from 1
    rollout_id: str
    sample_id: str
    index: int
    text: str | None
    error: str | None = None
    finish_reason: str | None = None
    cached: bool = False
    rewards: list[float | None]
    reward: float | None
    advantage: float
    trajectory: dict[str, Any] | None = None  # agent.Trajectory of a tool-calling rollout


class GroupRecord(BaseModel):
    version: int = RECORD_VERSION
    step: int
    epoch: int  # from 1
    sample_id: str
    rewards: list[float | None]
    advantages: list[float]
    judged: bool
    skip_reason: str | None = None
    analysis: str | None = None
    proposals: list[dict[str, Any]] = Field(default_factory=list)
    summaries: list[str] = Field(default_factory=list)
    error: str | None = None


class JudgeFailure(BaseModel):
    """A judge call that failed; written to ops.jsonl beside the applied ops."""

    version: int = 1
    step: int
    stage: str
    sample_id: str | None = None
    error: str
    raw: list[str | None] = Field(default_factory=list)
    status: str = "judge_failed"


class StepRecord(BaseModel):
    version: int = RECORD_VERSION
    step: int
    epoch: int  # from 1
    sample_ids: list[str]
    mean_reward: float | None
    group_mean_rewards: list[float | None]
    groups: int
    judged: int
    proposals: int
    ops_applied: int
    ops_rejected: int
    ops_by_kind: dict[str, int]
    judge_failures: int
    rollout_failures: int
    library_size: int
    usage: dict[str, Any]
    wall_s: float
    ops_leaked: int = 0  # lessons the leak guard rejected (or flagged) this step
    identical_groups: int = 0  # groups of two or more answers whose texts were all the same
