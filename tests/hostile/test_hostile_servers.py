"""Areas 3, 4 and 11, and what held of the judge's output and of retries: every number a server
sends is sanitised (finite, non-negative, bounded); a judge reply is parsed (bounded depth and
size) before it is cached, and one that cannot be read is a failed call, never a crash nor a
replay; ops naming ids that do not exist, and oversized lessons, are rejected; consolidation is
bounded by the batch's proposals; transient failures of a server are retried."""

from __future__ import annotations

import asyncio
import json
from types import SimpleNamespace

import pytest
from hostile_rows import HUGE, Case, Relay, deep, rows
from openai_stub import StubServer, stub_client
from pydantic import BaseModel

from experience_store import ExperienceOp, Injection, Library
from tfgrpo.llm import LLMClient, ResponseCache, RetryPolicy
from tfgrpo.llm.cache import request_key
from tfgrpo.llm.client import Completion
from tfgrpo.llm.retry import retry_after
from tfgrpo.llm.usage import MAX_TOKENS_PER_REPLY, Usage
from tfgrpo.task_registry import Sample
from tfgrpo.training_free.config import JudgeConfig
from tfgrpo.training_free.distill import bound_ops
from tfgrpo.training_free.ops import ProposedOp
from tfgrpo.training_free.judge import Attempt, Judge, JudgeContext
from tfgrpo.training_free.prompting import Prompts
from tfgrpo.training_free.structured import ParseError, ask_structured, parse_output

MSGS = [{"role": "user", "content": "What is 2+2?"}]


# ------------------------------------------------------------------------ 3 server numbers


class _Err(Exception):
    def __init__(self, value):
        self.headers = {"retry-after": value}


def retry_after_is(ctx, value, expected) -> None:
    wait = retry_after(_Err(value), upper=60.0)
    assert wait == expected
    assert 0 <= RetryPolicy(max_delay=60.0).delay(0, wait) <= 60.0


async def retry_after_nan_does_not_stall(ctx) -> None:
    with StubServer() as server:
        server.fail(503, {"Retry-After": "nan"}, times=2)
        c = stub_client(server.base_url)
        out = await c.sample(MSGS, n=1)
        assert out[0].ok and c.usage.roles["policy"].retries == 2


def usage_read_in_process(ctx, usage: dict) -> None:
    """Negative, non-finite or absurd usage is read as 0 or capped, so a --max-tokens budget holds."""
    from tfgrpo.llm.reply import Reply

    client = LLMClient(model="openai/x", role="policy")
    reply = Reply(
        usage=SimpleNamespace(**usage),
        cost=None,
        choices=[SimpleNamespace(message=SimpleNamespace(content="4", tool_calls=None), finish_reason="stop")],
    )
    out = client._completions(reply, [0])
    stats = client.usage.role("policy")
    for n in (stats.prompt_tokens, stats.completion_tokens, out[0].prompt_tokens, out[0].completion_tokens):
        assert isinstance(n, int) and 0 <= n <= MAX_TOKENS_PER_REPLY


async def usage_from_a_server(ctx, usage: dict) -> None:
    with StubServer(usage=usage) as server:
        c = stub_client(server.base_url, price_per_mtok=(1.0, 1.0))
        out = await c.sample(MSGS, n=2)
        role = c.usage.roles["policy"]
        assert all(o.ok and o.prompt_tokens >= 0 and o.completion_tokens >= 0 for o in out)
        assert 0 <= role.prompt_tokens <= 10**8 and role.completion_tokens >= 0 and (role.cost_usd or 0) >= 0


# ------------------------------------------------------------------------ 4 judge replies


class Verdict(BaseModel):
    better: int


def parse_error(ctx, text: str) -> None:
    with pytest.raises(ParseError) as exc:
        parse_output(text, Verdict)
    assert ctx.expected in str(exc.value)


async def unsafe_reply_not_cached(ctx) -> None:
    with StubServer(answer=lambda m, i: deep(50_000)) as server:
        cache = ResponseCache(ctx.tmp / "c.sqlite")
        c = stub_client(server.base_url, cache=cache, usage=Usage())
        result = await ask_structured(c, MSGS, Verdict, "verdict")
        assert not result.ok and "nested" in result.error and len(cache) == 0


async def cached_unsafe_reply_not_replayed(ctx) -> None:
    """A reply cached by an older version is asked again, not replayed into the parser."""
    with StubServer(answer=lambda m, i: '{"better": 1}') as server:
        cache = ResponseCache(ctx.tmp / "c.sqlite")
        c = stub_client(server.base_url, cache=cache, usage=Usage())
        request = {"model": c.model, "messages": MSGS, "temperature": 0.0, "max_tokens": None, "seed": None,
                   "response_format": {"type": "json_schema", "json_schema": {"name": "verdict", "schema": Verdict.model_json_schema(), "strict": False}}}  # fmt: skip
        cache.put(request_key(request), 0, {"text": '{"better": ' + "9" * 5000 + "}"})
        result = await ask_structured(c, MSGS, Verdict, "verdict")
        assert (
            result.ok and result.value.better == 1 and c.usage.roles["policy"].cache_hits == 0 and server.requests == 1
        )


def op_rejected(ctx, op: ExperienceOp) -> None:
    """An op naming an id that is not an active lesson is rejected and logged; the library is unchanged."""
    lib = Library(ctx.tmp / "lib")
    lib.apply([ExperienceOp(op="ADD", text="When x, do y.")], 1)
    [result] = lib.apply([op], 2)
    assert result.status == "rejected" and ctx.expected in result.error, result
    assert [(e.id, e.text) for e in lib.experiences] == [("E1", "When x, do y.")] and lib.versions() == [1, 2]


# ------------------------------------------------------------------- held: judge output


class StubJudgeClient:
    """An LLMClient stand-in for the judge stage: takes a response schema, answers in sample()."""

    model = "openai/stub-judge"

    def takes_response_schema(self) -> bool:
        return True


def judge_once(client, cfg: JudgeConfig, library: str, ids: list[str]):
    """The judge stage on one two-attempt group, shown ``library`` (lessons ``ids``)."""
    sample = Sample(id="q1", prompt="How many posts does a 10 m fence with a post every 2 m need?", answer="6")
    stage = Judge(client, Prompts(), cfg, JudgeContext(pass_threshold=1.0))
    return asyncio.run(
        stage.judge_group(
            sample,
            [Attempt(1, "Answer: 6", 1.0), Attempt(2, "Answer: 5", 0.0)],
            Injection(text=library, ids=ids, tokens=0, mode="all"),
        )
    )


def judged(reply: str):
    """The judge stage on one two-attempt group whose judge always answers ``reply``."""

    class Client(StubJudgeClient):
        async def sample(self, messages, **kw):
            return [Completion(text=reply, index=0)]

    return judge_once(Client(), JudgeConfig(), "[E1] When counting posts, add one.", ["E1"])


def judge_reads(ctx, replies: list, proposals: list[tuple] | None, error: str | None = None, **kw) -> None:
    """judge_group whose judge answers ``replies`` in turn (a reply is a text or (text,
    finish_reason)); shown only E1 and E2. The proposals read as (op, id, text) or the error."""

    class Client(StubJudgeClient):
        answers = iter(replies)

        async def sample(self, messages, **_):
            got = next(self.answers)
            text, finish = got if isinstance(got, tuple) else (got, "stop")
            return [Completion(text=text, index=0, finish_reason=finish)]

    out = judge_once(Client(), JudgeConfig(**kw), "[E1] When counting posts, add one.\n[E2] Draw it.", ["E1", "E2"])
    if error is not None:
        assert out.comparison is None and error in (out.error or ""), out
        return
    assert [(p.op, p.id, p.text) for p in out.proposals] == proposals, out
    return out


def judge_drops_unshown(ctx) -> None:
    reply = {"reasoning": "r", "ops": [{"op": "DELETE", "id": "E7"}, {"op": "UPDATE", "id": "E9", "text": "When a, b."},
                                        {"op": "UPDATE", "id": "E2", "text": "When drawing, label it."}]}  # fmt: skip
    out = judge_reads(ctx, [json.dumps(reply)], [("UPDATE", "E2", "When drawing, label it.")])
    assert [(op.id, why) for op, why in out.dropped] == [
        ("E7", "judge: DELETE E7 names a lesson this group was not shown"),
        ("E9", "judge: UPDATE E9 names a lesson this group was not shown"),
    ]


def judge_records_failed_summaries(ctx) -> None:
    out = judge_reads(ctx, ["no json"] * 4 + [json.dumps(LESSON)], ADDED, summaries=True)
    assert sorted(i for i, _, _ in out.summary_failures) == [1, 2]
    assert all("after one repair" in error and raw == ["no json", "no json"] for _, error, raw in out.summary_failures)


LESSON = {
    "reasoning": "The better attempt counted both ends.",
    "ops": [{"op": "ADD", "text": "When a fence has posts at both ends, add one."}],
}
ADDED = [("ADD", None, "When a fence has posts at both ends, add one.")]


def judge_reply_is_a_failed_call(ctx, reply: str) -> None:
    out = judged(reply)
    assert out.comparison is None and not out.proposals and out.error and ctx.expected in out.error, out


# -------------------------------------------------------------------------- 11 consolidation

PROPOSALS = [
    ProposedOp(op="ADD", text="When a, b."),
    ProposedOp(op="UPDATE", id="E1", text="When c, d."),
    ProposedOp(op="DELETE", id="E2"),
]
INVENTED = [ExperienceOp(op="ADD", text=f"When {i}, do {i}.") for i in range(1000)]
MERGE = ExperienceOp(op="MERGE", ids=["E3", "E4"], text="When e, f.")


def consolidation_bounded(
    ctx, ops: list, candidates: int, kept_ops: list[str], dropped: int, reason: str | None = None
) -> None:
    near = [
        {
            "proposal": "When a, b.",
            "op": "ADD",
            "id": None,
            "similar_to": [{"id": "E3", "similarity": 0.95}, {"id": "E4", "similarity": 0.93}],
        }
    ]
    kept, dropped_ops = bound_ops(ops, PROPOSALS, candidates=near * candidates)
    assert [o.op for o in kept] == kept_ops and len(dropped_ops) == dropped
    assert reason is None or reason in dropped_ops[0][1]


# -------------------------------------------------------------------------- held: retries


async def sim_fault_retried(ctx, fault: str) -> None:
    from tfgrpo.sim import start_sim_server

    with start_sim_server(seed=1, timeout_delay=3.0) as sim:
        sim.add_faults([fault, fault])
        c = LLMClient(
            model="openai/sim-policy",
            api_base=sim.base_url,
            api_key="sim",
            timeout=1.0,
            retry_timeouts=True,
            first_timeout_factor=1.0,
            retry=RetryPolicy(max_retries=4, base_delay=0.01, max_delay=1.0),
        )
        out = await c.sample(MSGS, n=2, seed=1)
        assert all(o.ok for o in out) and c.usage.roles["policy"].retries == 2


async def garbage_retried(ctx, body) -> None:
    with StubServer() as server:
        server.fail(200, body=body, times=2)
        c = stub_client(server.base_url)
        out = await c.sample(MSGS, n=1)
        assert (
            out[0].ok and out[0].text == "Answer: 0" and c.usage.roles["policy"].retries == 2 and server.requests == 3
        )


async def dropped_connections_retried(ctx) -> None:
    with StubServer() as server:
        relay = Relay(server.port, drop_first=2)
        try:
            c = stub_client(f"http://127.0.0.1:{relay.port}/v1")
            out = await c.sample(MSGS, n=1)
            assert out[0].ok and relay.dropped == 2 and server.requests == 1 and c.usage.roles["policy"].retries == 2
        finally:
            relay.cut()


S, J, H, C, R = "03 server numbers", "04 judge replies", "held judge output", "11 consolidation", "held retries"
V = "review judge reading"
RETRY_AFTER = [
    ("nan", None),
    ("NaN", None),
    ("inf", None),
    ("-inf", None),
    ("1e309", None),
    ("-5", None),
    ("-1", None),
    ("abc", None),
    ("", None),
    (None, None),
    ("Wed, 21 Oct 2015 07:28:00 GMT", None),
    ("9" * 5000, None),
    ("1e308", 60.0),
    ("2.5", 2.5),
    ("0", 0.0),
]
CASES = [
    *(
        Case(
            S,
            f"Retry-After: {v if v is None or len(v) < 40 else v[:4] + '... (5000 digits)'}",
            "our own backoff" if e is None else f"waits {e} s (bounded)",
            retry_after_is,
            (v, e),
        )
        for v, e in RETRY_AFTER
    ),
    Case(
        S,
        "Retry-After: nan twice, then an answer",
        "no stall: retried twice and answered",
        retry_after_nan_does_not_stall,
    ),
    *(
        Case(S, f"usage {name}", "counts 0 or capped, never below zero", usage_read_in_process, (u,))
        for name, u in [
            ("-1e9 prompt tokens", {"prompt_tokens": -(10**9), "completion_tokens": -5}),
            ("nan and inf", {"prompt_tokens": float("nan"), "completion_tokens": float("inf")}),
            ("a string and a bool", {"prompt_tokens": "-3", "completion_tokens": True}),
            ("a 5000-digit int", {"prompt_tokens": 10**5000, "completion_tokens": None}),
        ]
    ),
    *(
        Case(S, f"usage {name} from a server", "counts 0 or capped, cost never negative", usage_from_a_server, (u,))
        for name, u in [
            ("negative", {"prompt_tokens": -1_000_000, "completion_tokens": -5, "total_tokens": -1_000_005}),
            ("1e30", {"prompt_tokens": 10**30, "completion_tokens": -1, "total_tokens": 10**30}),
        ]
    ),
    Case(J, "reply nested 100000 deep", "JSON nested", parse_error, ("[" * 100_000,)),
    Case(J, "reply with a 5000-digit int", "a number of more than", parse_error, ('{"better": ' + "9" * 5000 + "}",)),
    Case(J, "reply nested 50 deep", "JSON nested 50 deep", parse_error, ('{"a":' * 50 + "1" + "}" * 50,)),
    Case(J, "deeply nested reply from a server", "a failed call, nothing cached", unsafe_reply_not_cached),
    Case(
        J,
        "crashing reply already in the cache",
        "asked again, never replayed into the parser",
        cached_unsafe_reply_not_replayed,
    ),
    *(
        Case(J, f"op id {name}", "unknown", op_rejected, (ExperienceOp(op="DELETE", id=i),))
        for name, i in [
            ("E\u00b2", "E\u00b2"),
            ("of 5000 digits", "E" + HUGE),
            ("E with an Arabic-Indic digit", "E\u0661"),
            ("E1]x[E2", "E1]x[E2"),
        ]
    ),
    Case(
        H,
        "invented id in UPDATE",
        "unknown or retired id 'E9'",
        op_rejected,
        (ExperienceOp(op="UPDATE", id="E9", text="When Z, do z."),),
    ),
    Case(H, "invented id in DELETE", "unknown or retired id 'E7'", op_rejected, (ExperienceOp(op="DELETE", id="E7"),)),
    Case(
        H,
        "invented id in MERGE",
        "MERGE",
        op_rejected,
        (ExperienceOp(op="MERGE", ids=["E1", "E8"], text="When x or z, do y."),),
    ),
    Case(
        H,
        "UPDATE without an id",
        "unknown or retired id None",
        op_rejected,
        (ExperienceOp(op="UPDATE", id=None, text="When y, do x."),),
    ),
    Case(
        H,
        "10 MB ADD applied",
        "ADD text longer than 2000 characters",
        op_rejected,
        (ExperienceOp(op="ADD", text="When x, " + "y" * (10 << 20)),),
    ),
    Case(
        H,
        "10 MB ADD in a judge reply",
        "reply of",
        judge_reply_is_a_failed_call,
        (json.dumps({"reasoning": "r", "ops": [{"op": "ADD", "text": "x" * (10 << 20)}]}),),
    ),
    Case(
        H,
        "judge reply NaN reasoning, null ops",
        "reasoning",
        judge_reply_is_a_failed_call,
        ('{"reasoning": NaN, "ops": null}',),
    ),
    Case(H, "judge reply null", "expected a JSON object", judge_reply_is_a_failed_call, ("null",)),
    Case(
        H,
        "judge reply with a NaN lesson text",
        "ops.0.text",
        judge_reply_is_a_failed_call,
        ('{"reasoning": "r", "ops": [{"op": "ADD", "text": NaN}]}',),
    ),
    Case(H, "judge reply with null ops", "ops", judge_reply_is_a_failed_call, ('{"reasoning": "r", "ops": [null]}',)),
    Case(
        V,
        "reasoning closed by </think> only, a draft JSON in it",
        "the answer after it is read",
        judge_reads,
        (
            [
                f"Let me draft: ```json\n{json.dumps({'reasoning': 'draft', 'ops': []})}\n``` then check.\n</think>\n{json.dumps(LESSON)}"
            ],
            ADDED,
        ),
    ),
    Case(
        V,
        "reasoning closed by </think> only, braces in it",
        "the answer after it is read",
        judge_reads,
        ([f"The set {{1, 2}} of posts...</think>\n\n{json.dumps(LESSON)}"], ADDED),
    ),
    Case(
        V,
        "JSON then a note with braces",
        "the JSON is read",
        judge_reads,
        ([json.dumps(LESSON) + "\nNote: see {E1}."], ADDED),
    ),
    Case(
        V,
        "a code fence inside a lesson",
        "read whole, fence and all",
        judge_reads,
        (
            [
                json.dumps(
                    {
                        "reasoning": "r",
                        "ops": [{"op": "ADD", "text": "When code is asked for, put it in ```python ...``` blocks."}],
                    }
                )
            ],
            [("ADD", None, "When code is asked for, put it in ```python ...``` blocks.")],
        ),
    ),
    Case(
        V,
        "null text and reason on a DELETE",
        "the DELETE is read",
        judge_reads,
        (
            [json.dumps({"reasoning": "r", "ops": [{"op": "DELETE", "id": "E1", "text": None, "reason": None}]})],
            [("DELETE", "E1", "")],
        ),
    ),
    Case(
        V,
        "the same DELETE three times, then an ADD (ops per group 3)",
        "one DELETE and the ADD",
        judge_reads,
        (
            [json.dumps({"reasoning": "r", "ops": [{"op": "DELETE", "id": "E1"}] * 3 + LESSON["ops"]})],
            [("DELETE", "E1", ""), *ADDED],
        ),
    ),
    Case(V, "ops on lessons the group was not shown", "dropped and recorded, the shown one kept", judge_drops_unshown),
    Case(
        V,
        "a repair reply cut off at the token limit",
        "a failed call, not half a lesson",
        judge_reads,
        (
            [
                "not JSON",
                (
                    '{"reasoning": "r", "ops": [{"op": "ADD", "text": "When the fence has posts at both ends, count the',
                    "length",
                ),
            ],
            None,
            "cut off at the token limit",
        ),
    ),
    Case(
        V,
        "summaries that fail to parse",
        "recorded with their replies; the comparison reads the attempts",
        judge_records_failed_summaries,
    ),
    Case(
        V,
        "a 121-digit number in the reasoning",
        "the answer after it is read",
        judge_reads,
        (["<think>" + "9" * 121 + "</think>" + json.dumps(LESSON)], ADDED),
    ),
    Case(
        C,
        "1000 invented ADDs and an unproposed DELETE",
        "only the proposed ops kept",
        consolidation_bounded,
        (
            [ExperienceOp(op="DELETE", id="E2"), ExperienceOp(op="DELETE", id="E7"), *INVENTED],
            0,
            ["DELETE", "ADD"],
            1000,
            "DELETE E7 was not proposed",
        ),
    ),
    Case(
        C,
        "MERGE and an invented ADD, one candidate",
        "MERGE kept, one ADD within the candidates",
        consolidation_bounded,
        ([ExperienceOp(op="UPDATE", id="E1", text="When c, d."), MERGE, INVENTED[0]], 1, ["UPDATE", "MERGE", "ADD"], 0),
    ),
    Case(
        C,
        "MERGE and an invented ADD, no candidates",
        "the MERGE of unnamed lessons dropped, the ADD within the proposals",
        consolidation_bounded,
        (
            [ExperienceOp(op="UPDATE", id="E1", text="When c, d."), MERGE, INVENTED[0]],
            0,
            ["UPDATE", "ADD"],
            1,
            "MERGE retires E3, E4, which no proposal or candidate named",
        ),
    ),
    Case(
        C,
        "MERGE of ten lessons no group named",
        "dropped: a MERGE retires its sources",
        consolidation_bounded,
        (
            [ExperienceOp(op="MERGE", ids=[f"E{i}" for i in range(1, 11)], text="When anything, do everything.")],
            1,
            [],
            1,
            "MERGE retires E5, E6, E7, E8, E9, E10",
        ),
    ),
    Case(
        C,
        "MERGE of a proposal's id and a candidate",
        "kept",
        consolidation_bounded,
        ([ExperienceOp(op="MERGE", ids=["E1", "E3"], text="When c or e, d.")], 1, ["MERGE"], 0),
    ),
    *(
        Case(R, f"{fault} twice", "retried, every sample answered", sim_fault_retried, (fault,))
        for fault in ("429", "500", "503", "timeout")
    ),
    *(
        Case(R, f"{name} with status 200, twice", "retried, answered", garbage_retried, (body,))
        for name, body in [
            ("plain-text garbage", "garbage"),
            ("an HTML page", "<html>gateway</html>"),
            ("JSON nested 100000 deep", deep()),
            ("a completion of the wrong shape", {"choices": "x"}),
            ("JSON without choices", {"object": "no choices"}),
        ]
    ),
    Case(R, "connection dropped unanswered, twice", "retried, answered", dropped_connections_retried),
]


@pytest.mark.parametrize("case", rows(CASES))
@pytest.mark.filterwarnings("ignore:Pydantic serializer warnings")  # the wrong-shape completion
def test_hostile_server(case, ctx):
    case.run(ctx)
