"""Issue 23, items 3, 4 and 11 and the replicas item: a reply whose choices are not chat choices
(a finish_reason that is an object, a number or a list; choices that are 42, null, a string or
a list; a choice without a message) is a bad reply, retried like a 502, never an answer, never
cached, and never replayed from a cache an older version wrote; a server's error text reaches
the terminal escaped; a replica that answers 404 is taken out of rotation while good ones remain.
Both ways to a server are tried: straight over HTTP and through litellm."""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3

import pytest
from cli_helpers import ENV, committed, last_json, tfgrpo
from hostile_rows import Case, rows
from openai_stub import StubServer, stub_client

from tfgrpo.errors import EndpointError
from tfgrpo.llm import ResponseCache
from tfgrpo.llm.cache import request_key

MSGS = [{"role": "user", "content": "What is 2+2?"}]
MESSAGE = {"role": "assistant", "content": "Answer: 4"}


def completion(choices: list) -> dict:
    """A chat completion as a server sends it, with ``choices`` as given."""
    return {"id": "x", "object": "chat.completion", "created": 1, "model": "stub", "choices": choices,
            "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}}  # fmt: skip


def finish(value) -> list:
    return [{"index": 0, "finish_reason": value, "message": MESSAGE}]


def payloads(path) -> list[dict]:
    """Every reply a response cache holds."""
    with sqlite3.connect(path) as db:
        return [json.loads(p) for (p,) in db.execute("SELECT payload FROM responses")]


# ------------------------------------------------------------------- 3-4 bad replies


async def bad_reply_retried(ctx, choices: list, transport: str, n: int = 1) -> None:
    """Two bad replies, then a good one: the bad ones are retries (like a 502), the answers are
    the server's good ones, and the cache holds only those."""
    with StubServer() as server:
        server.fail(200, body=completion(choices), times=2)
        cache = ResponseCache(ctx.tmp / "c.sqlite")
        c = stub_client(server.base_url, cache=cache, transport=transport)
        out = await c.sample(MSGS, n=n)
        assert [(o.text, o.finish_reason) for o in out] == [(f"Answer: {i}", "stop") for i in range(n)], out
        assert c.usage.roles["policy"].retries == 2 and server.requests == 3
        assert [(p["text"], p["finish_reason"]) for p in payloads(cache.path)] == [(o.text, "stop") for o in out]


async def bad_reply_normalised(ctx, choices: list) -> None:
    """litellm maps a finish_reason it does not know to "stop" (with its own warning): the answer
    is read, and what is recorded and cached is a string."""
    with StubServer() as server:
        server.fail(200, body=completion(choices), times=2)
        cache = ResponseCache(ctx.tmp / "c.sqlite")
        c = stub_client(server.base_url, cache=cache, transport="litellm")
        [out] = await c.sample(MSGS, n=1)
        assert out.ok and isinstance(out.finish_reason, str)
        assert all(isinstance(p["finish_reason"], str) for p in payloads(cache.path))


async def bad_replies_then_fixed(ctx, transport: str, named: str) -> None:
    """A server that keeps sending a bad reply stops the request as an unreachable model does
    (one line, resumable); nothing is cached, and once the server is fixed the same request
    is asked again and answered."""
    cache = ResponseCache(ctx.tmp / "c.sqlite")
    with StubServer() as server:
        server.fail(200, body=completion(finish({"type": "stop"})), times=4)
        with pytest.raises(EndpointError) as exc:
            await stub_client(server.base_url, cache=cache, transport=transport).sample(MSGS, n=1)
        message = str(exc.value)
        assert named in message and "\n" not in message and "Traceback" not in message, message
        assert len(cache) == 0
        c = stub_client(server.base_url, cache=cache, transport=transport)
        [out] = await c.sample(MSGS, n=1)
        assert (out.text, out.finish_reason, out.cached) == ("Answer: 0", "stop", False)


async def cached_bad_reply_asked_again(ctx, payload: dict) -> None:
    """A reply an older version cached with a finish_reason that is not a string (or keys a
    reply never has) is asked again, not replayed into the run's records."""
    with StubServer() as server:
        cache = ResponseCache(ctx.tmp / "c.sqlite")
        c = stub_client(server.base_url, cache=cache)
        request = {"model": c.model, "messages": MSGS, "temperature": 0.7, "max_tokens": None, "seed": None,
                   "response_format": None}  # fmt: skip
        cache.put(request_key(request), 0, payload)
        [out] = await c.sample(MSGS, n=1)
        assert (out.text, out.finish_reason, out.cached) == ("Answer: 0", "stop", False) and server.requests == 1
        assert c.usage.roles["policy"].cache_hits == 0
        assert payloads(cache.path) == [{"text": "Answer: 0", "finish_reason": "stop", "prompt_tokens": 10,
                                         "completion_tokens": 5}]  # fmt: skip


class TurnsBad(StubServer):
    """A stub server that answers well until ``bad()`` holds, then sends ``body`` to every request."""

    def __init__(self, bad, body: dict) -> None:
        super().__init__()
        self.bad, self.body, self.fixed = bad, body, False

    async def _chat(self, request):
        from aiohttp import web

        if self.fixed or not self.bad():
            return await super()._chat(request)
        self.requests += 1
        return web.json_response(self.body)


def resume_after_server_fixed(ctx) -> None:
    """A policy server that starts sending finish_reason as an object after step 1: the run
    ends in one line (exit 2, no traceback) with step 1 kept and nothing bad cached, and
    ``--resume`` once the server is fixed finishes the run."""
    run = ctx.tmp / "run"
    env = {**ENV, "OPENAI_API_KEY": "x"}
    with TurnsBad(lambda: committed(run) >= 1, completion(finish({"type": "stop"}))) as server:
        proc = tfgrpo("train", "--task", "demo", "--model", "openai/stub", "--api-base", server.base_url, "--judge",
                      "sim", "--epochs", "1", "--limit", "4", "--batch-size", "2", "--max-retries", "1",
                      "--out", str(run), "--json", "-q", env=env, check=False)  # fmt: skip
        assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
        last = proc.stderr.strip().splitlines()[-1]
        assert last.startswith("error:") and "finish_reason is {'type': 'stop'}" in last, last
        assert committed(run) == 1 and all(isinstance(p["finish_reason"], str) for p in payloads(run / "cache.sqlite"))
        server.fixed = True
        resumed = last_json(tfgrpo("train", "--resume", str(run), "--json", "-q", env=env))
    assert resumed["steps"] == 2 and resumed["resumed_from_step"] == 1 and resumed["rollout_failures"] == 0


# ------------------------------------------------------------------- 11 server text

HOSTILE = "bad \x1b]0;pwned\x07 \x1b[2J \x1bc model"
SHOWN = "bad \\x1b]0;pwned\\x07 \\x1b[2J \\x1bc model"


def hostile_text_escaped(ctx, status: int, log_level: str, seen: str) -> None:
    """A policy server answering ``status`` with HOSTILE as its error: what reaches the
    terminal (stderr of a CLI run) holds the text escaped, never an escape sequence."""
    run = ctx.tmp / "run"
    env = {**ENV, "OPENAI_API_KEY": "x", "TFGRPO_LOG": log_level}
    with StubServer() as server:
        server.fail(status, body={"error": {"message": HOSTILE, "type": "stub"}}, times=1 if status >= 500 else 10_000)
        proc = tfgrpo("train", "--task", "demo", "--model", "openai/stub", "--api-base", server.base_url, "--judge",
                      "sim", "--epochs", "1", "--limit", "2", "--batch-size", "2", "--out", str(run), "-q",
                      env=env, check=False)  # fmt: skip
    err = proc.stderr
    assert "Traceback" not in err and "\x1b" not in err and "\x07" not in err, err[-3000:]
    assert SHOWN in err and seen in err, err[-3000:]


def log_line_escaped(ctx) -> None:
    """The CLI's log handler, in process: a warning holding HOSTILE comes out escaped."""
    import io

    from tfgrpo.cli import console

    root = logging.getLogger()
    saved, level = root.handlers[:], root.level
    root.handlers.clear()
    try:
        console.configure_logging()
        [handler] = root.handlers
        handler.setStream(stream := io.StringIO())
        logging.getLogger("tfgrpo.llm.client").warning("%s request failed: %s", "policy", HOSTILE)
    finally:
        root.handlers[:] = saved
        root.setLevel(level)
    assert stream.getvalue() == f"WARNING tfgrpo.llm.client: policy request failed: {SHOWN}\n"


# ------------------------------------------------------------------- minor: replicas


async def replica_404_taken_out(ctx, status: int, transport: str) -> None:
    """Three replicas, one answering ``status`` to everything: every sample is answered by the
    other two, and the bad one is asked at most a few times before it is taken out."""
    with StubServer() as a, StubServer() as b, StubServer() as bad:
        bad.fail(status, times=10_000)
        c = stub_client(",".join(s.base_url for s in (a, bad, b)), transport=transport, concurrency=4)
        outs = await asyncio.gather(*(c.sample([{"role": "user", "content": f"q{k}"}], n=2) for k in range(12)))
        assert all(o.ok for out in outs for o in out)
        assert a.completed + b.completed == 12 and bad.requests <= 4, (a.completed, b.completed, bad.requests)


async def every_replica_404(ctx, transport: str) -> None:
    """Three replicas all answering 404: an EndpointError naming the error, in one line."""
    with StubServer() as a, StubServer() as b, StubServer() as d:
        for s in (a, b, d):
            s.fail(404, body={"error": {"message": "model stub does not exist"}}, times=10_000)
        c = stub_client(",".join(s.base_url for s in (a, b, d)), transport=transport)
        with pytest.raises(EndpointError) as exc:
            await c.sample(MSGS, n=1)
    message = str(exc.value)
    assert "does not exist" in message and "\n" not in message and a.requests + b.requests + d.requests <= 6, message


B, T, R = "r3 03-04 bad replies", "r3 11 server text", "r3 minor replicas"
JUNK = [("42", [42]), ("null", [None]), ('"text"', ["text"]), ("[1]", [[1]])]
NO_MESSAGE = [
    ("a choice without a message", [{"index": 0, "finish_reason": "stop"}]),
    ("a choice with a null message", [{"index": 0, "finish_reason": "stop", "message": None}]),
    (
        "content an object",
        [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": {"a": 1}}}],
    ),
]
FINISH = [("an object", {"type": "stop"}), ("a number", 7), ("a list", ["stop"])]
CASES = [
    *(
        Case(
            B,
            f"finish_reason as {name} (direct)",
            "retried like a 502, never cached",
            bad_reply_retried,
            (finish(v), "auto"),
        )
        for name, v in FINISH
    ),
    *(
        Case(
            B,
            f"finish_reason as {name} (litellm)",
            "retried like a 502, never cached",
            bad_reply_retried,
            (finish(v), "litellm"),
        )
        for name, v in FINISH
        if name != "a number"
    ),
    Case(
        B,
        "finish_reason as a number (litellm)",
        "litellm's 'stop', cached as a string",
        bad_reply_normalised,
        (finish(7),),
    ),
    *(
        Case(
            B,
            f"choices [{name}] ({way})",
            "retried like a 502, not an empty answer",
            bad_reply_retried,
            (choices, transport),
        )
        for name, choices in JUNK
        for way, transport in (("direct", "auto"), ("litellm", "litellm"))
    ),
    *(
        Case(
            B,
            f'choices [42, null, "text", [1]] for n=4 ({way})',
            "retried like a 502",
            bad_reply_retried,
            ([42, None, "text", [1]], transport, 4),
        )
        for way, transport in (("direct", "auto"), ("litellm", "litellm"))
    ),
    Case(
        B,
        "a good choice and 42 for n=2 (direct)",
        "retried like a 502",
        bad_reply_retried,
        (finish("stop") + [42], "auto", 2),
    ),
    *(
        Case(B, f"{name} ({way})", "retried like a 502, not an empty answer", bad_reply_retried, (choices, transport))
        for name, choices in NO_MESSAGE
        for way, transport in (("direct", "auto"), ("litellm", "litellm"))
    ),
    *(
        Case(
            B,
            f"bad replies until the server is fixed ({way})",
            "one-line stop, nothing cached, then answered",
            bad_replies_then_fixed,
            (transport, named),
        )
        for way, transport, named in (
            ("direct", "auto", "finish_reason is {'type': 'stop'}"),
            ("litellm", "litellm", "Invalid response object (TypeError"),
        )
    ),
    *(
        Case(
            B,
            f"cache holding {name} from an older version",
            "asked again, not replayed",
            cached_bad_reply_asked_again,
            (payload,),
        )
        for name, payload in [
            ("finish_reason as an object", {"text": "Answer: 9", "finish_reason": {"type": "stop"}}),
            ("finish_reason as a number", {"text": "Answer: 9", "finish_reason": 7}),
            ("text as a list", {"text": ["Answer: 9"], "finish_reason": "stop"}),
            ("a key no reply has", {"text": "Answer: 9", "finish_reason": "stop", "logprobs": [0.1]}),
        ]
    ),
    Case(
        B,
        "train: finish_reason as an object from step 2, then --resume once the server is fixed",
        "one line, exit 2, step 1 kept; the resume finishes the run",
        resume_after_server_fixed,
        slow=True,
    ),
    Case(
        T,
        "ESC]0;title BEL, ESC[2J, ESC c in a 400's error (train)",
        "escaped in the 'request failed' warning",
        hostile_text_escaped,
        (400, "WARNING", "request failed"),
        slow=True,
    ),
    Case(
        T,
        "ESC]0;title BEL, ESC[2J, ESC c in a 503's error (train, TFGRPO_LOG=INFO)",
        "escaped in the retry line",
        hostile_text_escaped,
        (503, "INFO", "retry 1"),
        slow=True,
    ),
    Case(T, "ESC]0;title BEL, ESC[2J, ESC c in a logged warning", "the CLI's log handler escapes it", log_line_escaped),
    *(
        Case(
            R,
            f"3 replicas, one answering {status} always ({way})",
            "the two good ones answer everything",
            replica_404_taken_out,
            (status, transport),
        )
        for status in (404, 401)
        for way, transport in (("direct", "auto"), ("litellm", "litellm"))
    ),
    *(
        Case(
            R,
            f"3 replicas, every one answering 404 ({way})",
            "EndpointError in one line",
            every_replica_404,
            (transport,),
        )
        for way, transport in (("direct", "auto"), ("litellm", "litellm"))
    ),
]


@pytest.mark.parametrize("case", rows(CASES))
def test_hostile_replies(ctx, case: Case) -> None:
    case.run(ctx)
