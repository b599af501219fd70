"""The injecting proxy, run as a user would (``tfgrpo proxy``), used with the official openai
client against the simulated model, and against a recording upstream to see what it forwards."""

import json
import socket
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import openai
import pytest

from cli_helpers import CMD, ENV
from experience_store import Experience, Pack
from tfgrpo.sim import start_sim_server

LESSONS = [
    "When adding fractions, rewrite both over a common denominator first.",
    "When a triangle is right-angled, use the Pythagorean theorem for the missing side.",
    "When a percentage changes twice, multiply the growth factors.",
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, proc: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"proxy exited {proc.returncode}: {proc.stderr.read()}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.1)
    raise AssertionError("proxy did not start")


class Recorder(BaseHTTPRequestHandler):
    """Upstream that records the last request and answers with a fixed completion."""

    bodies: list = []

    def log_message(self, *args):
        pass

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        Recorder.bodies.append(body)
        out = json.dumps(
            {
                "id": "x",
                "object": "chat.completion",
                "created": 0,
                "model": body["model"],
                "choices": [
                    {"index": 0, "message": {"role": "assistant", "content": "ok [E2]"}, "finish_reason": "stop"}
                ],
                "usage": {"prompt_tokens": 11, "completion_tokens": 2, "total_tokens": 13},
            }
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)


@pytest.fixture(scope="module")
def pack_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("pack") / "p.zip"
    Pack.build([Experience(id=f"E{i + 1}", text=t) for i, t in enumerate(LESSONS)], [], task="demo").write(path)
    return path


def start_proxy(pack, upstream: str, *extra: str):
    port = free_port()
    proc = subprocess.Popen(
        [*CMD, "proxy", "--pack", str(pack), "--upstream", upstream, "--port", str(port), *extra],
        env=ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    wait_port(port, proc)
    return proc, f"http://127.0.0.1:{port}/v1"


@pytest.fixture(scope="module")
def sim_proxy(pack_path):
    sim = start_sim_server(seed=0)
    proc, url = start_proxy(pack_path, sim.base_url)
    yield sim, url
    proc.terminate()
    proc.wait(timeout=10)
    sim.stop()


def test_openai_client_through_proxy_models_plain_and_stream(sim_proxy):
    sim, url = sim_proxy
    client = openai.OpenAI(base_url=url, api_key="none", max_retries=0)
    assert {m.id for m in client.models.list()} == {"sim-policy", "sim-judge"}
    messages = [{"role": "user", "content": "What is 2 + 2?"}]
    plain = client.chat.completions.create(model="sim-policy", messages=messages, seed=1)
    assert "Answer:" in plain.choices[0].message.content
    assert (
        plain.usage.prompt_tokens > 0
        and plain.usage.total_tokens == plain.usage.prompt_tokens + plain.usage.completion_tokens
    )
    stream = client.chat.completions.create(
        model="sim-policy", messages=messages, seed=1, stream=True, stream_options={"include_usage": True}
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == plain.choices[0].message.content
    assert chunks[-1].usage is not None and chunks[-1].usage.prompt_tokens == plain.usage.prompt_tokens


def test_upstream_errors_come_back_unchanged(sim_proxy):
    sim, url = sim_proxy
    client = openai.OpenAI(base_url=url, api_key="none", max_retries=0)
    sim.add_faults("503")
    with pytest.raises(openai.InternalServerError) as exc:
        client.chat.completions.create(model="sim-policy", messages=[{"role": "user", "content": "hi"}])
    assert exc.value.status_code == 503
    with pytest.raises(openai.NotFoundError):
        client.embeddings.create(model="x", input="hi")  # the sim has no such route: its 404 comes through


def test_retrieved_experiences_are_added_to_the_system_message(pack_path):
    server = ThreadingHTTPServer(("127.0.0.1", 0), Recorder)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    proc, url = start_proxy(
        pack_path, f"http://127.0.0.1:{server.server_address[1]}/v1", "--injection", "retrieve", "--top-k", "1"
    )
    try:
        client = openai.OpenAI(base_url=url, api_key="none", max_retries=0)
        reply = client.chat.completions.create(
            model="m",
            temperature=0.3,
            messages=[
                {"role": "system", "content": "You are terse."},
                {"role": "user", "content": "A right-angled triangle has legs 3 and 4. How long is the missing side?"},
            ],
        )
        assert reply.choices[0].message.content == "ok [E2]" and reply.usage.total_tokens == 13
        sent = Recorder.bodies[-1]
        system = sent["messages"][0]["content"]
        assert system.startswith("You are terse.") and f"[E2] {LESSONS[1]}" in system
        assert LESSONS[0] not in system  # top-1 only
        assert sent["messages"][1:] == [
            {"role": "user", "content": "A right-angled triangle has legs 3 and 4. How long is the missing side?"}
        ]
        assert sent["temperature"] == 0.3 and sent["model"] == "m"
        client.chat.completions.create(
            model="m",
            messages=[{"role": "user", "content": "Adding fractions: what is 1/2 + 1/3 over a common denominator?"}],
        )
        assert (
            Recorder.bodies[-1]["messages"][0]["role"] == "system"
            and "[E1]" in Recorder.bodies[-1]["messages"][0]["content"]
        )
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        server.shutdown()


def test_bad_pack_or_upstream_is_one_line(tmp_path, pack_path):
    (tmp_path / "bad.zip").write_bytes(b"not a zip")
    for args, msg in (
        (["--pack", str(tmp_path / "bad.zip"), "--upstream", "http://127.0.0.1:9/v1"], "not a readable zip"),
        (["--pack", str(pack_path), "--upstream", "localhost:9"], "--upstream must be an http(s) URL"),
    ):
        proc = subprocess.run([*CMD, "proxy", *args], env=ENV, capture_output=True, text=True, timeout=60)
        assert proc.returncode == 2 and msg in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr


def test_injection_defaults_to_the_packs_recorded_settings(tmp_path):
    pack = tmp_path / "retrieve1.zip"
    Pack.build(
        [Experience(id=f"E{i + 1}", text=t) for i, t in enumerate(LESSONS)],
        [],
        task="demo",
        injection={"mode": "retrieve", "budget_tokens": 800, "top_k": 1},
    ).write(pack)
    server = ThreadingHTTPServer(("127.0.0.1", 0), Recorder)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    proc, url = start_proxy(pack, f"http://127.0.0.1:{server.server_address[1]}/v1")  # no --injection/--top-k
    try:
        client = openai.OpenAI(base_url=url, api_key="none", max_retries=0)
        client.chat.completions.create(
            model="m", messages=[{"role": "user", "content": "A right-angled triangle has legs 3 and 4."}]
        )
        system = Recorder.bodies[-1]["messages"][0]["content"]
        assert f"[E2] {LESSONS[1]}" in system and LESSONS[0] not in system and LESSONS[2] not in system
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        server.shutdown()
