"""The proxy's guards, in process against fake upstreams: Host check (DNS rebinding), bearer
token, 400 for unusable chat bodies, upstream read timeout, cancellation when the client goes
away, retrieval off the event loop; and ``tfgrpo proxy --port 0`` with a token from the
environment, as a user runs it."""

import asyncio
import contextlib
import json
import re
import subprocess
import threading
import urllib.error
import urllib.request

import aiohttp
import pytest
from aiohttp import web

from cli_helpers import CMD, ENV
from experience_store import Experience, Pack
from experience_store.proxy import InjectingProxy, start

LESSONS = ["When adding fractions, rewrite both over a common denominator first.",
           "When a triangle is right-angled, use the Pythagorean theorem for the missing side."]
CHAT = {"model": "m", "messages": [{"role": "user", "content": "A right triangle has legs 3 and 4."}]}


@pytest.fixture(scope="module")
def pack():
    return Pack.build([Experience(id=f"E{i + 1}", text=t) for i, t in enumerate(LESSONS)])


@contextlib.asynccontextmanager
async def echo_upstream():
    """Answers every request with what it received (headers, JSON body); counts the calls."""
    seen: list[dict] = []

    async def echo(request: web.Request) -> web.Response:
        body = await request.read()
        seen.append({"headers": dict(request.headers), "body": json.loads(body) if body else None})
        return web.json_response(seen[-1])

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", echo)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}/v1", seen
    finally:
        await runner.cleanup()


@contextlib.asynccontextmanager
async def silent_upstream():
    """Reads a request and never answers; tells when a request arrived and when its connection closed."""
    received, closed = asyncio.Event(), asyncio.Event()

    async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        received.set()
        while await reader.read(65536):
            pass
        closed.set()
        writer.close()

    server = await asyncio.start_server(on_connect, "127.0.0.1", 0)
    try:
        yield f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/v1", received, closed
    finally:
        server.close()


@contextlib.asynccontextmanager
async def proxy_for(pack, upstream, **options):
    runner, port = await start(InjectingProxy(pack, upstream, **options), "127.0.0.1", 0)
    try:
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        await runner.cleanup()


async def post(url, body, headers=None):
    async with aiohttp.ClientSession() as s:
        data = body if isinstance(body, bytes) else json.dumps(body)
        async with s.post(f"{url}/chat/completions", data=data, headers=headers or {}) as r:
            return r.status, await r.json(content_type=None)


@pytest.mark.parametrize("host,status", [
    ("evil.example", 403), ("evil.example:8100", 403), ("127.0.0.1.nip.io", 403), ("", 403), ("[::1", 403),
    ("localhost:8100", 200), ("LOCALHOST.", 200), ("127.0.0.1", 200), ("[::1]:8100", 200), ("10.1.2.3:8100", 200),
])
async def test_host_header_must_be_loopback_an_ip_or_the_bound_host(pack, host, status):
    async with echo_upstream() as (up, seen), proxy_for(pack, up) as url:
        code, reply = await post(url, CHAT, {"Host": host})
        assert code == status, reply
        assert len(seen) == (status == 200)
        if status == 403:
            assert "not served here" in reply["error"]["message"]


async def test_token_is_required_and_never_forwarded(pack):
    async with echo_upstream() as (up, seen), proxy_for(pack, up, token="s3cret", upstream_key="up-key") as url:
        for auth in (None, "Bearer wrong", "s3cret", "Bearer s3cret2", "bearer s3cret", "Bearer s\u00fc"):
            code, reply = await post(url, CHAT, {"Authorization": auth} if auth else {})
            assert code == 401 and "token" in reply["error"]["message"], (auth, reply)
        assert not seen
        code, reply = await post(url, CHAT, {"Authorization": "Bearer s3cret"})
        assert code == 200 and reply["headers"]["Authorization"] == "Bearer up-key"
    async with echo_upstream() as (up, seen), proxy_for(pack, up, token="s3cret") as url:
        code, reply = await post(url, CHAT, {"Authorization": "Bearer s3cret"})
        assert code == 200 and "Authorization" not in reply["headers"]
    async with echo_upstream() as (up, seen), proxy_for(pack, up) as url:  # no token: the client's key goes upstream
        code, reply = await post(url, CHAT, {"Authorization": "Bearer sk-user"})
        assert code == 200 and reply["headers"]["Authorization"] == "Bearer sk-user"
        assert "[E2]" in reply["body"]["messages"][0]["content"]


@pytest.mark.parametrize("case,body", [
    ("nested 100000 deep", b'{"messages": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"),
    ("nested 100 deep", json.dumps({**CHAT, "extra": json.loads("[" * 100 + "]" * 100)}).encode()),
    ("not JSON", b"{messages"),
    ("not UTF-8", b'{"messages": "\xff"}'),
    ("a list", b"[]"),
    ("no messages", {"model": "m"}),
    ("messages a string", {"model": "m", "messages": "hi"}),
    ("messages of strings", {"model": "m", "messages": ["hi"]}),
    ("one message not an object", {"model": "m", "messages": [{"role": "user", "content": "x"}, 5]}),
])
async def test_unusable_chat_bodies_get_400_and_never_reach_upstream(pack, case, body):
    async with echo_upstream() as (up, seen), proxy_for(pack, up) as url:
        code, reply = await post(url, body)
        assert code == 400 and reply["error"]["type"] == "proxy_error", (case, reply)
        assert not seen


async def test_upstream_that_never_answers_gets_504(pack):
    async with silent_upstream() as (up, received, _), proxy_for(pack, up, read_timeout=0.3) as url:
        code, reply = await post(url, CHAT)
        assert code == 504 and "did not answer within 0.3 s" in reply["error"]["message"]
        assert received.is_set()


async def test_client_disconnect_cancels_the_upstream_request(pack):
    async with silent_upstream() as (up, received, closed), proxy_for(pack, up) as url:  # default: a 600 s read timeout
        port = int(url.rsplit(":", 1)[1].split("/")[0])
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        body = json.dumps(CHAT).encode()
        writer.write(b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                     + f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
        await writer.drain()
        await asyncio.wait_for(received.wait(), 30)
        writer.close()  # the agent gives up
        await asyncio.wait_for(closed.wait(), 30)  # ... and the proxy lets go of upstream instead of waiting on


async def test_retrieval_runs_in_a_worker_thread(pack, monkeypatch):
    threads = []
    real = pack.inject

    def spy(*args, **kwargs):
        threads.append(threading.current_thread())
        return real(*args, **kwargs)

    monkeypatch.setattr(pack, "inject", spy)
    async with echo_upstream() as (up, seen), proxy_for(pack, up) as url:
        code, _ = await post(url, CHAT)
    assert code == 200 and threads and threads[0] is not threading.current_thread()


def test_cli_port_0_reports_the_bound_port_and_takes_the_token_from_the_environment(tmp_path, pack):
    pack.write(tmp_path / "p")
    proc = subprocess.Popen([*CMD, "proxy", "--pack", str(tmp_path / "p"), "--upstream", "http://127.0.0.1:9/v1", "--port", "0"],
                            env={**ENV, "TFGRPO_PROXY_TOKEN": "tok"}, stderr=subprocess.PIPE, text=True)
    try:
        url = None
        for line in proc.stderr:
            found = re.search(r"base URL (http://127\.0\.0\.1:(\d+)/v1)", line)
            if found:
                url = found.group(1)
                break
        assert url and not url.endswith(":0/v1")

        def get(headers):
            try:
                with urllib.request.urlopen(urllib.request.Request(f"{url}/models", headers=headers), timeout=30) as r:
                    return r.status
            except urllib.error.HTTPError as e:
                return e.code

        assert get({}) == 401
        assert get({"Authorization": "Bearer tok"}) == 502  # through the guard, to the (absent) upstream
    finally:
        proc.terminate()
        proc.wait(timeout=30)
