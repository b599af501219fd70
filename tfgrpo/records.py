"""Records of a run directory (JSONL, append-only). Field order is the file format; each
record carries a ``version``."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field


class RolloutRecord(BaseModel):
    version: int = 1
    step: int
    epoch: int
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
    version: int = 1
    step: int
    epoch: int
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
    version: int = 1
    step: int
    epoch: int
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
