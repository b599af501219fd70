"""Records of a run directory (JSONL, append-only). Field order is the file format; each
record carries a ``version``.

The rollout, group and step records are version 2 (epochs count from 1, as the screen shows
them). A record of any other version is refused (:func:`version_problem`), never converted.

The ``*Read`` models at the end are what ``report`` and ``runs`` read of the records other
parts of tfgrpo write as plain mappings (status.json, selection.json, an eval's summary.json,
parameter mode's steps): the keys they use are checked, so a damaged record is named (its key)
instead of breaking the page or the listing; any other key is kept as it is."""

from __future__ import annotations

import contextlib
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from experience_store.models import Count

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


# ----------------------------------------------------------------- what report and runs read

M = TypeVar("M", bound=BaseModel)


def read_as(model: type[M], data: Any, *, salvage: bool = True) -> tuple[M | None, str | None]:
    """``data`` as ``model``, and what was wrong with it (None when nothing): the first problem
    with its key and what is left out, e.g. ``steps_planned: Input should be a valid integer
    (left out: steps_planned)``. With ``salvage`` only the keys in error are left out, when the
    rest is a record without them; otherwise the whole record is (None)."""
    try:
        return model.model_validate(data), None
    except ValidationError as e:
        err, bad = e.errors()[0], sorted({str(x["loc"][0]) for x in e.errors() if x["loc"]})
    where = ".".join(str(x) for x in err["loc"])
    problem = f"{where}: {err['msg'][:120]}" if where else err["msg"][:120]
    kept = None
    if salvage and bad and isinstance(data, dict):
        with contextlib.suppress(ValidationError):
            kept = model.model_validate({k: v for k, v in data.items() if k not in bad})
    return kept, f"{problem} (left out{': ' + ', '.join(bad) if kept else ''})"


class _Read(BaseModel):
    model_config = ConfigDict(extra="allow")


class RoleSpendRead(_Read):
    """One role's entry of a step's ``usage`` (``tfgrpo.llm.usage.RoleUsage`` as written): what
    the report adds up."""

    calls: Count = 0
    prompt_tokens: Count = 0
    completion_tokens: Count = 0
    cost_usd: float | None = Field(None, ge=0)


class StepRead(StepRecord):
    """A training-free step record with its usage checked too (the report and the listing add it up)."""

    usage: dict[str, RoleSpendRead]


class ParamsStepRead(_Read):
    """A parameter-mode line of steps.jsonl (the trainer's metrics)."""

    step: int
    reward_mean: float | None = None


class StatusRead(_Read):
    """status.json (``RunDir.write_status``)."""

    mode: Literal["training_free", "params"] | None = None
    status: str | None = None
    reason: str | None = None
    steps_done: Count | None = None
    steps_planned: Count | None = None
    pid: int | None = Field(None, gt=0, lt=2**31)  # a process id (os.kill takes a C int)


Interval = tuple[float, float]


class ScoreRead(_Read):
    """Mean@k with its 95% interval."""

    mean_at_k: float
    ci95: Interval | None = None


class ArmRead(ScoreRead):
    """One arm of an evaluation."""

    pass_at_k: float | None = None
    pass_ci95: Interval | None = None


class DiffRead(_Read):
    """A paired difference of two arms."""

    mean: float
    ci95: Interval | None = None
    p_value: float | None = None
    significant: bool | None = None


class PlaceboRead(ArmRead):
    diff: DiffRead | None = None


class EvalSummaryRead(_Read):
    """An evaluation's summary.json (``tfgrpo eval``; baseline only: no library arm)."""

    baseline: ArmRead | None = None
    library: ArmRead | None = None
    diff: DiffRead | None = None
    placebo: PlaceboRead | None = None
    verdict: str = ""
    n_problems: Count | None = None
    k: Count | None = None
    n: Count | None = None
    seeds: list[int] | None = None


class CandidateRead(ScoreRead):
    epoch: Count
    step: Count
    library_size: Count | None = None


class ChosenRead(_Read):
    epoch: Count
    step: Count


class SelectionRead(_Read):
    """selection.json of a ``--select best-val`` run."""

    chosen: ChosenRead
    candidates: list[CandidateRead] = Field(default_factory=list)
    baseline: ScoreRead | None = None
    metric: str | None = None
