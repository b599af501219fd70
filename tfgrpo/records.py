"""Records of a run directory (JSONL, append-only). Field order is the file format; each
record carries a ``version``.

Epochs count from 1, as the screen shows them (version 2 of the rollout, group and step
records). Version 1 records counted from 0; they are read as version 2 (epoch + 1), so a run
written before the change resumes and reports with one numbering throughout."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field, model_validator

EPOCH_FROM_ONE = 2  # the first record version whose epochs count from 1


def one_based_epoch(row: dict[str, Any]) -> dict[str, Any]:
    """A training-free record's row with its epoch counted from 1 (version 1 rows counted from 0)."""
    if isinstance(row.get("epoch"), int) and isinstance(row.get("version"), int) and row["version"] < EPOCH_FROM_ONE:
        row = {**row, "epoch": row["epoch"] + 1, "version": EPOCH_FROM_ONE}
    return row


class _EpochRecord(BaseModel):
    """A record that names its epoch (1-based)."""

    @model_validator(mode="before")
    @classmethod
    def _one_based(cls, data: Any) -> Any:
        return one_based_epoch(data) if isinstance(data, dict) else data


class RolloutRecord(_EpochRecord):
    version: int = EPOCH_FROM_ONE
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


class GroupRecord(_EpochRecord):
    version: int = EPOCH_FROM_ONE
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


class StepRecord(_EpochRecord):
    version: int = EPOCH_FROM_ONE
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
