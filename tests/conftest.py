import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cli_helpers import CMD, ENV

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
os.environ.setdefault("ANONYMIZED_TELEMETRY", "False")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def chroma_server(tmp_path_factory):
    # The CLI comes with chromadb: beside this interpreter in a venv, even when the venv is not on PATH.
    beside = Path(sys.executable).parent / "chroma"
    exe = str(beside) if beside.is_file() else shutil.which("chroma")
    if exe is None:
        pytest.skip("the chroma CLI (from the chromadb package) is not installed beside python nor on PATH")
    port = free_port()
    proc = subprocess.Popen(
        [exe, "run", "--path", str(tmp_path_factory.mktemp("chroma")), "--host", "127.0.0.1", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 60
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise AssertionError("chroma run did not start")
            time.sleep(0.2)
    yield f"http://127.0.0.1:{port}"
    proc.terminate()
    proc.wait(timeout=20)


@pytest.fixture
def smollm2():
    """The converted SmolLM2-135M-Instruct directory (fetched once), or a skip with the reason."""
    pytest.importorskip("gguf")
    from tfgrpo import model_files
    from tfgrpo.errors import UserError

    try:
        return model_files.smollm2_dir()
    except UserError as e:
        pytest.skip(f"SmolLM2 package not available offline: {e}")


@pytest.fixture
def sim_server():
    """The simulated model in its own process, so the test can freeze it mid-request."""
    proc = subprocess.Popen(
        [*CMD, "sim-server", "--port", "0", "--seed", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=ENV,
    )
    url = None
    deadline = time.monotonic() + 60
    while url is None and time.monotonic() < deadline:
        line = proc.stdout.readline()
        m = re.search(r"(http://127\.0\.0\.1:\d+/v1)", line)
        if m:
            url = m.group(1)
    assert url, "sim-server did not print its URL"
    yield proc, url
    os.kill(proc.pid, signal.SIGCONT)
    proc.terminate()
    proc.wait(10)


@pytest.fixture(scope="session", autouse=True)
def model_cache(tmp_path_factory):
    """Models the tests fetch (SmolLM2: ~540 MB converted) go to a folder of the test session's,
    never the user's ~/.cache/tfgrpo: $TFGRPO_TEST_CACHE when CI names one it owns (kept between
    runs), else a temporary folder removed when the session ends. Conversion happens once per
    session; the tests' subprocesses get the same folder through the environment."""
    from tfgrpo.model_files import CACHE_ENV

    owned = os.environ.get("TFGRPO_TEST_CACHE")
    cache = Path(owned) if owned else tmp_path_factory.mktemp("tfgrpo-cache")
    before = os.environ.get(CACHE_ENV)
    os.environ[CACHE_ENV] = ENV[CACHE_ENV] = str(cache)
    yield cache
    if before is None:
        os.environ.pop(CACHE_ENV, None)
        ENV.pop(CACHE_ENV, None)
    else:
        os.environ[CACHE_ENV] = ENV[CACHE_ENV] = before
    if not owned:
        shutil.rmtree(cache, ignore_errors=True)
