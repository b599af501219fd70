import pytest

from tfgrpo.training_free.distill import Consolidation
from tfgrpo.training_free.judge import GroupComparison
from tfgrpo.training_free.judge_data import library_block, proposals_block
from tfgrpo.llm import LLMClient, RetryPolicy
from tfgrpo.sim import start_sim_server
from tfgrpo.training_free.prompting import Prompts
from tfgrpo.training_free.structured import ParseError, ask_structured, parse_output

GOOD = '{"reasoning": "a", "ops": [{"op": "ADD", "text": "When x, y.", "reason": "r"}]}'


@pytest.mark.parametrize(
    "text",
    [
        GOOD,
        f"Sure! Here it is:\n```json\n{GOOD}\n```\nHope that helps.",
        f"<think>the {{ braces }} here are not JSON</think>{GOOD}",
        '{"reasoning": "a", "ops": [{"op": "add", "text": "When x, y.", "reason": "r",},],}',  # trailing commas, lower case
        '{"reasoning": "a", "ops": [{"op": "ADD", "text": "When x, y.", "reason": "r"}',  # cut off
    ],
)
def test_tolerant_parser_reads_damaged_output(text):
    out = parse_output(text, GroupComparison)
    assert out.ops[0].op == "ADD" and out.ops[0].text == "When x, y."


def test_strict_reading_refuses_repairs():
    cut = '{"reasoning": "a", "ops": [{"op": "ADD", "text": "When x'
    with pytest.raises(ParseError, match="invalid JSON"):
        parse_output(cut, GroupComparison, lenient=False)
    assert parse_output(f"```json\n{GOOD}\n```", GroupComparison, lenient=False).ops[0].text == "When x, y."


@pytest.mark.parametrize(
    "text,msg",
    [
        ("", "empty"),
        ("I cannot help with that.", "expected a JSON object"),
        ('{"ops": [{"op": "RENAME"}]}', "reasoning"),
        ('{"reasoning": "cut before the ops"}', "ops"),
        ('{"reasoning": "a", "ops": [{"op": "RENAME"}]}', "ops.0.op"),
    ],
)
def test_parser_errors_name_the_problem(text, msg):
    with pytest.raises(ParseError, match=msg):
        parse_output(text, GroupComparison)


def _messages():
    prompts = Prompts()
    user = prompts.render(
        "consolidate.j2",
        library_block=library_block("[E1] When A, do a."),
        schema="{}",
        proposals_block=proposals_block('[{"op": "ADD", "id": null, "text": "When B, do b.", "reason": "r"}]'),
    )
    return [{"role": "system", "content": prompts.render("judge_system.j2")}, {"role": "user", "content": user}]


async def test_one_repair_retry_fixes_malformed_output():
    with start_sim_server(seed=0, faults=["malformed"]) as sim:
        c = LLMClient(model="openai/sim-judge", role="judge", api_base=sim.base_url, api_key="sim")
        out = await ask_structured(c, _messages(), Consolidation, "consolidation")
        assert out.ok and len(out.raw) == 2
        assert c.usage.roles["judge"].calls == 2


async def test_failure_after_the_repair_is_returned_not_raised():
    with start_sim_server(seed=0, faults=["malformed", "malformed"]) as sim:
        c = LLMClient(
            model="openai/sim-judge",
            role="judge",
            api_base=sim.base_url,
            api_key="sim",
            retry=RetryPolicy(max_retries=0),
        )
        out = await ask_structured(c, _messages(), Consolidation, "consolidation")
        assert not out.ok and "after one repair" in out.error
        assert len(out.raw) == 2 and out.raw[0]
