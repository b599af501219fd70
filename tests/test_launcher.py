"""The vLLM launcher and the ``serve`` / ``sim-server`` commands, with a fake vllm executable."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import openai
import pytest
import typer
from typer.testing import CliRunner

from cli_helpers import ctrl_c_default
from tfgrpo.cli.serve import register
from tfgrpo.errors import UserError
from tfgrpo.llm.launcher import TransformersServer, VLLMServer, local_server

REPO = Path(__file__).resolve().parent.parent
FAKE_VLLM = Path(__file__).resolve().parent / "fake_vllm.py"
CLI = (
    "import typer; from tfgrpo.cli.serve import register; from tfgrpo.sim.cli import register as sim; "
    "app = typer.Typer(); register(app); sim(app); app()"
)


@pytest.fixture
def fake_vllm(tmp_path) -> Path:
    exe = tmp_path / "vllm"
    exe.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{FAKE_VLLM}" "$@"\n')
    exe.chmod(0o755)
    return exe


def gone(pid: int) -> bool:
    """The process has exited (a zombie nobody reaped counts as exited)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return True
    return state in ("Z", "X")


def wait_until(cond, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.05)
    return cond()


# ------------------------------------------------------------------------------- launcher


def test_starts_serves_and_stops(fake_vllm, tmp_path):
    log = tmp_path / "logs" / "vllm.log"
    with VLLMServer("tiny-model", executable=fake_vllm, log_path=log, health_timeout=20, max_model_len=4096) as server:
        assert server.base_url == f"http://127.0.0.1:{server.port}/v1"
        pid = server.process.pid
        r = openai.OpenAI(base_url=server.base_url, api_key="x").chat.completions.create(
            model="tiny-model", messages=[{"role": "user", "content": "What is 2 + 2?"}]
        )
        assert r.choices[0].message.content.splitlines()[-1].startswith("Answer: ")
    assert wait_until(lambda: gone(pid))
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"http://127.0.0.1:{server.port}/health", timeout=1)
    text = log.read_text()
    assert "Uvicorn running on" in text and "Shutting down" in text


def test_command_line(fake_vllm):
    cmd = VLLMServer(
        "m",
        port=1234,
        executable=fake_vllm,
        tensor_parallel_size=2,
        max_model_len=8192,
        extra_args=["--dtype", "bfloat16"],
    ).command()
    assert cmd[1:3] == ["serve", "m"] and "--enable-prefix-caching" in cmd
    assert cmd[cmd.index("--port") + 1] == "1234" and cmd[cmd.index("--tensor-parallel-size") + 1] == "2"
    assert cmd[cmd.index("--max-model-len") + 1] == "8192" and cmd[-2:] == ["--dtype", "bfloat16"]
    assert "--max-model-len" not in VLLMServer("m", executable=fake_vllm).command()


def test_transformers_engine_command_line(fake_vllm, monkeypatch):
    server = local_server(
        "transformers", "/models/tiny", port=4321, executable=fake_vllm, extra_args=["--dtype", "float32"]
    )
    cmd = server.command()
    assert isinstance(server, TransformersServer) and cmd[1:3] == ["serve", "/models/tiny"]
    assert cmd[cmd.index("--device") + 1] == "cpu" and "--continuous-batching" in cmd
    assert cmd[cmd.index("--host") + 1] == "127.0.0.1" and cmd[cmd.index("--port") + 1] == "4321"
    assert server.client_model == "openai//models/tiny" and VLLMServer("m").client_model == "hosted_vllm/m"
    monkeypatch.setenv("TFGRPO_TRANSFORMERS_EXECUTABLE", str(fake_vllm))
    assert TransformersServer("m").command()[0] == str(fake_vllm)
    assert TransformersServer("m").environment() is None  # torch picks its threads
    assert local_server("transformers", "m", threads=1).environment()["OMP_NUM_THREADS"] == "1"
    # the KV cache is sized, not left to take most of the machine's memory
    assert cmd[cmd.index("--cb-num-blocks") + 1] == "64" and cmd[cmd.index("--cb-max-batch-tokens") + 1] == "1024"
    small = TransformersServer("m", kv_cache_tokens=300).command()
    assert small[small.index("--cb-num-blocks") + 1] == "2" and small[small.index("--cb-max-batch-tokens") + 1] == "300"
    own = TransformersServer("m", extra_args=["--cb-num-blocks", "8"]).command()
    assert own.count("--cb-num-blocks") == 1 and "--cb-max-batch-tokens" not in own  # the user's own sizing wins
    with pytest.raises(UserError, match="--kv-cache-tokens 100: at least 256"):
        TransformersServer("m", kv_cache_tokens=100)


def test_a_local_directory_is_served_under_its_own_name(fake_vllm, tmp_path, caplog):
    """`openai//abs/path` no more: the server runs in the directory's parent and serves it by name."""
    model = tmp_path / "models" / "tiny-instruct"
    model.mkdir(parents=True)
    server = TransformersServer(str(model), executable=fake_vllm)
    cmd = server.command()
    assert cmd[1:3] == ["serve", "tiny-instruct"] and server.working_directory() == str(model.parent)
    assert server.served_name == "tiny-instruct" and server.client_model == "openai/tiny-instruct"
    # a directory whose generation config would make transformers serve answer greedily is named
    assert "lacks do_sample: true" in server.sampling_problem()
    (model / "generation_config.json").write_text('{"do_sample": true, "temperature": 0.7, "top_k": 100}')
    assert server.sampling_problem() is None
    (model / "generation_config.json").write_text('{"do_sample": true, "temperature": 1.0, "top_k": 100}')
    assert "a temperature other than 1.0" in server.sampling_problem()
    assert TransformersServer("org/hub-model").sampling_problem() is None  # a Hub id: not checked here
    vllm = VLLMServer(str(model), executable=fake_vllm)
    assert vllm.client_model == "hosted_vllm/tiny-instruct"
    assert vllm.command()[1:5] == ["serve", str(model), "--served-model-name", "tiny-instruct"]
    own = VLLMServer(str(model), executable=fake_vllm, extra_args=["--served-model-name", "mine"])
    assert own.command().count("--served-model-name") == 1  # the user's own name: theirs to send
    with local_server("transformers", str(model), executable=fake_vllm, log_path=tmp_path / "t.log",
                      health_timeout=20) as running:  # fmt: skip
        r = openai.OpenAI(base_url=running.base_url, api_key="x").chat.completions.create(
            model="tiny-instruct", messages=[{"role": "user", "content": "What is 2 + 2?"}]
        )
        assert r.choices[0].message.content
    assert "serve tiny-instruct --device cpu" in (tmp_path / "t.log").read_text()


def test_engine_choice_is_checked():
    with pytest.raises(UserError, match="unknown engine 'tgi'"):
        local_server("tgi", "m")
    with pytest.raises(UserError, match="engine transformers: .*tensor_parallel_size"):
        local_server("transformers", "m", tensor_parallel_size=2)


def test_transformers_engine_serves_and_stops(fake_vllm, tmp_path):
    with local_server(
        "transformers", "tiny", executable=fake_vllm, log_path=tmp_path / "t.log", health_timeout=20
    ) as server:
        pid = server.process.pid
        r = openai.OpenAI(base_url=server.base_url, api_key="x").chat.completions.create(
            model="tiny", messages=[{"role": "user", "content": "What is 2 + 2?"}]
        )
        assert r.choices[0].message.content
    assert wait_until(lambda: gone(pid)) and "--continuous-batching" in (tmp_path / "t.log").read_text()


def test_executable_from_environment(fake_vllm, monkeypatch):
    monkeypatch.setenv("TFGRPO_VLLM_EXECUTABLE", str(fake_vllm))
    assert VLLMServer("m").command()[0] == str(fake_vllm)


def test_missing_executable_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.delenv("TFGRPO_VLLM_EXECUTABLE", raising=False)
    with pytest.raises(UserError, match=r"vllm not found.*pip install 'tfgrpo\[vllm\]'.*--vllm-executable"):
        VLLMServer("m", executable=tmp_path / "no-such-vllm", log_path=tmp_path / "v.log").start()


def test_early_exit_shows_the_log(fake_vllm, tmp_path):
    with pytest.raises(UserError, match=r"(?s)exited with code 1.*out of memory"):
        VLLMServer("fail-early", executable=fake_vllm, log_path=tmp_path / "v.log", health_timeout=20).start()


def test_health_timeout_stops_the_process(fake_vllm, tmp_path):
    server = VLLMServer("never-healthy", executable=fake_vllm, log_path=tmp_path / "v.log", health_timeout=1.5)
    with pytest.raises(UserError, match="not healthy after 2s"):
        server.start()
    assert server.process is None


def test_child_dies_when_the_parent_is_killed(fake_vllm, tmp_path):
    script = (
        "import sys, time\n"
        f"sys.path.insert(0, {str(REPO)!r})\n"
        "from tfgrpo.llm.launcher import TransformersServer, VLLMServer, local_server\n"
        f"s = VLLMServer('m', executable={str(fake_vllm)!r}, log_path={str(tmp_path / 'v.log')!r}, health_timeout=20).start()\n"
        "print(s.process.pid, s.port, flush=True)\n"
        "time.sleep(60)\n"
    )
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        child_pid, port = map(int, parent.stdout.readline().split())
        assert httpx.get(f"http://127.0.0.1:{port}/health").status_code == 200
        parent.send_signal(signal.SIGKILL)
        parent.wait(5)
        assert wait_until(lambda: gone(child_pid), 5.0), "vllm outlived its parent"
    finally:
        parent.kill()
        try:
            os.kill(child_pid, signal.SIGKILL)
        except (ProcessLookupError, NameError, UnboundLocalError):
            pass


# ------------------------------------------------------------------------------------ CLI


def cli_app() -> typer.Typer:
    from tfgrpo.sim.cli import register as register_sim

    app = typer.Typer()
    register(app)
    register_sim(app)
    return app


def test_serve_missing_executable_exits_2():
    result = CliRunner().invoke(cli_app(), ["serve", "m", "--vllm-executable", "/nonexistent/vllm"])
    assert result.exit_code == 2
    assert "error: vllm not found" in result.stderr


def test_sim_server_help_says_simulated():
    result = CliRunner().invoke(cli_app(), ["sim-server", "--help"])
    assert result.exit_code == 0 and "SIMULATED" in result.output and "not a real LLM" in result.output


def test_sim_server_offers_no_fault_injection():  # faults are a test fixture (start_sim_server(faults=...))
    result = CliRunner().invoke(cli_app(), ["sim-server", "--faults", "429"])
    assert result.exit_code == 2 and "No such option" in result.stderr


def run_until_ctrl_c(args: list[str], ready: str, timeout: float = 20.0) -> tuple[list[str], str, int]:
    """Start the CLI, read stdout up to the line containing ``ready``, then send SIGINT."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-c", CLI, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=REPO,
                            preexec_fn=ctrl_c_default)  # fmt: skip
    lines: list[str] = []
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line.rstrip("\n"))
            if ready in line:
                break
        assert any(ready in line for line in lines), lines
        url = next(w for line in lines for w in line.split() if w.startswith("http://"))
        r = openai.OpenAI(base_url=url, api_key="x").chat.completions.create(
            model="m", messages=[{"role": "user", "content": "hi"}]
        )
        assert r.choices
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=timeout)
        return lines + out.splitlines(), err, proc.returncode
    finally:
        proc.kill()


def test_sim_server_command_runs_until_ctrl_c():
    lines, err, code = run_until_ctrl_c(["sim-server", "--seed", "3"], ready="SIMULATED model")
    assert code == 0, err
    assert "stopped sim server" in lines[-1] and "1 policy" in lines[-1]
    # the key a client needs is documented where the server starts (any value works)
    assert any(
        line.startswith(
            "try: OPENAI_API_KEY=sim tfgrpo train --task demo --model openai/sim-policy-s3 --api-base http://"
        )
        for line in lines
    ), lines


def test_serve_command_runs_until_ctrl_c(fake_vllm, tmp_path):
    log = tmp_path / "serve.log"
    lines, err, code = run_until_ctrl_c(
        ["serve", "tiny", "--vllm-executable", str(fake_vllm), "--log", str(log)], ready="--api-base"
    )
    assert code == 0, err
    assert any(
        line.startswith(
            "try: tfgrpo train --task TASK --data DATA.jsonl --model hosted_vllm/tiny --api-base http://127.0.0.1:"
        )
        for line in lines
    )
    assert lines[-1].startswith("stopped vllm (tiny) after") and "Uvicorn running" in log.read_text()


def test_serve_transformers_engine_runs_until_ctrl_c(fake_vllm, tmp_path):
    log = tmp_path / "serve.log"
    args = ["serve", "tiny", "--engine", "transformers", "--executable", str(fake_vllm), "--log", str(log)]
    lines, err, code = run_until_ctrl_c(args, ready="--api-base")
    assert code == 0, err
    assert any(
        line.startswith(
            "try: tfgrpo train --task TASK --data DATA.jsonl --model openai/tiny --api-base http://127.0.0.1:"
        )
        for line in lines
    )
    assert (
        lines[-1].startswith("stopped transformers (tiny) after")
        and "--device cpu --continuous-batching" in log.read_text()
    )


def test_serve_in_the_background_prints_its_url_and_keeps_running(fake_vllm, tmp_path):
    """`API_BASE=$(tfgrpo serve ... --background)`: stdout is the base URL alone, the command
    returns while the server keeps serving, and the printed stop command stops it."""
    log, pid_file = tmp_path / "serve.log", tmp_path / "t.pid"
    args = ["serve", "tiny", "--engine", "transformers", "--executable", str(fake_vllm), "--log", str(log),
            "--background", "--pid-file", str(pid_file)]  # fmt: skip
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-c", CLI, *args], capture_output=True, text=True, env=env, cwd=tmp_path,
                          timeout=60)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    url = proc.stdout.strip()
    pid = int(pid_file.read_text())
    try:
        assert url.startswith("http://127.0.0.1:") and url.endswith("/v1") and "\n" not in url
        assert f"stop: kill -- -{pid}" in proc.stderr
        assert "try: tfgrpo train --task TASK --data DATA.jsonl --model openai/tiny --api-base " + url in proc.stderr
        r = openai.OpenAI(base_url=url, api_key="x").chat.completions.create(
            model="tiny", messages=[{"role": "user", "content": "hi"}]
        )
        assert r.choices  # still serving after the command returned
    finally:
        os.killpg(pid, signal.SIGTERM)
    assert wait_until(lambda: gone(pid), 20)


def test_serve_in_the_background_stops_a_server_that_never_gets_healthy(fake_vllm, tmp_path):
    result = CliRunner().invoke(
        cli_app(),
        ["serve", "never-healthy", "--vllm-executable", str(fake_vllm), "--log", str(tmp_path / "v.log"),
         "--background", "--pid-file", str(tmp_path / "v.pid"), "--health-timeout", "1.5"],
    )  # fmt: skip
    assert result.exit_code == 2 and "not healthy after 2s" in result.stderr
    assert result.stdout == "" and not (tmp_path / "v.pid").exists()


def test_serve_unknown_engine_exits_2():
    result = CliRunner().invoke(cli_app(), ["serve", "m", "--engine", "tgi"])
    assert result.exit_code == 2 and "error: unknown engine 'tgi'" in result.stderr


@pytest.mark.slow
def test_real_model_on_transformers_serve(tmp_path, smollm2):
    """SmolLM2-135M-Instruct on `transformers serve` answers concurrent chat requests."""
    path = smollm2
    with TransformersServer(str(path), log_path=tmp_path / "t.log", health_timeout=300) as server:
        client = openai.OpenAI(base_url=server.base_url, api_key="x", timeout=300)
        from concurrent.futures import ThreadPoolExecutor

        def ask(q: str) -> str:
            r = client.chat.completions.create(
                model=server.served_name, messages=[{"role": "user", "content": q}], max_tokens=16
            )
            return r.choices[0].message.content

        with ThreadPoolExecutor(3) as pool:
            answers = list(pool.map(ask, ["What is 2 + 2?", "Name a colour.", "Say hello."]))
        assert all(isinstance(a, str) and a.strip() for a in answers), answers
        pid = server.process.pid
    assert wait_until(lambda: gone(pid), 30)
