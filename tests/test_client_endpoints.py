"""The LLM client against servers that behave like real local ones: ignoring ``n``, slow,
several replicas of which one dies mid-run. (Hostile numbers and replies a server sends are rows
of the hostile-input table, tests/hostile/test_hostile_servers.py.)"""

from __future__ import annotations

import asyncio
import json
import logging
import threading

import pytest
from openai_stub import StubServer, stub_client

from tfgrpo.errors import EndpointError
from tfgrpo.llm import RetryPolicy
from tfgrpo.llm.replicas import split_bases
from tfgrpo.llm.retry import AdaptiveLimit, is_local
from tfgrpo.llm.usage import server_number

MSGS = [{"role": "user", "content": "What is 2+2?"}]
FAST = RetryPolicy(max_retries=3, base_delay=0.01, max_delay=0.05)
client = stub_client


async def bounded(coro, seconds: float = 60.0):
    """Fail instead of hanging when the client stalls."""
    return await asyncio.wait_for(coro, seconds)


# ----------------------------------------------------------------------- n not honoured


async def test_missing_choices_are_fetched_as_separate_requests(caplog):
    with StubServer(honour_n=False, answer=lambda m, i: f"sample {i}") as server, caplog.at_level(logging.WARNING):
        c = client(server.base_url)
        first = await bounded(c.sample(MSGS, n=4, seed=1))
        assert all(o.ok for o in first) and [o.index for o in first] == [0, 1, 2, 3]
        assert server.ns == [4, 1, 1, 1] and c.usage.roles["policy"].failures == 0
        second = await bounded(c.sample(MSGS + [{"role": "user", "content": "again"}], n=3))
        assert all(o.ok for o in second) and server.ns[4:] == [1, 1, 1]  # remembered: no n=3 request
        judge = client(server.base_url, role="judge")  # same endpoint, another role: also remembered
        await bounded(judge.sample(MSGS, n=2, seed=9))
        assert server.ns[7:] == [1, 1]
    assert sum("ignores n" in r.getMessage() for r in caplog.records) == 1


async def test_server_honouring_n_gets_one_request():
    with StubServer() as server:
        out = await bounded(client(server.base_url).sample(MSGS, n=5))
        assert all(o.ok for o in out) and server.ns == [5]


# ------------------------------------------------------------------------ slow servers


async def test_timed_out_request_is_not_sent_again_to_a_local_server():
    with StubServer(latency=1.0) as server:
        c = client(server.base_url, timeout=0.3, first_timeout_factor=1.0)
        out = await bounded(c.sample(MSGS, n=1))
        assert not out[0].ok and "may still be computing" in out[0].error
        assert server.requests == 1 and c.usage.roles["policy"].failures == 1
        asked = client(server.base_url, timeout=0.3, first_timeout_factor=1.0, retry_timeouts=True,
                       retry=RetryPolicy(max_retries=1, base_delay=0.01))  # fmt: skip
        with pytest.raises(EndpointError, match="unreachable after 2 attempts"):
            await bounded(asked.sample(MSGS + MSGS, n=1))
        assert server.requests == 3 and asked.usage.roles["policy"].retries == 1


def test_timeouts_are_retried_at_remote_endpoints_by_default():
    assert client("https://api.example.invalid/v1").retry_timeouts is True
    assert client("http://127.0.0.1:9/v1").retry_timeouts is False
    assert is_local("http://localhost:8000/v1") and is_local("http://10.0.0.7:8000/v1")
    assert not is_local("https://api.openai.com/v1") and not is_local(None)


async def test_first_request_to_a_local_server_waits_longer():
    with StubServer(latency=0.6) as server:
        c = client(server.base_url, timeout=0.3, first_timeout_factor=4.0)
        assert (await bounded(c.sample(MSGS, n=1)))[0].ok  # cold start: 1.2 s allowed
        assert not (await bounded(c.sample(MSGS + MSGS, n=1)))[0].ok  # warm: 0.3 s


async def test_concurrency_halves_on_timeouts_and_grows_back():
    limit = AdaptiveLimit(8, cooldown=0.0)
    limit.timed_out()
    assert limit.limit == 4
    limit.timed_out()
    limit.timed_out()
    limit.timed_out()
    assert limit.limit == 1
    for _ in range(1 + 2 + 3):
        limit.answered()
    assert limit.limit == 4


async def test_a_cancelled_waiter_never_loses_a_slot():
    """A waiter cancelled just after its wake-up (agent.py's wait_for around a request) passes
    the slot on; one cancelled while queued leaves the queue; every slot comes back."""
    for ticks in range(6):
        limit = AdaptiveLimit(1)
        release = asyncio.Event()

        async def hold():
            async with limit:
                await release.wait()

        async def wait(name):
            async with limit:
                return name

        holder = asyncio.create_task(hold())
        await asyncio.sleep(0)
        b, c, d = (asyncio.create_task(wait(x)) for x in "BCD")
        await asyncio.sleep(0.01)
        d.cancel()  # still queued
        release.set()
        for _ in range(ticks):
            await asyncio.sleep(0)
        b.cancel()  # before, during or after its wake-up
        assert await asyncio.wait_for(c, 1.0) == "C"
        await asyncio.gather(holder, b, d, return_exceptions=True)
        assert limit.in_flight == 0 and not limit._waiters


async def test_a_raised_limit_lets_waiters_in_at_once():
    limit = AdaptiveLimit(2, cooldown=0.0)
    limit.timed_out()
    assert limit.limit == 1
    gate = asyncio.Event()

    async def hold():
        async with limit:
            await gate.wait()

    tasks = [asyncio.create_task(hold()) for _ in range(2)]
    await asyncio.sleep(0.01)
    assert limit.in_flight == 1
    limit.answered()  # one answer in a row at limit 1: back to 2, the waiter gets in now
    await asyncio.sleep(0)
    assert limit.limit == 2 and limit.in_flight == 2
    gate.set()
    await asyncio.gather(*tasks)
    assert limit.in_flight == 0


async def test_a_slow_server_sees_fewer_requests_at_once_after_timeouts():
    with StubServer(latency=0.8) as server:
        c = client(server.base_url, timeout=0.2, first_timeout_factor=1.0, concurrency=8)
        await bounded(asyncio.gather(*(c.sample([{"role": "user", "content": str(i)}]) for i in range(8))))
        assert c.limit.limit < 8
        await asyncio.sleep(1.0)  # let the server finish what it still computes
        server.max_in_flight = 0
        server.latency = 0.05
        out = await bounded(asyncio.gather(*(c.sample([{"role": "user", "content": f"b{i}"}]) for i in range(8))))
        assert all(o[0].ok for o in out) and server.max_in_flight <= 4


# ------------------------------------------------------------------- numbers a server sends


def test_server_number_bounds():
    assert server_number(float("nan"), upper=10) == 0.0 and server_number(-3, upper=10) == 0.0
    assert server_number(10**400, upper=10) == 10 and server_number(True, upper=10) == 0.0
    assert server_number("7", upper=10) == 7.0


# ----------------------------------------------------------------------- several replicas


def test_api_base_lists():
    assert split_bases("http://a/v1, http://b/v1/,http://a/v1") == ["http://a/v1", "http://b/v1"]
    assert split_bases(["http://a/v1", "http://b/v1,http://c/v1"]) == ["http://a/v1", "http://b/v1", "http://c/v1"]
    assert split_bases(None) == []


async def test_two_replicas_one_killed_mid_run_loses_no_rollout():
    with StubServer(latency=0.05) as a, StubServer(latency=0.05) as b:
        c = client(f"{a.base_url},{b.base_url}", concurrency=4)
        killed = threading.Event()

        async def one(i: int):
            if i == 20:
                b.stop()
                killed.set()
            return await c.sample([{"role": "user", "content": f"q{i}"}], n=2)

        results = []
        for batch in range(0, 60, 10):
            results += await bounded(asyncio.gather(*(one(i) for i in range(batch, batch + 10))))
        assert killed.is_set() and all(o.ok for r in results for o in r) and len(results) == 60
        role = c.usage.roles["policy"]
        assert set(role.replicas) == {a.base_url, b.base_url} and sum(role.replicas.values()) == role.calls
        assert role.failures == 0 and a.completed + b.completed == 60
        assert b.completed < 30 < a.completed  # the dead one got nothing after it died
        assert json.loads(json.dumps(c.usage.to_dict()))["policy"]["replicas"] == role.replicas


async def test_a_group_partly_cached_gets_the_answers_a_fresh_one_would(tmp_path):
    """Samples 0-1 cached, 2-3 asked for: as a fresh request of four gives them (the group's own
    request, its cached choices dropped), not copies of samples 0-1; scattered gaps (0 and 2
    cached) likewise."""
    from tfgrpo.llm import LLMClient, ResponseCache
    from tfgrpo.llm.cache import request_key
    from tfgrpo.sim import start_sim_server

    msgs = [{"role": "user", "content": "What is 17*23?"}]
    with start_sim_server(seed=1) as sim:

        def make(cache):
            return LLMClient(
                model="openai/sim-policy", api_base=sim.base_url, api_key="sim", cache=cache, supports_n=True
            )

        cache = ResponseCache(tmp_path / "cache.sqlite")
        await make(cache).sample(msgs, n=2, seed=5, temperature=1.0)
        grown = await make(cache).sample(msgs, n=4, seed=5, temperature=1.0)
        first = await make(None).sample(msgs, n=4, seed=9, temperature=1.0)
        partial = ResponseCache(tmp_path / "partial.sqlite")
        key = request_key({"model": "openai/sim-policy", "messages": msgs, "temperature": 1.0, "max_tokens": None,
                           "seed": 9, "response_format": None})  # fmt: skip
        for c in (first[0], first[2]):
            partial.put(key, c.index, {"text": c.text, "finish_reason": c.finish_reason})
        refilled = await make(partial).sample(msgs, n=4, seed=9, temperature=1.0)
        fresh = await make(None).sample(msgs, n=4, seed=5, temperature=1.0)
    assert [o.cached for o in grown] == [True, True, False, False] and len({o.text for o in grown}) == 4
    assert [o.text for o in grown] == [o.text for o in fresh]
    assert [o.cached for o in refilled] == [True, False, True, False]
    assert [o.text for o in refilled] == [o.text for o in first]


async def test_queued_requests_pick_their_replica_when_they_get_a_slot():
    """Least busy is judged when a request may go, not when it queued: a slow replica is not
    handed half the queue."""
    with StubServer(latency=0.5) as slow, StubServer(latency=0.02) as fast:
        c = stub_client(f"{slow.base_url},{fast.base_url}", concurrency=4)
        await bounded(asyncio.gather(*(c.sample([{"role": "user", "content": f"q{i}"}], n=1) for i in range(40))))
    assert slow.completed + fast.completed == 40 and slow.completed <= 6
