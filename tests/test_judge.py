"""The judge call (issue 11, defects 2-8): reasoning before ops, what the judge is shown, op
limits, tolerant ids, summaries by context share and context overflow, citations from
reasoning, schema in the prompt only without response_format, truncation, the lesson rule."""

from __future__ import annotations

import asyncio
import json
import logging

import litellm
import pytest

from experience_store import ExperienceOp, Injection, Library, cited_ids, usage_credit
from tfgrpo.llm.client import CONTEXT_OVERFLOW, Completion
from tfgrpo.llm.retry import failure_text
from tfgrpo.task_registry import Sample, load_task
from tfgrpo.training_free.config import JudgeConfig
from tfgrpo.llm.client import LLMClient
from tfgrpo.llm.providers import Capabilities
from tfgrpo.training_free.judge import Attempt, GroupComparison, Judge, JudgeContext, keep_ops, summary_words
from tfgrpo.training_free.ops import ConsolidatedOp, ProposedOp
from tfgrpo.training_free.prompting import Prompts
from tfgrpo.training_free.rollout import Group, cited_text, group_attempts, task_context

PROMPTS = Prompts()
SAMPLE = Sample(id="q1", prompt="How many posts does a 10 m fence with a post every 2 m need?", answer="6")
REPLY = json.dumps({"reasoning": "Attempt 1 counted the end post.", "ops": [{"op": "NONE", "reason": "slip"}]})


class FakeJudge:
    """An LLMClient stand-in: records the messages; answers every call with ``reply(messages)``."""

    def __init__(self, model="openai/local", reply=lambda messages: Completion(text=REPLY, index=0), schema=True):
        self.model, self.reply, self.seen, self.schema = model, reply, [], schema

    def takes_response_schema(self):
        return self.schema

    async def sample(self, messages, **kw):
        self.seen.append(messages)
        return [self.reply(messages)]


def shown(library: str) -> Injection:
    return Injection(text=library, ids=cited_ids(library), tokens=0, mode="all")


def judge(client, attempts, cfg=JudgeConfig(), context=None, library="[E1] When counting posts, add one."):
    stage = Judge(client, PROMPTS, cfg, context or JudgeContext(pass_threshold=1.0))
    return asyncio.run(stage.judge_group(SAMPLE, attempts, shown(library)))


def test_reasoning_comes_before_the_ops_in_schema_and_prompt():  # defect 2
    assert list(GroupComparison.model_json_schema()["properties"]) == ["reasoning", "ops"]
    client = FakeJudge()
    judge(client, [Attempt(1, "Answer: 6", 1.0), Attempt(2, "Answer: 5", 0.0)])
    system, user = client.seen[0][0]["content"], client.seen[0][1]["content"]
    assert "first think it through in full" in user and "reasoning field comes first" in system
    assert "two to four sentences" not in user and "nothing else" not in system


def test_judge_sees_instructions_tools_objective_and_each_reward():  # defect 4
    task = load_task("demo")
    ctx = task_context(task, PROMPTS)
    assert (
        ctx.instructions
        and task.instructions.strip()[:40] in ctx.instructions
        and "<experiences>" not in ctx.instructions
    )
    assert ctx.objective and task.rewards[0].name in ctx.objective[0]
    context = JudgeContext(
        instructions="Solve the problem; end with 'Answer: N'.",
        tools=["python: run code"],
        objective=["correct (weight 1): the answer matches", "format (weight 0.5): ends with Answer:"],
    )
    client = FakeJudge()
    judge(
        client,
        [
            Attempt(1, "Answer: 6", 1.0, {"correct": 1.0, "format": 1.0}),
            Attempt(2, "six", 0.33, {"correct": 0.0, "format": 1.0}),
        ],
        context=context,
    )
    user = client.seen[0][1]["content"]
    for shown in (
        "<agent_instructions>",
        "end with 'Answer: N'",
        "- python: run code",
        "<objective>",
        "format (weight 0.5)",
        'correct="0.0" format="1.0"',
    ):
        assert shown in user, shown


def test_op_limit_keeps_the_first_non_none_ops():  # defect 5
    ops = [ProposedOp(op="NONE"), *(ProposedOp(op="ADD", text=f"When {c}, do {c}.") for c in "abc")]
    assert [o.text for o in keep_ops(ops, 3)] == ["When a, do a.", "When b, do b.", "When c, do c."]
    assert [o.op for o in keep_ops(ops, 1)] == ["ADD"]
    assert [o.op for o in keep_ops([ProposedOp(op="NONE"), ProposedOp(op="NONE")], 3)] == ["NONE"]
    assert JudgeConfig().max_ops_per_group == 3
    reply = json.dumps(
        {"reasoning": "r", "ops": [{"op": "NONE"}, *({"op": "ADD", "text": f"When {c}, do {c}."} for c in "abc")]}
    )
    out = judge(
        FakeJudge(reply=lambda m: Completion(text=reply, index=0)),
        [Attempt(1, "a", 1.0), Attempt(2, "b", 0.0)],
        cfg=JudgeConfig(max_ops_per_group=1),
    )
    assert [o.text for o in out.proposals] == ["When a, do a."]


@pytest.mark.parametrize("written", ["E1", "[E1]", "e1", "E1 ", " [e1] ", "E 1", 1])
def test_tolerant_ids_every_form(tmp_path, written):  # defect 6
    assert ProposedOp(op="UPDATE", id=written, text="When x, y.").id == "E1"
    assert ConsolidatedOp(op="MERGE", ids=[written, "[E2]"], text="When x, y.").ids == ["E1", "E2"]
    lib = Library(tmp_path / "lib")
    lib.apply([ExperienceOp(op="ADD", text="When a, b."), ExperienceOp(op="ADD", text="When c, d.")], step=1)
    assert lib.state.get(written) is not None and lib.state.get(written).id == "E1"


def test_citations_any_case_and_spacing_and_from_reasoning():  # defects 6 and 8
    assert cited_ids("by [e2] and [ E3 ] and [E 4]") == ["E2", "E3", "E4"]
    c = Completion(text="Answer: 6", index=0, reasoning="Lesson [E1] says to add the end post.")
    assert cited_text(c) and "[E1]" in cited_text(c)
    credit = usage_credit([[(["E1"], cited_text(c), 1.0), (["E1"], "Answer: 5", -1.0)]], step=1)
    assert credit["E1"].cited == 1 and credit["E1"].helpful == 1


def test_summaries_follow_the_share_of_the_judge_context():  # defect 3
    short, long = [Attempt(1, "x " * 100, 1.0)], [Attempt(i, "word " * 4000, 0.0) for i in range(5)]
    client = FakeJudge(model="openai/unknown-model")

    def needs(cfg, attempts):
        return Judge(client, PROMPTS, cfg, JudgeContext()).needs_summaries(attempts)

    assert not needs(JudgeConfig(context_tokens=8000), short)
    assert needs(JudgeConfig(context_tokens=8000), long)  # ~25k tokens > half of 8k
    assert not needs(JudgeConfig(context_tokens=8000, summaries=False), long)
    assert needs(JudgeConfig(summaries=True), short)
    assert summary_words("w " * 100) == 60 and summary_words("w " * 5000) == 400 and summary_words("w " * 1000) == 200


def test_summariser_sees_the_lessons_and_the_comparison_gets_summaries():  # defect 3
    def reply(messages):
        user = messages[-1]["content"]
        if "Summarise one attempt" in user:
            return Completion(text=json.dumps({"summary": "It added the end post."}), index=0)
        return Completion(text=REPLY, index=0)

    client = FakeJudge(reply=reply)
    out = judge(
        client, [Attempt(i, "word " * 4000, float(i % 2)) for i in range(4)], cfg=JudgeConfig(context_tokens=8000)
    )
    summaries = [m for m in client.seen if "Summarise one attempt" in m[-1]["content"]]
    assert len(summaries) == 4 and all("[E1] When counting posts" in m[-1]["content"] for m in summaries)
    assert out.summaries == ["It added the end post."] * 4 and out.comparison is not None
    assert "word word" not in client.seen[-1][-1]["content"]


def test_context_overflow_is_classed_and_retried_on_summaries():  # defect 3
    err = litellm.ContextWindowExceededError(
        message="This model's maximum context length is 32768 tokens", model="m", llm_provider="openai"
    )
    assert failure_text(err).startswith(CONTEXT_OVERFLOW)
    assert not failure_text(ValueError("bad request")).startswith(CONTEXT_OVERFLOW)

    def reply(messages):
        user = messages[-1]["content"]
        if "Summarise one attempt" in user:
            return Completion(text=json.dumps({"summary": "short"}), index=0)
        if "word word" in user:
            return Completion(text=None, index=0, error=failure_text(err))
        return Completion(text=REPLY, index=0)

    client = FakeJudge(reply=reply)
    out = judge(
        client, [Attempt(i, "word " * 50, float(i % 2)) for i in range(2)], cfg=JudgeConfig(context_tokens=10**6)
    )
    assert out.error is None and out.comparison is not None and out.summaries == ["short", "short"]


def test_schema_pasted_only_without_response_format():  # defect 8
    def schema_text(client, cfg):
        return Judge(client, PROMPTS, cfg, JudgeContext()).schema_text(GroupComparison)

    assert schema_text(FakeJudge(schema=True), JudgeConfig()) == ""
    unknown = LLMClient(model="openai/some-local-model", api_base="http://127.0.0.1:9/v1")
    assert not unknown.takes_response_schema()  # litellm does not know it
    assert LLMClient(
        model="openai/some-local-model", capabilities=Capabilities(response_schema=True)
    ).takes_response_schema()
    pasted = schema_text(FakeJudge(schema=False), JudgeConfig())
    assert json.loads(pasted)["properties"]["reasoning"]
    assert schema_text(FakeJudge(schema=True), JudgeConfig(schema_in_prompt=True))
    client = FakeJudge()
    judge(client, [Attempt(1, "a", 1.0), Attempt(2, "b", 0.0)])
    assert "$defs" not in client.seen[0][1]["content"] and "matching this schema" not in client.seen[0][1]["content"]


def test_truncation_is_shown_to_the_judge():  # defect 8
    g = Group(
        sample=SAMPLE,
        completions=[
            Completion(text="Answer: 6", index=0, finish_reason="stop"),
            Completion(text="Let me count: 2, 4, 6, 8", index=1, finish_reason="length"),
        ],
        rewards=[[1.0], [0.0]],
        combined=[1.0, 0.0],
    )
    attempts = group_attempts(g, ["correct"])
    assert [a.truncated for a in attempts] == [False, True] and attempts[1].rewards == {"correct": 0.0}
    client = FakeJudge()
    judge(client, attempts)
    user = client.seen[0][1]["content"]
    assert user.count('truncated="true"') == 1 and "cut off by its token limit" in user


def test_lesson_rule_allows_general_formulas():  # defect 8
    system = PROMPTS.render("judge_system.j2")
    consolidate = PROMPTS.render("consolidate.j2", library_block="", proposals_block="", candidates="", schema="")
    assert "names no numbers" not in system and "n + 1" in system
    assert "(numbers, names, expressions)" not in consolidate and "Drop NONE" not in consolidate


def test_group_size_one_judges_every_group_with_a_note(tmp_path, caplog):  # defect 7
    from tfgrpo.llm.endpoints import open_models
    from tfgrpo.rundir import RunDir
    from tfgrpo.training_free.config import RunConfig, SamplingConfig
    from tfgrpo.training_free.loop import train_loop

    cfg = RunConfig(
        task="demo", epochs=1, limit=16, sampling=SamplingConfig(group_size=1), cache=False, policy={"model": "sim"}
    )
    with caplog.at_level(logging.WARNING), open_models(cfg.policy, cfg.judge) as models:
        result = asyncio.run(train_loop(cfg, load_task("demo"), models, RunDir(tmp_path / "run"), prompts=PROMPTS))
    assert all(s.judged == s.groups for s in result.steps) and sum(s.judged for s in result.steps) == 16
    assert any("group size 1" in r.getMessage() for r in caplog.records)
