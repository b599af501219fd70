"""The LLM client over real HTTP against the simulated model: retries, errors, cache, n."""

import socket
import time

import pytest

from tfgrpo.errors import EndpointError
from tfgrpo.llm import LLMClient, ResponseCache, RetryPolicy, Usage
from tfgrpo.sim import start_sim_server

MSGS = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is 2+2?"}]


@pytest.fixture
def sim():
    with start_sim_server(seed=1, timeout_delay=3.0) as server:
        yield server


def client(server, **kw):
    kw.setdefault("retry", RetryPolicy(max_retries=4, base_delay=0.01, max_delay=1.0))
    return LLMClient(model="openai/sim-policy", api_base=server.base_url, api_key="sim", **kw)


async def test_n_in_one_request_and_usage(sim):
    c = client(sim)
    out = await c.sample(MSGS, n=5, seed=3)
    assert len(out) == 5 and all(o.ok for o in out)
    role = c.usage.roles["policy"]
    assert role.calls == 1 and role.prompt_tokens > 0 and role.completion_tokens > 0
    assert sim.stats.requests["policy"] == 1


async def test_one_request_per_sample_when_backend_lacks_n(sim):
    c = client(sim, supports_n=False)
    out = await c.sample(MSGS, n=3, seed=3)
    assert len(out) == 3 and c.usage.roles["policy"].calls == 3


async def test_retry_after_is_honoured(sim):
    sim.add_faults(["429"])  # the simulator sends Retry-After: 0.2
    c = client(sim, retry=RetryPolicy(max_retries=2, base_delay=0.0, max_delay=5.0))
    t0 = time.monotonic()
    out = await c.sample(MSGS, n=1)
    assert out[0].ok
    assert time.monotonic() - t0 >= 0.2


async def test_unreachable_endpoint_raises_after_retries():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens here once closed
    c = LLMClient(
        model="openai/x",
        api_base=f"http://127.0.0.1:{port}/v1",
        api_key="k",
        retry=RetryPolicy(max_retries=2, base_delay=0.01),
        timeout=2.0,
    )
    with pytest.raises(EndpointError, match="unreachable after 3 attempts"):
        await c.sample(MSGS, n=1)
    assert c.usage.roles["policy"].calls == 3


async def test_cache_serves_repeats_without_calls(sim, tmp_path):
    cache = ResponseCache(tmp_path / "c.sqlite")
    first = client(sim, cache=cache)
    a = await first.sample(MSGS, n=4, seed=7)
    again = client(sim, cache=ResponseCache(tmp_path / "c.sqlite"), usage=Usage())
    b = await again.sample(MSGS, n=4, seed=7)
    assert [x.text for x in a] == [x.text for x in b]
    assert again.usage.roles["policy"].calls == 0 and again.usage.roles["policy"].cache_hits == 4
    assert all(x.cached for x in b)
    # a different request misses; the bypass flag misses too
    await again.sample(MSGS, n=4, seed=8)
    await again.sample(MSGS, n=4, seed=7, use_cache=False)
    assert again.usage.roles["policy"].calls == 2


async def test_bad_request_fails_that_request_only(monkeypatch):
    import litellm

    async def reject(**kwargs):
        raise litellm.BadRequestError("context window exceeded", model="x", llm_provider="openai")

    monkeypatch.setattr(litellm, "acompletion", reject)
    c = LLMClient(model="openai/x", api_key="k", retry=RetryPolicy(max_retries=3, base_delay=0.01))
    out = await c.sample(MSGS, n=2)
    assert [o.ok for o in out] == [False, False]
    assert "context window exceeded" in out[0].error
    role = c.usage.roles["policy"]
    assert role.calls == 1 and role.retries == 0 and role.failures == 2


@pytest.mark.parametrize(
    "fails_without_flag,knows_flag,skips",
    [
        (True, True, True),  # a litellm importing its MCP gateway (and packages not installed) for any tools
        (False, True, False),  # a litellm routing only MCP tools to the gateway
        (False, False, False),  # a litellm without the flag: it is never sent upstream
    ],
)
def test_mcp_gateway_skip_is_asked_of_litellm(monkeypatch, fails_without_flag, knows_flag, skips):
    import litellm

    from tfgrpo.llm import model_info

    def completion(**kwargs):
        assert kwargs["mock_response"] and kwargs["tools"][0]["type"] == "function"  # offline, a plain function tool
        if fails_without_flag and not kwargs.get("_skip_mcp_handler"):
            raise ModuleNotFoundError("No module named 'mcp'")
        return object()

    monkeypatch.setattr(litellm, "completion", completion)
    model_info.skips_mcp_gateway.cache_clear()
    try:
        assert model_info.skips_mcp_gateway() is skips
    finally:
        model_info.skips_mcp_gateway.cache_clear()
