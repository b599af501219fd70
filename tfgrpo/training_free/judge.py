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
from typing import Any, Collection

from pydantic import BaseModel, Field

from experience_store import Injection
from tfgrpo.llm.client import CONTEXT_OVERFLOW, LLMClient
from tfgrpo.task_registry import Sample
from tfgrpo.training_free.config import JudgeConfig
from tfgrpo.training_free.judge_data import group_block, library_block
from tfgrpo.training_free.ops import STRICT_SCHEMA, ProposedOp
from tfgrpo.training_free.prompting import Prompts
from tfgrpo.training_free.structured import StructuredResult, ask_structured, schema_for

DEFAULT_CONTEXT_TOKENS = 32768  # judge context assumed when neither the flag nor litellm knows it
CHARS_PER_TOKEN = 4  # rough size of a token of English text, to size prompts before sending


class GroupComparison(BaseModel):
    model_config = STRICT_SCHEMA

    reasoning: str = Field(
        description="Your analysis, written before any edit: what each attempt did, where the better ones "
        "differ from the worse (strategy, checking, tool use, format, or only a slip), which "
        "library lessons they followed or broke, and what general lesson follows, if any",
    )
    ops: list[ProposedOp] = Field(
        description="The edits, most important first; [NONE] when nothing general was learned"
    )


class SampleSummary(BaseModel):
    model_config = STRICT_SCHEMA

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


def summary_words(text: str) -> int:
    """Summary length sized to the attempt: a fifth of its words, between 60 and 400."""
    return max(60, min(400, len(text.split()) // 5))


class Judge:
    """The judge stage, built once per run with its client, prompts, settings and what it is told
    about the task: ``judge_group`` turns one group's attempts into reasoning and proposed ops."""

    def __init__(self, client: LLMClient, prompts: Prompts, cfg: JudgeConfig, context: JudgeContext) -> None:
        self.client, self.prompts, self.cfg, self.context = client, prompts, cfg, context

    def schema_text(self, model: type[BaseModel]) -> str:
        """The schema to paste into a prompt: only where the backend does not take it as
        ``response_format`` (or when told to), else "" and the template leaves it out."""
        paste = self.cfg.schema_in_prompt
        if paste is None:
            paste = not self.client.takes_response_schema()
        return json.dumps(schema_for(model)) if paste else ""

    def context_tokens(self) -> int:
        """The judge's context window: the flag, else litellm's model info, else a default."""
        if self.cfg.context_tokens:
            return self.cfg.context_tokens
        try:
            import litellm

            info = litellm.get_model_info(self.client.model)
            return int(info.get("max_input_tokens") or info.get("max_tokens") or DEFAULT_CONTEXT_TOKENS)
        except Exception:
            return DEFAULT_CONTEXT_TOKENS

    def needs_summaries(self, attempts: list[Attempt]) -> bool:
        """On when set; unset, on when the attempts would fill more than ``summary_share`` of the
        judge's context."""
        if self.cfg.summaries is not None:
            return self.cfg.summaries
        size = sum(len(a.text) for a in attempts) / CHARS_PER_TOKEN
        return size > self.cfg.summary_share * self.context_tokens()

    async def ask(self, user: str, model: type[BaseModel], name: str) -> StructuredResult[Any]:
        """One structured judge call with the judge's system prompt and settings."""
        return await ask_structured(
            self.client,
            judge_messages(self.prompts, user),
            model,
            name,
            temperature=self.cfg.temperature,
            max_tokens=self.cfg.max_tokens,
        )

    async def judge_group(self, sample: Sample, attempts: list[Attempt], shown: Injection) -> GroupJudgement:
        """``shown``: the lessons in this group's prompt; an UPDATE or DELETE of another id is
        dropped (recorded in ``dropped``)."""
        result = GroupJudgement(sample_id=sample.id)
        summarised = False
        if self.needs_summaries(attempts):
            attempts = await self._summarised(sample, attempts, shown.text, result)
            summarised = True
        out = await self._compare(sample, attempts, shown.text)
        if not out.ok and not summarised and CONTEXT_OVERFLOW in (out.error or ""):
            # The attempts did not fit the judge's context: summarise them and try once more.
            attempts = await self._summarised(sample, attempts, shown.text, result)
            out = await self._compare(sample, attempts, shown.text)
        result.raw = out.raw
        if not out.ok:
            result.error = out.error
            return result
        comparison = out.value
        assert comparison is not None
        ops, result.dropped = unshown(comparison.ops, shown.ids)
        comparison.ops = keep_ops(ops, self.cfg.max_ops_per_group)
        result.comparison = comparison
        return result

    async def _summarised(
        self, sample: Sample, attempts: list[Attempt], library: str, result: GroupJudgement
    ) -> list[Attempt]:
        schema, ctx = self.schema_text(SampleSummary), self.context
        replies = await asyncio.gather(
            *(
                self.ask(
                    self.prompts.render(
                        "summary.j2",
                        problem=sample.user_text(),
                        answer=sample.answer,
                        attempt=a.text,
                        reward=a.reward,
                        correct=(a.reward or 0) >= ctx.pass_threshold,
                        ground_truth=self.cfg.ground_truth,
                        schema=schema,
                        library=library,
                        words=summary_words(a.text),
                        truncated=a.truncated,
                    ),
                    SampleSummary,
                    "sample_summary",
                )
                for a in attempts
            )
        )
        result.summary_failures += [(a.index, r.error or "", r.raw) for a, r in zip(attempts, replies) if not r.ok]
        outs = [r.value.summary if r.value is not None else None for r in replies]
        result.summaries = [o or "" for o in outs]
        # A failed summary falls back to the attempt itself: the comparison still sees everything.
        return [
            Attempt(a.index, o if o is not None else a.text, a.reward, a.rewards, a.truncated)
            for a, o in zip(attempts, outs)
        ]

    async def _compare(
        self, sample: Sample, attempts: list[Attempt], library: str
    ) -> StructuredResult[GroupComparison]:
        ctx, cfg = self.context, self.cfg
        user = self.prompts.render(
            "compare.j2",
            problem=sample.user_text(),
            answer=sample.answer,
            attempts=attempts,
            library=library,
            group=group_block(sample.user_text(), sample.answer, attempts, ground_truth=cfg.ground_truth),
            library_block=library_block(library),
            ground_truth=cfg.ground_truth,
            max_ops=cfg.max_ops_per_group,
            schema=self.schema_text(GroupComparison),
            instructions=ctx.instructions,
            tools=ctx.tools,
            objective=ctx.objective,
            pass_threshold=ctx.pass_threshold,
        )
        return await self.ask(user, GroupComparison, "group_comparison")
