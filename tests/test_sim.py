"""The simulated model, exercised over real HTTP through the openai client."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from typing import Literal, Optional

import httpx
import openai
import pytest
from pydantic import BaseModel

from tfgrpo.errors import UserError
from tfgrpo.sim import parse_faults, start_sim_server
from tfgrpo.sim.skills import SKILLS, SKILLS_BY_NAME, VAGUE_LESSON, demo_rows, skill_in_text
from tfgrpo.task_registry import load_task

jsonschema = pytest.importorskip("jsonschema")

ROWS = demo_rows()
Q = ROWS[0]["question"]


@pytest.fixture
def sim():
    with start_sim_server(seed=0, timeout_delay=1.0) as server:
        yield server


def client(server, **kw) -> openai.AsyncOpenAI:
    # no keep-alive: a client left to the garbage collector holds no socket of a closed loop
    http = openai.DefaultAsyncHttpxClient(limits=httpx.Limits(max_keepalive_connections=0))
    return openai.AsyncOpenAI(base_url=server.base_url, api_key="sim", http_client=http, **kw)


def as_client(target) -> openai.AsyncOpenAI:
    return target if isinstance(target, openai.AsyncOpenAI) else client(target)


async def ask(target, messages, n=1, **kw) -> list[str]:
    """Answers from a server (a fresh client) or through a given client."""
    r = await as_client(target).chat.completions.create(model="sim-policy", messages=messages, n=n, **kw)
    return [c.message.content for c in r.choices]


def user(text):
    return [{"role": "user", "content": text}]


# --------------------------------------------------------------------------------- basics


def test_health_and_models(sim):
    assert sim.base_url == f"http://127.0.0.1:{sim.port}/v1"
    assert httpx.get(f"http://127.0.0.1:{sim.port}/health").status_code == 200
    models = openai.OpenAI(base_url=sim.base_url, api_key="sim").models.list()
    assert {m.id for m in models.data} == {"sim-policy", "sim-judge"}


async def test_completion_shape_n_and_usage(sim):
    r = await client(sim).chat.completions.create(model="sim-policy", messages=user(Q), n=5)
    assert len(r.choices) == 5 and [c.index for c in r.choices] == list(range(5))
    assert r.id and r.created and r.model == "sim-policy"
    for c in r.choices:
        assert c.message.content.splitlines()[-1].startswith("Answer: ")
        assert 1 <= len(c.message.content.splitlines()[0].split(". ")) <= 3
    assert r.usage.prompt_tokens == len(Q.split())
    assert r.usage.completion_tokens == sum(len(c.message.content.split()) for c in r.choices)
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens
    assert sim.stats.requests == {"policy": 1, "judge": 0} and sim.stats.completions == 5


async def test_deterministic_for_a_seed(sim):
    first = await ask(sim, user(Q), n=8)
    assert await ask(sim, user(Q), n=8) == first
    assert await ask(sim, user(Q), n=8, seed=7) != first  # request seed changes the answers
    with start_sim_server(seed=1) as other:
        assert await ask(other, user(Q), n=8) != first
    with start_sim_server(seed=0) as same:
        assert await ask(same, user(Q), n=8) == first


async def test_answers_do_not_depend_on_call_order(sim):
    questions = [r["question"] for r in ROWS[:12]]
    sequential = [await ask(sim, user(q), n=3) for q in reversed(questions)][::-1]
    concurrent = await asyncio.gather(*(ask(sim, user(q), n=3) for q in questions))
    assert list(concurrent) == sequential


async def test_unknown_question_still_answers(sim):
    (text,) = await ask(sim, user("What is the capital of France?"))
    assert text.splitlines()[-1].startswith("Answer: ")


async def test_stream_matches_non_stream(sim):
    expected = await ask(sim, user(Q), n=2)
    stream = await client(sim).chat.completions.create(
        model="sim-policy", messages=user(Q), n=2, stream=True, stream_options={"include_usage": True}
    )
    parts, usage = ["", ""], None
    async for chunk in stream:
        assert chunk.object == "chat.completion.chunk"
        for c in chunk.choices:
            parts[c.index] += c.delta.content or ""
        usage = chunk.usage or usage
    assert parts == expected
    assert usage.completion_tokens == sum(len(p.split()) for p in parts)
    with httpx.stream("POST", f"{sim.base_url}/chat/completions", json={"messages": user(Q), "stream": True}) as r:
        lines = [line for line in r.iter_lines() if line]
    assert r.headers["content-type"].startswith("text/event-stream")
    assert lines[-1] == "data: [DONE]" and all(line.startswith("data: ") for line in lines)


# ---------------------------------------------------------------------------------- judge


class Op(BaseModel):
    op: Literal["ADD", "UPDATE", "DELETE", "NONE"]
    id: Optional[str]
    text: str
    reason: str


class GroupComparison(BaseModel):
    analysis: str
    ops: list[Op]


class ConsolidatedOp(BaseModel):
    op: Literal["ADD", "UPDATE", "DELETE", "MERGE", "NONE"]
    id: Optional[str]
    ids: list[str]
    text: str
    reason: str


class Consolidation(BaseModel):
    ops: list[ConsolidatedOp]


class SampleSummary(BaseModel):
    summary: str


def strict(schema: dict) -> dict:
    """additionalProperties: false everywhere, as OpenAI's strict structured output wants."""
    if isinstance(schema, dict):
        if schema.get("type") == "object":
            schema["additionalProperties"] = False
        for v in schema.values():
            strict(v)
    elif isinstance(schema, list):
        for v in schema:
            strict(v)
    return schema


async def judge(target, name: str, model: type[BaseModel] | dict, text: str, seed=None, system="You are a judge."):
    schema = strict(model.model_json_schema()) if isinstance(model, type) else model
    r = await as_client(target).chat.completions.create(
        model="sim-judge",
        messages=[{"role": "system", "content": system}, *user(text)],
        response_format={"type": "json_schema", "json_schema": {"name": name, "schema": schema, "strict": True}},
        seed=seed,
    )
    data = json.loads(r.choices[0].message.content)
    jsonschema.validate(data, schema)
    return data


async def test_consolidation(sim):
    pct, avg, clk = SKILLS_BY_NAME["percentage"], SKILLS_BY_NAME["average"], SKILLS_BY_NAME["clock"]
    proposals = [
        {"op": "ADD", "id": None, "text": pct.lesson, "reason": "r"},
        {"op": "ADD", "id": None, "text": pct.rewordings[0], "reason": "r"},
        {"op": "ADD", "id": None, "text": avg.lesson, "reason": "r"},
        {"op": "NONE", "id": None, "text": "", "reason": "r"},
        {"op": "DELETE", "id": "E1", "text": "", "reason": "useless"},
        {"op": "ADD", "id": None, "text": clk.lesson, "reason": "r"},
    ]
    library = [VAGUE_LESSON, avg.rewordings[1], clk.lesson, clk.rewordings[0]]
    lib = "\n".join(f"[E{i}] {t}" for i, t in enumerate(library, 1))
    text = f"<library>\n{lib}\n</library>\n<proposals>\n{json.dumps(proposals)}\n</proposals>"
    ops = (await judge(sim, "consolidation", Consolidation, text))["ops"]
    by_kind = Counter(o["op"] for o in ops)
    assert by_kind == {"ADD": 1, "UPDATE": 1, "DELETE": 1, "MERGE": 1}
    (add,) = [o for o in ops if o["op"] == "ADD"]
    assert skill_in_text(add["text"]) == pct  # two ADDs of one skill became one
    (update,) = [o for o in ops if o["op"] == "UPDATE"]
    assert update["id"] == "E2" and skill_in_text(update["text"]) == avg  # restated lesson -> UPDATE
    (merge,) = [o for o in ops if o["op"] == "MERGE"]
    assert merge["ids"] == ["E3", "E4"] and skill_in_text(merge["text"]) == clk  # and the clock ADD folds into it
    assert [o["id"] for o in ops if o["op"] == "DELETE"] == ["E1"]
    assert Consolidation.model_validate({"ops": ops})


async def test_consolidation_delete_wins_over_update(sim):
    proposals = [
        {"op": "DELETE", "id": "E1", "text": "", "reason": "wrong"},
        {"op": "UPDATE", "id": "E1", "text": "When x, y.", "reason": "r"},
        {"op": "UPDATE", "id": "E2", "text": "When a, b.", "reason": "r"},
    ]
    text = f"<library>\n[E1] When p, q.\n[E2] When r, s.\n</library>\n<proposals>{json.dumps(proposals)}</proposals>"
    ops = (await judge(sim, "consolidation", Consolidation, text))["ops"]
    assert [(o["op"], o["id"]) for o in ops] == [("DELETE", "E1"), ("UPDATE", "E2")]


async def test_sample_summary(sim):
    out = await judge(sim, "sample_summary", SampleSummary, '<attempt id="3">I add them.\nAnswer: 42</attempt>')
    assert "42" in out["summary"]


async def test_any_other_schema_gets_a_valid_minimal_instance(sim):
    schema = {
        "type": "object",
        "$defs": {
            "Kind": {"enum": ["a", "b"]},
            "Item": {
                "type": "object",
                "properties": {"k": {"$ref": "#/$defs/Kind"}, "w": {"type": "number"}},
                "required": ["k", "w"],
            },
        },
        "properties": {
            "verdict": {"type": "boolean"},
            "score": {"type": "integer"},
            "note": {"anyOf": [{"type": "string"}, {"type": "null"}]},
            "items": {"type": "array", "items": {"$ref": "#/$defs/Item"}, "minItems": 1},
            "optional": {"type": "string"},
        },
        "required": ["verdict", "score", "note", "items"],
        "additionalProperties": False,
    }
    out = await judge(sim, "something_else", schema, "Rate this.")
    assert set(out) == {"verdict", "score", "note", "items"}


async def test_json_object_mode(sim):
    c = client(sim)
    r = await c.chat.completions.create(
        model="sim-judge",
        messages=[
            {"role": "system", "content": "Reply with JSON for sample_summary."},
            *user("<attempt>Answer: 7</attempt>"),
        ],
        response_format={"type": "json_object"},
    )
    assert "7" in json.loads(r.choices[0].message.content)["summary"]
    r = await c.chat.completions.create(model="sim-judge", messages=user("hi"), response_format={"type": "json_object"})
    assert json.loads(r.choices[0].message.content) == {}
    assert sim.stats.requests == {"policy": 0, "judge": 2}


# --------------------------------------------------------------------------------- faults


def test_fault_spec_parsing():
    assert parse_faults("429, 500,timeout") == ["429", "500", "timeout"]
    assert parse_faults(None) == [] and parse_faults(["ok", "MALFORMED"]) == ["ok", "malformed"]
    with pytest.raises(UserError, match="unknown fault"):
        parse_faults("429,boom")


def test_429_has_retry_after_and_error_body(sim):
    sim.add_faults("429")
    r = httpx.post(f"{sim.base_url}/chat/completions", json={"messages": user(Q)})
    assert r.status_code == 429 and float(r.headers["retry-after"]) == pytest.approx(0.2)
    assert r.json()["error"]["type"] == "rate_limit_error"


@pytest.mark.parametrize(
    "kind,error",
    [("429", openai.RateLimitError), ("500", openai.InternalServerError), ("503", openai.InternalServerError)],
)
async def test_status_faults_reach_the_client_then_clear(sim, kind, error):
    sim.add_faults([kind])
    with pytest.raises(error):
        await client(sim, max_retries=0).chat.completions.create(model="sim-policy", messages=user(Q))
    assert len(await ask(sim, user(Q))) == 1
    assert sim.stats.faults == {kind: 1} and sim.stats.faults_injected == 1


async def test_faults_are_a_fifo_queue_and_retries_recover():
    with start_sim_server(faults="429,ok,503,500") as sim:
        assert len(await ask(sim, user(Q))) == 1  # 429 -> the client's retry gets "ok"
        with pytest.raises(openai.InternalServerError):
            await client(sim, max_retries=0).chat.completions.create(model="sim-policy", messages=user(Q))
        r = await client(sim, max_retries=1).chat.completions.create(model="sim-policy", messages=user(Q))
        assert r.choices and sim.stats.requests["policy"] == 5 and sim.stats.faults == {"429": 1, "503": 1, "500": 1}


async def test_timeout_fault_trips_the_client_timeout(sim):
    sim.add_faults(["timeout"])
    with pytest.raises(openai.APITimeoutError):
        await client(sim, max_retries=0, timeout=0.3).chat.completions.create(model="sim-policy", messages=user(Q))
    assert len(await ask(sim, user(Q))) == 1
    assert sim.stats.faults == {"timeout": 1}


async def test_malformed_judge_content_is_not_json(sim):
    sim.add_faults(["malformed"])
    r = await client(sim).chat.completions.create(
        model="sim-judge", messages=user("<attempt>Answer: 1</attempt>"),
        response_format={"type": "json_schema", "json_schema": {"name": "sample_summary", "schema": SampleSummary.model_json_schema()}},
    )  # fmt: skip
    with pytest.raises(json.JSONDecodeError):
        json.loads(r.choices[0].message.content)
    assert sim.stats.faults == {"malformed": 1}
