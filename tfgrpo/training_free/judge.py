"""The semantic advantage: the judge compares a group's better and worse answers and proposes
edits to the library.

Stages (docs/architecture.md): per-sample summaries when the attempts would crowd the judge's
context, then one group comparison that returns its reasoning first and then at most a few
proposed ops. The judge sees what the agent saw (its instructions and tools), the task's
objective (each reward with its description), every reward's value per attempt and whether an
attempt was cut off by its token limit. Following the GEPA contract, one bad group never
raises: its failure is returned and recorded; only an unreachable endpoint raises. A comparison
that overflows the judge's context is retried once on summaries.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from typing import Any, Collection, Literal

from pydantic import AliasChoices, BaseModel, Field, field_validator, model_validator

from experience_store.credit import canonical_id
from tfgrpo.llm.client import CONTEXT_OVERFLOW, LLMClient
from tfgrpo.task_registry import Sample
from tfgrpo.training_free.config import JudgeConfig
from tfgrpo.training_free.prompting import Prompts
from tfgrpo.training_free.structured import StructuredResult, ask_structured, schema_for

DEFAULT_CONTEXT_TOKENS = 32768  # judge context assumed when neither the flag nor litellm knows it
CHARS_PER_TOKEN = 4  # rough size of a token of English text, to size prompts before sending


def upper_op(v: Any) -> Any:
    return v.strip().upper() if isinstance(v, str) else v


def check_op_fields(op: Any) -> Any:
    """An op must carry what its kind needs, so that output cut off mid-op (which the tolerant
    parser can close) is caught and repaired instead of applied half-empty."""
    if op.op in ("ADD", "UPDATE", "MERGE") and not op.text.strip():
        raise ValueError(f"{op.op} needs a non-empty text")
    if op.op in ("UPDATE", "DELETE") and not op.id:
        raise ValueError(f"{op.op} needs the id of the lesson it changes")
    if op.op == "MERGE" and len(getattr(op, "ids", [])) < 2:
        raise ValueError("MERGE needs at least two ids")
    return op


def text_or_empty(v: Any) -> Any:
    """``null`` for a field the op does not use (a DELETE's text) is how models write "nothing"."""
    return "" if v is None else v


def lesson_id(v: Any) -> Any:
    """A lesson id as the library writes it, however the judge wrote it ([E1], e1, 'E1 ', 1)."""
    return canonical_id(v) if v is not None else None


class ProposedOp(BaseModel):
    op: Literal["ADD", "UPDATE", "DELETE", "NONE"]
    id: str | None = Field(None, description="Library id for UPDATE and DELETE, e.g. E3")
    text: str = Field("", description="The lesson: 'When <condition>, <strategy>.'")
    reason: str = Field("", description="One sentence: why this edit")

    _op = field_validator("op", mode="before")(upper_op)
    _id = field_validator("id", mode="before")(lesson_id)
    _text = field_validator("text", "reason", mode="before")(text_or_empty)
    _fields = model_validator(mode="after")(check_op_fields)


class GroupComparison(BaseModel):
    reasoning: str = Field(
        validation_alias=AliasChoices("reasoning", "analysis"),
        description="Your analysis, written before any edit: what each attempt did, where the better ones "
                    "differ from the worse (strategy, checking, tool use, format, or only a slip), which "
                    "library lessons they followed or broke, and what general lesson follows, if any",
    )
    ops: list[ProposedOp] = Field(description="The edits, most important first; [NONE] when nothing general was learned")

    @property
    def analysis(self) -> str:
        return self.reasoning


class SampleSummary(BaseModel):
    summary: str


@dataclass
class Attempt:
    index: int
    text: str
    reward: float | None
    rewards: dict[str, float | None] = field(default_factory=dict)  # each reward's value, by name
    truncated: bool = False  # cut off by its token limit (finish_reason "length")


@dataclass
class JudgeContext:
    """What the agent was told and how it was scored: shown to the judge with every group."""

    instructions: str = ""  # the agent's system prompt without the lessons
    tools: list[str] = field(default_factory=list)  # "name: description"
    objective: list[str] = field(default_factory=list)  # "reward (weight w): description"
    pass_threshold: float = 1.0


@dataclass
class GroupJudgement:
    """The judge's result for one group; ``error`` set when the judge failed on it."""

    sample_id: str
    comparison: GroupComparison | None = None
    summaries: list[str] = field(default_factory=list)
    error: str | None = None
    raw: list[str | None] = field(default_factory=list)
    dropped: list[tuple[ProposedOp, str]] = field(default_factory=list)  # ops not applicable, with why
    summary_failures: list[tuple[int, str, list[str | None]]] = field(default_factory=list)  # (attempt, error, raw)

    @property
    def proposals(self) -> list[ProposedOp]:
        return [op for op in (self.comparison.ops if self.comparison else []) if op.op != "NONE"]


def keep_ops(ops: list[ProposedOp], limit: int) -> list[ProposedOp]:
    """At most ``limit`` ops, the judge's first distinct non-NONE ones ([NONE, ADD, ADD, ADD]
    keeps three ADDs; a repeated op does not use up the limit); a lone NONE stays so the record
    shows the judge found nothing."""
    live, seen = [], set()
    for op in ops:
        key = (op.op, op.id, " ".join(op.text.lower().split()))
        if op.op != "NONE" and key not in seen:
            seen.add(key)
            live.append(op)
    return live[:limit] if live else ops[:1]


def unshown(ops: list[ProposedOp], shown_ids: Collection[str]) -> tuple[list[ProposedOp], list[tuple[ProposedOp, str]]]:
    """The ops whose id (UPDATE, DELETE) is one of the lessons this group was shown, and the
    others with why: a judge only knows what it saw, and an id it invents may name a lesson that
    exists elsewhere in the library."""
    kept, dropped = [], []
    for op in ops:
        if op.id is not None and op.op in ("UPDATE", "DELETE") and op.id not in shown_ids:
            dropped.append((op, f"judge: {op.op} {op.id} names a lesson this group was not shown"))
        else:
            kept.append(op)
    return kept, dropped


def judge_messages(prompts: Prompts, user: str) -> list[dict[str, str]]:
    return [{"role": "system", "content": prompts.render("judge_system.j2")}, {"role": "user", "content": user}]


def takes_response_schema(model: str) -> bool:
    """Whether the backend honours a ``response_format`` JSON schema (litellm's model info; the
    simulated model does); unknown models are assumed not to."""
    from tfgrpo.llm.endpoints import is_sim

    if is_sim(model):
        return True
    try:
        import litellm

        return bool(litellm.supports_response_schema(model=model))
    except Exception:
        return False


def schema_text(client: LLMClient, cfg: JudgeConfig, model: type[BaseModel]) -> str:
    """The schema to paste into a prompt: only where the backend does not take it as
    ``response_format`` (or when told to), else "" and the template leaves it out."""
    paste = cfg.schema_in_prompt if cfg.schema_in_prompt is not None else not takes_response_schema(client.model)
    return json.dumps(schema_for(model)) if paste else ""


def context_tokens(client: LLMClient, cfg: JudgeConfig) -> int:
    """The judge's context window: the flag, else litellm's model info, else a default."""
    if cfg.context_tokens:
        return cfg.context_tokens
    try:
        import litellm

        info = litellm.get_model_info(client.model)
        return int(info.get("max_input_tokens") or info.get("max_tokens") or DEFAULT_CONTEXT_TOKENS)
    except Exception:
        return DEFAULT_CONTEXT_TOKENS


def needs_summaries(client: LLMClient, cfg: JudgeConfig, attempts: list[Attempt]) -> bool:
    """On when set; unset, on when the attempts would fill more than ``summary_share`` of the
    judge's context."""
    if cfg.summaries is not None:
        return cfg.summaries
    size = sum(len(a.text) for a in attempts) / CHARS_PER_TOKEN
    return size > cfg.summary_share * context_tokens(client, cfg)


def summary_words(text: str) -> int:
    """Summary length sized to the attempt: a fifth of its words, between 60 and 400."""
    return max(60, min(400, len(text.split()) // 5))


async def summarise(client: LLMClient, prompts: Prompts, cfg: JudgeConfig, sample: Sample, attempts: list[Attempt],
                    library: str, ctx: JudgeContext, use_cache: bool) -> list[StructuredResult[SampleSummary]]:
    schema = schema_text(client, cfg, SampleSummary)
    calls = [
        ask_structured(
            client,
            judge_messages(prompts, prompts.render(
                "summary.j2", problem=sample.user_text(), answer=sample.answer, attempt=a.text, reward=a.reward,
                correct=(a.reward or 0) >= ctx.pass_threshold, ground_truth=cfg.ground_truth, schema=schema,
                library=library, words=summary_words(a.text), truncated=a.truncated)),
            SampleSummary, "sample_summary", temperature=cfg.temperature, max_tokens=cfg.max_tokens, use_cache=use_cache,
        )
        for a in attempts
    ]
    return list(await asyncio.gather(*calls))


async def judge_group(
    client: LLMClient,
    prompts: Prompts,
    cfg: JudgeConfig,
    sample: Sample,
    attempts: list[Attempt],
    library: str,
    *,
    pass_threshold: float,
    use_cache: bool = True,
    context: JudgeContext | None = None,
    shown_ids: Collection[str] | None = None,
) -> GroupJudgement:
    """``shown_ids``: the lessons in this group's prompt; an UPDATE or DELETE of another id is
    dropped (recorded in ``dropped``). None: not checked."""
    ctx = context or JudgeContext(pass_threshold=pass_threshold)
    ctx.pass_threshold = pass_threshold
    result = GroupJudgement(sample_id=sample.id)
    summarised = False
    if needs_summaries(client, cfg, attempts):
        attempts, result.summaries = await _summarised(client, prompts, cfg, sample, attempts, library, ctx, use_cache, result)
        summarised = True
    out = await _compare(client, prompts, cfg, sample, attempts, library, ctx, use_cache)
    if not out.ok and not summarised and CONTEXT_OVERFLOW in (out.error or ""):
        # The attempts did not fit the judge's context: summarise them and try once more.
        attempts, result.summaries = await _summarised(client, prompts, cfg, sample, attempts, library, ctx, use_cache, result)
        out = await _compare(client, prompts, cfg, sample, attempts, library, ctx, use_cache)
    result.raw = out.raw
    if not out.ok:
        result.error = out.error
        return result
    comparison = out.value
    assert comparison is not None
    ops = comparison.ops
    if shown_ids is not None:
        ops, result.dropped = unshown(ops, shown_ids)
    comparison.ops = keep_ops(ops, cfg.max_ops_per_group)
    result.comparison = comparison
    return result


async def _summarised(client: LLMClient, prompts: Prompts, cfg: JudgeConfig, sample: Sample, attempts: list[Attempt],
                      library: str, ctx: JudgeContext, use_cache: bool, result: GroupJudgement) -> tuple[list[Attempt], list[str]]:
    replies = await summarise(client, prompts, cfg, sample, attempts, library, ctx, use_cache)
    result.summary_failures += [(a.index, r.error or "", r.raw) for a, r in zip(attempts, replies) if not r.ok]
    outs = [r.value.summary if r.value is not None else None for r in replies]
    # A failed summary falls back to the attempt itself: the comparison still sees everything.
    shown = [Attempt(a.index, o if o is not None else a.text, a.reward, a.rewards, a.truncated) for a, o in zip(attempts, outs)]
    return shown, [o or "" for o in outs]


async def _compare(client: LLMClient, prompts: Prompts, cfg: JudgeConfig, sample: Sample, attempts: list[Attempt],
                   library: str, ctx: JudgeContext, use_cache: bool):
    user = prompts.render(
        "compare.j2", problem=sample.user_text(), answer=sample.answer, attempts=attempts, library=library,
        ground_truth=cfg.ground_truth, max_ops=cfg.max_ops_per_group, schema=schema_text(client, cfg, GroupComparison),
        instructions=ctx.instructions, tools=ctx.tools, objective=ctx.objective, pass_threshold=ctx.pass_threshold,
    )
    return await ask_structured(client, judge_messages(prompts, user), GroupComparison, "group_comparison",
                                temperature=cfg.temperature, max_tokens=cfg.max_tokens, use_cache=use_cache)
