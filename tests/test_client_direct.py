"""OpenAI-compatible endpoints go straight over HTTP (tfgrpo.llm.direct), not through litellm:
the same answers, usage, errors and retries as the litellm path, at a fraction of its CPU."""

from __future__ import annotations

import asyncio
import gc

import litellm
import pytest
from openai_stub import StubServer

from tfgrpo.errors import EndpointError
from tfgrpo.llm import LLMClient, RetryPolicy, direct
from tfgrpo.llm.retry import CONTEXT_OVERFLOW

MSGS = [{"role": "user", "content": "What is 2+2?"}]
FAST = RetryPolicy(max_retries=3, base_delay=0.01, max_delay=0.05)


def client(url: str, model: str = "openai/stub", **kw) -> LLMClient:
    kw.setdefault("retry", FAST)
    kw.setdefault("supports_n", True)
    kw.setdefault("api_key", "x")
    return LLMClient(model=model, api_base=url, **kw)


@pytest.fixture
def litellm_calls(monkeypatch):
    calls: list[dict] = []
    real = litellm.acompletion

    async def counted(**kwargs):
        calls.append(kwargs)
        return await real(**kwargs)

    monkeypatch.setattr(litellm, "acompletion", counted)
    return calls


def test_which_models_go_straight():
    assert direct.direct_model("openai/qwen", "http://127.0.0.1:8000/v1", local=True) == "qwen"
    assert direct.direct_model("hosted_vllm/org/model", "http://gpu-box:8000/v1", local=False) == "org/model"
    for model, base, local in [("openai/qwen", None, False), ("anthropic/claude", "http://127.0.0.1/v1", True),
                               ("gpt-4o", "http://127.0.0.1/v1", True), ("openai/", "http://127.0.0.1", True),
                               ("openai/o3-mini", "https://api.openai.com/v1", False)]:  # fmt: skip
        assert direct.direct_model(model, base, local=local) is None, model
    assert LLMClient(model="openai/o3-mini", api_base="https://api.openai.com/v1", api_key="k")._direct is None
    assert LLMClient(model="openai/qwen", api_base="http://10.0.0.5:8000/v1")._direct == "qwen"


async def test_openai_compatible_endpoints_skip_litellm_and_others_use_it(litellm_calls):
    with StubServer(answer=lambda m, i: f"Answer: {i}") as server:
        for model in ("openai/stub", "hosted_vllm/stub"):
            out = await client(server.base_url, model).sample(MSGS, n=3, seed=1)
            assert [o.text for o in out] == ["Answer: 0", "Answer: 1", "Answer: 2"]
        assert litellm_calls == [] and server.ns == [3, 3]
        via = await client(server.base_url, transport="litellm").sample(MSGS, n=2, seed=1)
        assert [o.text for o in via] == ["Answer: 0", "Answer: 1"] and len(litellm_calls) == 1
    with pytest.raises(ValueError, match="transport"):
        client("http://127.0.0.1:1/v1", transport="curl")


@pytest.mark.parametrize("transport", ["auto", "litellm"])
async def test_both_paths_give_the_same_completions_and_usage(transport):
    usage = {"prompt_tokens": 30, "completion_tokens": 12, "prompt_tokens_details": {"cached_tokens": 20}}
    with StubServer(usage=usage, answer=lambda m, i: f"text {i}") as server:
        c = client(server.base_url, transport=transport)
        out = await c.sample(MSGS, n=2, seed=4, max_tokens=16)
    assert [(o.text, o.finish_reason, o.prompt_tokens, o.completion_tokens) for o in out] == [
        ("text 0", "stop", 15, 6),
        ("text 1", "stop", 15, 6),
    ]
    role = c.usage.roles["policy"]
    assert (role.calls, role.prompt_tokens, role.completion_tokens, role.cached_tokens) == (1, 30, 12, 20)


async def test_tool_calls_and_reasoning_come_through():
    reply = {"choices": [{"index": 0, "finish_reason": "tool_calls", "message": {
        "role": "assistant", "content": None, "reasoning_content": "think first",
        "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "add", "arguments": '{"a": 1}'}}]}}],
        "usage": {"prompt_tokens": 3, "completion_tokens": 2}}  # fmt: skip
    with StubServer() as server:
        server.fail(200, body=reply)
        tools = [{"type": "function", "function": {"name": "add", "parameters": {"type": "object"}}}]
        (out,) = await client(server.base_url).sample(MSGS, tools=tools)
    assert out.ok and out.text == "" and out.reasoning == "think first"
    assert out.tool_calls == [{"id": "c1", "type": "function", "function": {"name": "add", "arguments": '{"a": 1}'}}]


@pytest.mark.parametrize("status", [401, 403, 404])
async def test_auth_and_missing_model_stop_the_run(status):
    with StubServer() as server:
        server.fail(status, times=5)
        with pytest.raises(EndpointError, match=f"HTTP {status}"):
            await client(server.base_url).sample(MSGS)
        assert server.requests == 1  # not retried: every request would fail the same way


async def test_a_bad_request_fails_that_request_with_the_servers_words():
    with StubServer() as server:
        server.fail(400, body={"error": {"message": "This model's maximum context length is 2048 tokens"}})
        c = client(server.base_url)
        out = await c.sample(MSGS, n=2)
    assert [o.ok for o in out] == [False, False] and out[0].error.startswith(CONTEXT_OVERFLOW)
    assert "maximum context length is 2048" in out[0].error and c.usage.roles["policy"].retries == 0


async def test_retry_after_of_a_direct_reply_is_honoured():
    with StubServer() as server:
        server.fail(429, headers={"Retry-After": "0.3"})
        c = client(server.base_url, retry=RetryPolicy(max_retries=2, base_delay=0.0, max_delay=5.0))
        t0 = asyncio.get_running_loop().time()
        (out,) = await c.sample(MSGS)
        assert out.ok and asyncio.get_running_loop().time() - t0 >= 0.3


async def test_the_key_comes_from_the_client_or_the_providers_variable(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "from-env")
    with StubServer() as server:
        await client(server.base_url, api_key=None).sample(MSGS)
        await client(server.base_url, api_key="given").sample(MSGS)
        monkeypatch.delenv("OPENAI_API_KEY")
        await client(server.base_url, api_key=None).sample(MSGS)
    assert server.auth == ["Bearer from-env", "Bearer given", None]


async def test_a_priced_model_is_priced_without_litellm_in_the_request_path(litellm_calls):
    usage = {"prompt_tokens": 1000, "completion_tokens": 500}
    with StubServer(usage=usage) as server:
        priced = client(server.base_url, "openai/gpt-4o-mini")
        await priced.sample(MSGS)
        unpriced = client(server.base_url, "openai/my-local-model")
        await unpriced.sample(MSGS)
    p, c = litellm.cost_per_token(model="openai/gpt-4o-mini", prompt_tokens=1000, completion_tokens=500)
    assert priced.usage.roles["policy"].cost_usd == pytest.approx(p + c) and p + c > 0
    assert not unpriced.usage.roles["policy"].cost_usd and litellm_calls == []


def test_the_pooled_session_is_closed_with_its_event_loop():
    seen = []

    async def one(url):
        await client(url).sample(MSGS)
        seen.extend(direct._SESSIONS[asyncio.get_running_loop()].values())

    with StubServer() as server:
        asyncio.run(one(server.base_url))
        asyncio.run(one(server.base_url))  # a second loop gets its own session
    gc.collect()
    assert len(seen) == 2 and seen[0] is not seen[1] and all(s.closed for s in seen)
    assert len(direct._SESSIONS) == 0


async def test_a_refused_connection_is_named_in_plain_words():
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    c = client(f"http://127.0.0.1:{port}/v1", retry=RetryPolicy(max_retries=1, base_delay=0.0))
    with pytest.raises(EndpointError, match=rf"cannot connect to 127\.0\.0\.1:{port} \(Connection refused\)"):
        await c.sample(MSGS)


async def test_an_oversized_reply_is_cut_off_and_retried(monkeypatch):
    monkeypatch.setattr(direct, "MAX_REPLY_BYTES", 4096)
    big = {
        "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": "x" * 10_000}}]
    }
    with StubServer(answer=lambda m, i: "small") as server:
        server.fail(200, body=big)
        c = client(server.base_url)
        (out,) = await c.sample(MSGS)
    assert out.ok and out.text == "small" and c.usage.roles["policy"].retries == 1 and server.requests == 2


async def test_a_large_reply_in_many_pieces_is_read_whole():
    text = "y" * 3_000_000  # arrives over many socket reads
    with StubServer(answer=lambda m, i: text) as server:
        c = client(server.base_url)
        (out,) = await c.sample(MSGS)
    assert out.ok and out.text == text and c.usage.roles["policy"].retries == 0


async def test_a_redirect_is_not_followed_and_stops_the_run():
    with StubServer() as elsewhere, StubServer() as server:
        server.fail(307, headers={"Location": f"{elsewhere.base_url}/chat/completions"}, times=5)
        with pytest.raises(
            EndpointError, match=r"HTTP 307: the server redirects to http://127\.0\.0\.1:\d+/v1/chat/completions"
        ):
            await client(server.base_url).sample(MSGS)
        assert server.requests == 1 and elsewhere.requests == 0  # the prompt went nowhere else


async def test_a_netrc_entry_does_not_clash_with_the_key(tmp_path, monkeypatch):
    """A remote endpoint's proxy comes from the environment, but not its login: aiohttp's own
    environment lookup also reads ~/.netrc and refuses a netrc login beside an Authorization header."""
    netrc = tmp_path / "netrc"
    netrc.write_text("default login someone password secret\n")
    netrc.chmod(0o600)
    monkeypatch.setenv("NETRC", str(netrc))
    for var in ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(var, raising=False)
    direct._env_proxy.cache_clear()
    with StubServer() as server:
        reply = await direct.chat(
            server.base_url, {"model": "stub", "messages": MSGS}, api_key="k", timeout=10, local=False
        )
    assert reply["choices"] and server.auth == ["Bearer k"]


async def test_a_remote_endpoint_goes_through_the_environments_proxy(monkeypatch):
    import socket

    with socket.socket() as s:  # the "remote" endpoint: nobody listens there, only the proxy answers
        s.bind(("127.0.0.1", 0))
        target = f"http://127.0.0.1:{s.getsockname()[1]}/v1"
    for var in ("NO_PROXY", "no_proxy"):
        monkeypatch.delenv(var, raising=False)
    with StubServer(answer=lambda m, i: "via proxy") as proxy:
        monkeypatch.setenv("HTTP_PROXY", proxy.base_url.removesuffix("/v1"))
        direct._env_proxy.cache_clear()
        try:
            reply = await direct.chat(target, {"model": "stub", "messages": MSGS}, api_key="k", timeout=10, local=False)
            with pytest.raises(direct.TransportError, match="cannot connect"):  # local: never through the proxy
                await direct.chat(target, {"model": "stub", "messages": MSGS}, api_key="k", timeout=10, local=True)
        finally:
            direct._env_proxy.cache_clear()
    assert reply["choices"][0]["message"]["content"] == "via proxy" and proxy.requests == 1


async def test_an_untrusted_certificate_stops_the_run_with_what_to_do(tmp_path):
    import shutil
    import ssl
    import subprocess

    if not shutil.which("openssl"):
        pytest.skip("no openssl command to make a self-signed certificate")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
                    "-days", "1", "-subj", "/CN=127.0.0.1"], check=True, capture_output=True)  # fmt: skip
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert, key)
    hits = []

    async def handler(reader, writer):
        hits.append(1)
        writer.close()

    server = await asyncio.start_server(handler, "127.0.0.1", 0, ssl=ctx)
    url = f"https://127.0.0.1:{server.sockets[0].getsockname()[1]}/v1"
    try:
        c = client(url, model="hosted_vllm/stub")
        with pytest.raises(EndpointError, match="TLS with https://127.0.0.1.* failed: .*certificate.*SSL_CERT_FILE"):
            await c.sample(MSGS)
        assert c.usage.roles["policy"].retries == 0
    finally:
        server.close()


async def test_odd_but_legal_replies_are_read_as_the_api_means_them():
    parts = {"choices": [{"index": 0, "finish_reason": "tool_calls", "message": {
        "role": "assistant", "content": [{"type": "text", "text": "Answer: "}, {"type": "text", "text": "4"}],
        "reasoning": "vLLM's newer field",
        "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "add", "arguments": {"a": 1}}}]}}]}  # fmt: skip
    with StubServer() as server:
        server.fail(200, body=parts)
        (out,) = await client(server.base_url).sample(MSGS)
        assert out.text == "Answer: 4" and out.reasoning == "vLLM's newer field"
        assert out.tool_calls[0]["function"]["arguments"] == '{"a": 1}'
        server.fail(200, body={"error": {"message": "This model's maximum context length is 2048 tokens"}})
        (over,) = await client(server.base_url).sample(MSGS)
    assert not over.ok and over.error.startswith(CONTEXT_OVERFLOW)  # an error in a 200 reply: that request failed
