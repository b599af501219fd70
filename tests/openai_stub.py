"""A small OpenAI-compatible chat server for tests and benchmarks (aiohttp, in a thread).

Unlike the simulator it models a *server*: a fixed ``latency`` per request, ``slots`` requests
computed at once (the rest wait in line), a server that ignores ``n`` (``honour_n=False``,
one choice per reply, as ``transformers serve`` does), queued faults (``fail(503,
{"Retry-After": "nan"})``), a fixed ``usage`` object, and a ``stop()`` that kills it mid-run.
It counts what reached it. Answers come from ``answer(messages, index)``.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import deque
from typing import Any, Callable

from aiohttp import web


def _default_answer(messages: list[dict[str, Any]], index: int) -> str:
    return f"Answer: {index}"


class StubServer:
    def __init__(self, *, latency: float = 0.0, slots: int | None = None, honour_n: bool = True,
                 answer: Callable[[list[dict[str, Any]], int], str] = _default_answer,
                 usage: dict[str, Any] | None = None, host: str = "127.0.0.1") -> None:  # fmt: skip
        self.latency = latency
        self.slots = slots
        self.honour_n = honour_n
        self.answer = answer
        self.usage = usage
        self.host = host
        self.port = 0
        self.requests = 0  # chat requests that reached the server
        self.completed = 0  # answered with 200
        self.choices = 0
        self.in_flight = 0
        self.max_in_flight = 0
        self.ns: list[int] = []  # the n of each request
        self.auth: list[str | None] = []  # the Authorization header of each request
        self._faults: deque[tuple[int, dict[str, str], Any]] = deque()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._sem: asyncio.Semaphore | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    def fail(self, status: int, headers: dict[str, str] | None = None, body: Any = None, times: int = 1) -> None:
        """The next ``times`` requests get ``status`` with ``headers`` (``body``: the JSON sent,
        or a string sent as it is)."""
        for _ in range(times):
            self._faults.append((status, headers or {}, body))

    # ---------------------------------------------------------------- server
    async def _chat(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.requests += 1
        n = int(body.get("n") or 1)
        self.ns.append(n)
        self.auth.append(request.headers.get("Authorization"))
        if self._faults:
            status, headers, payload = self._faults.popleft()
            if isinstance(payload, str):  # a body that is not JSON
                return web.Response(text=payload, status=status, headers=headers)
            if status == 200:
                return web.json_response(payload, headers=headers)
            return web.json_response(payload or {"error": {"message": f"stub fault {status}", "type": "stub"}},
                                     status=status, headers=headers)  # fmt: skip
        assert self._sem is not None
        async with self._sem:
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            try:
                if self.latency:
                    await asyncio.sleep(self.latency)
            finally:
                self.in_flight -= 1
        count = n if self.honour_n else 1
        messages = body.get("messages") or []
        choices = [{"index": i, "finish_reason": "stop", "message": {"role": "assistant", "content": self.answer(messages, i)}}
                   for i in range(count)]  # fmt: skip
        self.choices += count
        self.completed += 1
        usage = (
            self.usage
            if self.usage is not None
            else {"prompt_tokens": 10, "completion_tokens": 5 * count, "total_tokens": 10 + 5 * count}
        )
        return web.json_response({"id": f"stub-{self.requests}", "object": "chat.completion", "created": int(time.time()),
                                  "model": body.get("model", "stub"), "choices": choices, "usage": usage})  # fmt: skip

    async def _health(self, request: web.Request) -> web.Response:
        return web.Response(text="ok")

    def _run(self) -> None:
        self._loop = asyncio.new_event_loop()
        asyncio.set_event_loop(self._loop)
        self._sem = asyncio.Semaphore(self.slots or 1_000_000)
        app = web.Application(client_max_size=64 << 20)
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_post("/chat/completions", self._chat)
        app.router.add_get("/health", self._health)
        self._runner = web.AppRunner(app, access_log=None)
        self._loop.run_until_complete(self._runner.setup())
        site = web.TCPSite(self._runner, self.host, self.port or 0, backlog=1024)
        self._loop.run_until_complete(site.start())
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self._ready.set()
        self._loop.run_forever()
        self._loop.run_until_complete(self._runner.cleanup())
        self._loop.close()

    def start(self) -> "StubServer":
        self._thread.start()
        self._ready.wait(10)
        return self

    def stop(self) -> None:
        """Close the listening socket and every open connection (a replica that died)."""
        if self._loop is not None and self._loop.is_running():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)

    def __enter__(self) -> "StubServer":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def stub_client(base_url: str, **kw: Any):
    """An LLMClient for a stub server: fast retries, ``n`` honoured unless said otherwise."""
    from tfgrpo.llm import LLMClient, RetryPolicy

    kw.setdefault("retry", RetryPolicy(max_retries=3, base_delay=0.01, max_delay=0.05))
    kw.setdefault("supports_n", True)
    return LLMClient(model="openai/stub", api_base=base_url, api_key="x", **kw)


def main() -> None:
    """``python tests/openai_stub.py --latency 0.2 --slots 16``: serve until killed; prints the URL."""
    import argparse
    import signal

    parser = argparse.ArgumentParser()
    parser.add_argument("--latency", type=float, default=0.2)
    parser.add_argument("--slots", type=int, default=None)
    parser.add_argument("--ignore-n", action="store_true")
    args = parser.parse_args()
    server = StubServer(latency=args.latency, slots=args.slots, honour_n=not args.ignore_n,
                        answer=lambda m, i: f"Working it out.\nAnswer: {i}").start()  # fmt: skip
    print(server.base_url, flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    stop.wait()
    server.stop()


if __name__ == "__main__":
    main()
