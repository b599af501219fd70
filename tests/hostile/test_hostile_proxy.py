"""Area 7 and what held of the proxy: it binds 127.0.0.1, checks the Host header (DNS rebinding),
takes an optional bearer token it never forwards, answers 400 to unusable bodies and 413 to
oversized ones without reaching upstream, times out a silent upstream, lets go of upstream when
the client leaves, retrieves off the event loop, and holds 200 concurrent requests."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import resource
import subprocess
import threading
import urllib.error
import urllib.request

import aiohttp
import pytest
import yarl
from aiohttp import web
from hostile_rows import Case, rows

from cli_helpers import CMD, ENV
from experience_store import Experience, Pack
from experience_store.proxy import InjectingProxy, start

LESSONS = [
    "When adding fractions, rewrite both over a common denominator first.",
    "When a triangle is right-angled, use the Pythagorean theorem for the missing side.",
]
CHAT = {"model": "m", "messages": [{"role": "user", "content": "A right triangle has legs 3 and 4."}]}


def the_pack() -> Pack:
    return Pack.build([Experience(id=f"E{i + 1}", text=t) for i, t in enumerate(LESSONS)])


@contextlib.asynccontextmanager
async def echo_upstream():
    """Answers every request with what it received (headers, JSON body); counts the calls."""
    seen: list[dict] = []

    async def echo(request: web.Request) -> web.Response:
        body = await request.read()
        seen.append(
            {"headers": dict(request.headers), "body": json.loads(body) if body else None, "path": request.raw_path}
        )
        return web.json_response(seen[-1])

    async with upstream_of(echo) as url:
        yield url, seen


@contextlib.asynccontextmanager
async def upstream_of(handler):
    """A loopback HTTP server answering every path with ``handler``; yields its /v1 URL."""
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}/v1"
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
async def proxy_for(upstream, pack=None, **options):
    runner, port = await start(InjectingProxy(pack or the_pack(), upstream, **options), "127.0.0.1", 0)
    try:
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        await runner.cleanup()


async def post(url, body, headers=None, session=None):
    data = body if isinstance(body, bytes) else json.dumps(body)
    async with contextlib.AsyncExitStack() as stack:
        s = session or await stack.enter_async_context(aiohttp.ClientSession())
        async with s.post(f"{url}/chat/completions", data=data, headers=headers or {}) as r:
            text = await r.text()
            with contextlib.suppress(ValueError):
                return r.status, json.loads(text)
            return r.status, text


async def gzip_body(ctx) -> None:
    import gzip

    async with echo_upstream() as (up, seen), proxy_for(up) as url:
        code, reply = await post(
            url,
            gzip.compress(json.dumps(CHAT).encode()),
            {"Content-Encoding": "gzip", "Content-Type": "application/json"},
        )
    assert code == 200 and "content-encoding" not in {k.lower() for k in seen[0]["headers"]}, reply
    assert "[E1]" in json.dumps(seen[0]["body"])  # read, injected, forwarded as plain JSON


async def encoded_paths(ctx) -> None:
    async with echo_upstream() as (up, seen), proxy_for(up) as url, aiohttp.ClientSession() as s:
        for path in (
            "/models/meta-llama%2FLlama-3-8B",
            "/x%2F..%2F..%2Fadmin",
            "/%2E%2E/admin",
            "/models%3Fapi-version=x",
        ):
            async with s.get(yarl.URL(url + path, encoded=True)) as r:
                assert r.status == 200, path
    assert [x["path"] for x in seen] == [
        "/v1/models/meta-llama%2FLlama-3-8B",
        "/v1/x%2F..%2F..%2Fadmin",
        "/v1/%2E%2E/admin",
        "/v1/models%3Fapi-version=x",
    ]


async def many_long_streams(ctx) -> None:
    """110 requests at once to an upstream that holds each for a second: all in about a second
    (aiohttp's default of 100 connections queued the rest behind the first hundred)."""

    async def slow(request: web.Request) -> web.Response:
        await request.read()
        await asyncio.sleep(1.0)
        return web.json_response({"choices": []})

    async with (
        upstream_of(slow) as up,
        proxy_for(up) as url,
        aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as s,
    ):
        t0 = asyncio.get_running_loop().time()
        codes = await asyncio.gather(*(post(url, CHAT, session=s) for _ in range(110)))
        took = asyncio.get_running_loop().time() - t0
    assert all(c == 200 for c, _ in codes) and took < 1.9, took


async def host_header(ctx, host: str, status: int) -> None:
    async with echo_upstream() as (up, seen), proxy_for(up) as url:
        code, reply = await post(url, CHAT, {"Host": host})
        assert code == status, reply
        assert len(seen) == (status == 200)
        if status == 403:
            assert "not served here" in reply["error"]["message"]


async def wrong_token(ctx, auth: str | None) -> None:
    async with echo_upstream() as (up, seen), proxy_for(up, token="s3cret", upstream_key="up-key") as url:
        code, reply = await post(url, CHAT, {"Authorization": auth} if auth else {})
        assert code == 401 and "token" in reply["error"]["message"], (auth, reply)
        assert not seen


async def token_never_forwarded(ctx) -> None:
    async with echo_upstream() as (up, seen), proxy_for(up, token="s3cret", upstream_key="up-key") as url:
        code, reply = await post(url, CHAT, {"Authorization": "Bearer s3cret"})
        assert code == 200 and reply["headers"]["Authorization"] == "Bearer up-key"
    async with echo_upstream() as (up, seen), proxy_for(up, token="s3cret") as url:
        code, reply = await post(url, CHAT, {"Authorization": "Bearer s3cret"})
        assert code == 200 and "Authorization" not in reply["headers"]
    async with echo_upstream() as (up, seen), proxy_for(up) as url:  # no token: the client's key goes upstream
        code, reply = await post(url, CHAT, {"Authorization": "Bearer sk-user"})
        assert code == 200 and reply["headers"]["Authorization"] == "Bearer sk-user"
        assert "[E2]" in reply["body"]["messages"][0]["content"]


async def refused_body(ctx, body, status: int, says: str) -> None:
    async with echo_upstream() as (up, seen), proxy_for(up) as url:
        code, reply = await post(url, body)
        assert code == status and says in json.dumps(reply), reply
        assert not seen


async def silent_upstream_times_out(ctx) -> None:
    async with silent_upstream() as (up, received, _), proxy_for(up, read_timeout=0.3) as url:
        code, reply = await post(url, CHAT)
        assert code == 504 and "did not answer within 0.3 s" in reply["error"]["message"]
        assert received.is_set()


async def client_disconnect_cancels(ctx) -> None:
    async with silent_upstream() as (up, received, closed), proxy_for(up) as url:  # default: a 600 s read timeout
        port = int(url.rsplit(":", 1)[1].split("/")[0])
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        body = json.dumps(CHAT).encode()
        writer.write(
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            + f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        await writer.drain()
        await asyncio.wait_for(received.wait(), 30)
        writer.close()  # the agent gives up
        await asyncio.wait_for(closed.wait(), 30)  # ... and the proxy lets go of upstream instead of waiting on


async def retrieval_off_the_loop(ctx) -> None:
    pack, threads = the_pack(), []
    real = pack.inject

    def spy(*args, **kwargs):
        threads.append(threading.current_thread())
        return real(*args, **kwargs)

    ctx.monkeypatch.setattr(pack, "inject", spy)
    async with echo_upstream() as (up, seen), proxy_for(up, pack) as url:
        code, _ = await post(url, CHAT)
    assert code == 200 and threads and threads[0] is not threading.current_thread()


def cli_binds_loopback_with_a_token(ctx) -> None:
    """``tfgrpo proxy --port 0`` as a user runs it: bound to 127.0.0.1 only, the token from the environment."""
    the_pack().write(ctx.tmp / "p")
    proc = subprocess.Popen(
        [*CMD, "proxy", "--pack", str(ctx.tmp / "p"), "--upstream", "http://127.0.0.1:9/v1", "--port", "0"],
        env={**ENV, "TFGRPO_PROXY_TOKEN": "tok"},
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        url = port = None
        for line in proc.stderr:
            found = re.search(r"base URL (http://127\.0\.0\.1:(\d+)/v1)", line)
            if found:
                url, port = found.group(1), int(found.group(2))
                break
        assert url and port
        assert listening_on(port) == {"127.0.0.1"}

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


def listening_on(port: int) -> set[str]:
    """The addresses listening on ``port`` (from /proc/net/tcp and tcp6)."""
    found = set()
    for name, size in (("/proc/net/tcp", 4), ("/proc/net/tcp6", 16)):
        with contextlib.suppress(OSError), open(name) as f:
            for line in list(f)[1:]:
                local, state = line.split()[1], line.split()[3]
                addr, hexport = local.split(":")
                if state == "0A" and int(hexport, 16) == port:  # LISTEN
                    raw = bytes.fromhex(addr)
                    found.add(".".join(str(b) for b in raw[::-1]) if size == 4 else raw.hex())
    return found


def resident_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / (1 << 20)


async def many_concurrent(ctx) -> None:
    """200 concurrent requests, 5 rounds: every one answered, and memory does not grow with the rounds."""
    async with echo_upstream() as (up, seen), proxy_for(up) as url:
        connector = aiohttp.TCPConnector(limit=0)
        async with aiohttp.ClientSession(connector=connector) as session:
            rss = []
            for _ in range(5):
                codes = await asyncio.gather(*(post(url, CHAT, session=session) for _ in range(200)))
                assert [c for c, _ in codes] == [200] * 200
                rss.append(resident_mib())
        assert len(seen) == 1000
        assert rss[-1] - rss[0] < 100, rss  # rounds 2-5 leave no more than 100 MiB more resident than round 1 did


P, H, R = "07 proxy", "held proxy", "review packs and proxy"
DEEP_BODY = b'{"messages": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
CASES = [
    *(
        Case(P, f"Host: {host or '(empty)'}", f"{status}", host_header, (host, status))
        for host, status in [
            ("evil.example", 403),
            ("evil.example:8100", 403),
            ("127.0.0.1.nip.io", 403),
            ("", 403),
            ("[::1", 403),
            ("localhost:8100", 200),
            ("LOCALHOST.", 200),
            ("127.0.0.1", 200),
            ("[::1]:8100", 200),
            ("10.1.2.3:8100", 200),
        ]
    ),
    *(
        Case(
            P, f"Authorization: {auth or '(none)'} with a token set", "401, nothing sent upstream", wrong_token, (auth,)
        )
        for auth in (None, "Bearer wrong", "s3cret", "Bearer s3cret2", "bearer s3cret", "Bearer s\u00fc")
    ),
    Case(
        P, "the right token", "passes; the user's token is never forwarded, the upstream key is", token_never_forwarded
    ),
    *(
        Case(P, f"body {name}", "400 proxy_error, nothing sent upstream", refused_body, (body, 400, "proxy_error"))
        for name, body in [
            ("nested 100000 deep", DEEP_BODY),
            ("nested 100 deep", json.dumps({**CHAT, "extra": json.loads("[" * 100 + "]" * 100)}).encode()),
            ("not JSON", b"{messages"),
            ("not UTF-8", b'{"messages": "\xff"}'),
            ("a list", b"[]"),
            ("without messages", {"model": "m"}),
            ("messages a string", {"model": "m", "messages": "hi"}),
            ("messages of strings", {"model": "m", "messages": ["hi"]}),
            ("one message not an object", {"model": "m", "messages": [{"role": "user", "content": "x"}, 5]}),
        ]
    ),
    Case(P, "an upstream that never answers", "504 after the read timeout", silent_upstream_times_out),
    Case(P, "the client leaves mid-request", "the upstream request is cancelled", client_disconnect_cancels),
    Case(P, "retrieval for a request", "runs in a worker thread, off the event loop", retrieval_off_the_loop),
    Case(
        H,
        "tfgrpo proxy --port 0, token from the environment",
        "listens on 127.0.0.1 only; 401 without the token",
        cli_binds_loopback_with_a_token,
    ),
    Case(
        H,
        "a 65 MB body",
        "413, nothing sent upstream",
        refused_body,
        (
            b'{"model": "m", "messages": [{"role": "user", "content": "' + b"x" * (65 << 20) + b'"}]}',
            413,
            "Maximum request body size",
        ),
    ),
    Case(H, "200 concurrent requests x 5 rounds", "all answered, memory flat", many_concurrent, slow=True),
    Case(R, "a gzip-compressed request body", "read, injected, forwarded without Content-Encoding", gzip_body),
    Case(R, "percent-encoded paths (%2F, %2E%2E, %3F)", "forwarded as encoded, never outside /v1", encoded_paths),
    Case(
        R,
        "110 one-second requests at once",
        "all in about a second (no cap of 100 upstream connections)",
        many_long_streams,
    ),
]


@pytest.mark.parametrize("case", rows(CASES))
def test_hostile_proxy(case, ctx):
    case.run(ctx)
