"""A SIMULATED model behind a real OpenAI-compatible HTTP server (stdlib only).

Not a language model: it exists so the demo and the tests run the real client code offline.
``POST /v1/chat/completions`` answers as the simulated judge when the request carries a
``response_format`` (``json_schema`` or ``json_object``), else as the simulated policy.
Choice ``i`` of a request is a pure function of (server seed, request ``seed``, messages, i).

Faults for client tests are a FIFO queue, one consumed per chat request: ``429`` (with
``Retry-After``), ``500``, ``503``, ``timeout`` (answer after ``timeout_delay`` seconds),
``malformed`` (content cut in half: invalid JSON for the judge; for a request with ``tools``,
the arguments of the tool call cut in half), ``ok``.

A request with ``tools`` is answered by the simulated tool-calling agent (``agentic.py``).
"""

from __future__ import annotations

import json
import re
import socket
import sys
import threading
import time
import uuid
from collections import Counter, deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Iterable

from tfgrpo.errors import UserError
from tfgrpo.sim.agent_replies import agent_reply
from tfgrpo.sim.judge_replies import judge_content
from tfgrpo.sim.policy_replies import choice_rng, policy_completion, text_of

FAULT_KINDS = ("429", "500", "503", "timeout", "malformed", "ok")
MODELS = ("sim-policy", "sim-judge")
RETRY_AFTER_S = 0.2


def parse_faults(spec: str | Iterable[str] | None) -> list[str]:
    """``"429,500,timeout"`` or a list of kinds -> the list; an unknown kind is a UserError."""
    if spec is None:
        return []
    items = spec.split(",") if isinstance(spec, str) else list(spec)
    kinds = [str(k).strip().lower() for k in items if str(k).strip()]
    bad = [k for k in kinds if k not in FAULT_KINDS]
    if bad:
        raise UserError(f"unknown fault kind(s) {', '.join(bad)} (choose from {', '.join(FAULT_KINDS)})")
    return kinds


class SimStats:
    """Thread-safe counters of what the server did."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._requests: Counter[str] = Counter()
        self._faults: Counter[str] = Counter()
        self._completions = 0

    def record(self, role: str) -> None:
        with self._lock:
            self._requests[role] += 1

    def record_completions(self, n: int) -> None:
        with self._lock:
            self._completions += n

    def record_fault(self, kind: str) -> None:
        with self._lock:
            self._faults[kind] += 1

    @property
    def requests(self) -> dict[str, int]:
        with self._lock:
            return {"policy": self._requests["policy"], "judge": self._requests["judge"]}

    @property
    def completions(self) -> int:
        with self._lock:
            return self._completions

    @property
    def faults(self) -> dict[str, int]:
        with self._lock:
            return dict(self._faults)

    @property
    def faults_injected(self) -> int:
        with self._lock:
            return sum(self._faults.values())

    def as_dict(self) -> dict[str, Any]:
        return {"requests": self.requests, "completions": self.completions, "faults": self.faults}


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256  # many concurrent clients connect at once (batched rollouts)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.open_connections: set[Any] = set()
        self._conn_lock = threading.Lock()

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._conn_lock:
            self.open_connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._conn_lock:
            self.open_connections.discard(request)
        super().shutdown_request(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that went away (a run that stopped mid-request) is not news; anything else
        is printed as socketserver does."""
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)

    def drop_connections(self) -> None:
        """Cut every open (keep-alive) connection, as a killed server's would be."""
        with self._conn_lock:
            conns = list(self.open_connections)
        for conn in conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


class SimServer:
    """A running simulated model. Use as a context manager, or call :meth:`stop`."""

    def __init__(
        self,
        seed: int = 0,
        host: str = "127.0.0.1",
        port: int = 0,
        faults: Iterable[str] | str | None = None,
        timeout_delay: float = 5.0,
    ) -> None:
        self.seed = seed
        self.timeout_delay = timeout_delay
        self.stats = SimStats()
        self._faults: deque[str] = deque(parse_faults(faults))
        self._faults_lock = threading.Lock()
        self._stopping = threading.Event()
        self._httpd = _HTTPServer((host, port), _Handler)
        self._httpd.sim = self  # type: ignore[attr-defined]
        self.host = host
        self.port: int = self._httpd.server_address[1]
        self._thread = threading.Thread(
            target=self._httpd.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"sim-server-{self.port}",
            daemon=True,
        )
        self._thread.start()

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    def add_faults(self, faults: Iterable[str] | str) -> None:
        """Queue more faults; each later chat request consumes one."""
        kinds = parse_faults(faults)
        with self._faults_lock:
            self._faults.extend(kinds)

    def next_fault(self) -> str:
        with self._faults_lock:
            return self._faults.popleft() if self._faults else "ok"

    def wait(self, seconds: float) -> None:
        """Sleep, cut short when the server stops."""
        self._stopping.wait(seconds)

    def stop(self) -> None:
        if self._stopping.is_set():
            return
        self._stopping.set()
        self._httpd.shutdown()
        self._httpd.server_close()
        self._httpd.drop_connections()
        self._thread.join(timeout=5)

    def __enter__(self) -> "SimServer":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def start_sim_server(
    seed: int = 0,
    host: str = "127.0.0.1",
    port: int = 0,
    faults: list[str] | str | None = None,
    timeout_delay: float = 5.0,
) -> SimServer:
    """Start the SIMULATED model on ``host:port`` (0: a free port) in background threads."""
    return SimServer(seed=seed, host=host, port=port, faults=faults, timeout_delay=timeout_delay)


# ---------------------------------------------------------------------------------------
# HTTP


def _words(text: str) -> int:
    return len(text.split())


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out as separate writes
    server_version = "tfgrpo-sim/0.1"

    @property
    def sim(self) -> SimServer:
        return self.server.sim  # type: ignore[attr-defined]

    def log_message(self, format: str, *args: Any) -> None:  # quiet: tests and demos read stdout
        pass

    def _send_json(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def _send_error(self, status: int, message: str, kind: str, headers: dict[str, str] | None = None) -> None:
        self._send_json(
            status, {"error": {"message": message, "type": kind, "param": None, "code": str(status)}}, headers
        )

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0].rstrip("/")
        if path == "/health":
            self._send_json(200, {"status": "ok", "simulation": True})
        elif path == "/v1/models":
            now = int(time.time())
            self._send_json(
                200,
                {
                    "object": "list",
                    "data": [{"id": m, "object": "model", "created": now, "owned_by": "tfgrpo-sim"} for m in MODELS],
                },
            )
        else:
            self._send_error(404, f"no route {self.path}", "not_found_error")

    def do_POST(self) -> None:
        try:
            self._post()
        except (BrokenPipeError, ConnectionResetError):  # the client gave up (its timeout fired)
            self.close_connection = True

    def _post(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        if self.path.split("?", 1)[0].rstrip("/") != "/v1/chat/completions":
            self._send_error(404, f"no route {self.path}", "not_found_error")
            return
        try:
            body = json.loads(raw or b"{}")
            messages = body["messages"]
            if not isinstance(messages, list) or not all(isinstance(m, dict) for m in messages):
                raise ValueError("messages must be a list of objects")
            n = int(body.get("n") or 1)
        except (ValueError, KeyError, TypeError) as e:
            self._send_error(400, f"bad request: {e}", "invalid_request_error")
            return
        rf = body.get("response_format") or {}
        role = "judge" if isinstance(rf, dict) and rf.get("type") in ("json_schema", "json_object") else "policy"
        sim = self.sim
        sim.stats.record(role)
        fault = sim.next_fault()
        if fault != "ok":
            sim.stats.record_fault(fault)
        if fault == "429":
            self._send_error(
                429, "Rate limit reached (simulated)", "rate_limit_error", {"Retry-After": str(RETRY_AFTER_S)}
            )
            return
        if fault in ("500", "503"):
            self._send_error(int(fault), f"Simulated server error {fault}", "server_error")
            return
        if fault == "timeout":
            sim.wait(sim.timeout_delay)
        tools = body.get("tools") if role == "policy" and isinstance(body.get("tools"), list) else None
        contents = []
        calls: list[Any] = []
        for i in range(max(1, n)):
            rng = choice_rng(sim.seed, body.get("seed"), messages, i, salt=role)
            if tools:
                # The plan is drawn from the opening messages only, so it holds over the turns.
                reply = agent_reply(
                    messages,
                    tools,
                    choice_rng(sim.seed, body.get("seed"), messages[:2], i, salt="agent"),
                    malformed=fault == "malformed",
                )
                contents.append(reply["content"])
                calls.append(reply["tool_calls"])
                continue
            if role == "judge":
                text = judge_content(messages, rf, rng, malformed=fault == "malformed")
            else:
                text = policy_completion(messages, rng)
                if fault == "malformed":
                    text = text[: len(text) // 2]
            contents.append(text)
        sim.stats.record_completions(len(contents))
        model = str(body.get("model") or f"sim-{role}")
        prompt_tokens = sum(_words(text_of(m.get("content"))) for m in messages)
        completion_tokens = sum(_words(c or "") for c in contents)
        completion_tokens += sum(_words(c["function"]["arguments"]) for cs in calls if cs for c in cs)
        usage = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        }
        ident, created = f"chatcmpl-sim-{uuid.uuid4().hex[:24]}", int(time.time())
        if body.get("stream"):
            include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
            self._stream(ident, created, model, contents, usage if include_usage else None)
            return
        choices = [
            {"index": i, "message": {"role": "assistant", "content": c}, "finish_reason": "stop", "logprobs": None}
            for i, c in enumerate(contents)
        ]
        for choice, cs in zip(choices, calls):
            if cs:
                choice["message"]["tool_calls"] = cs
                choice["finish_reason"] = "tool_calls"
        self._send_json(
            200,
            {
                "id": ident,
                "object": "chat.completion",
                "created": created,
                "model": model,
                "choices": choices,
                "usage": usage,
            },
        )

    def _stream(self, ident: str, created: int, model: str, contents: list[str], usage: dict[str, int] | None) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Connection", "close")
        self.end_headers()
        self.close_connection = True

        def chunk(choices: list[dict[str, Any]], **extra: Any) -> None:
            payload = {
                "id": ident,
                "object": "chat.completion.chunk",
                "created": created,
                "model": model,
                "choices": choices,
                **extra,
            }
            self.wfile.write(f"data: {json.dumps(payload)}\n\n".encode())

        for i, text in enumerate(contents):
            chunk([{"index": i, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}])
            for piece in re.findall(r"\S+\s*|\s+", text):
                chunk([{"index": i, "delta": {"content": piece}, "finish_reason": None}])
            chunk([{"index": i, "delta": {}, "finish_reason": "stop"}])
        if usage is not None:
            chunk([], usage=usage)
        self.wfile.write(b"data: [DONE]\n\n")
        self.wfile.flush()
