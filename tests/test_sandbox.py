"""The sandbox that runs model-written code: each limit is tried by code that breaks it."""

import json
import os
import socket
import subprocess
import sys
import textwrap
import threading
import time

import pytest

from cli_helpers import tfgrpo
from tfgrpo.tools.sandbox import Limits, isolation, run_python

ISO = isolation()
LANDLOCK = ISO.get("landlock_abi") is not None


def run(code: str, **limits) -> "object":
    import asyncio

    return asyncio.run(run_python(textwrap.dedent(code), Limits(**limits)))


def test_runs_code_in_an_empty_scrubbed_directory(monkeypatch):
    monkeypatch.setenv("TFGRPO_TEST_SECRET", "hunter2")
    r = run("""
        import os, json
        print(json.dumps({"files": os.listdir("."), "cwd": os.getcwd(), "env": dict(os.environ)}))
    """)
    assert r.ok and r.limit is None and r.exit_code == 0
    seen = json.loads(r.stdout)
    assert seen["files"] == ["main.py"]
    assert "hunter2" not in json.dumps(seen["env"]) and "TFGRPO_TEST_SECRET" not in seen["env"]
    assert not os.path.exists(seen["cwd"])  # removed afterwards


def test_exception_is_reported_not_raised():
    r = run("raise ValueError('boom')")
    assert r.exit_code == 1 and r.limit is None and "ValueError: boom" in r.stderr


def test_cpu_limit():
    r = run("while True: pass", cpu_s=1, wall_s=10)
    assert r.limit == "cpu" and r.wall_s < 5


def test_wall_clock_limit():
    r = run("import time; time.sleep(60)", wall_s=1)
    assert r.limit == "wall" and r.wall_s < 4


def test_unbounded_allocation_is_stopped():
    r = run("""
        chunks = []
        while True:
            chunks.append(bytearray(64 << 20))
    """, memory_mb=256)
    assert r.limit == "memory" and "MemoryError" in r.stderr


def test_megabytes_of_output_are_cut_and_the_run_stopped():
    r = run("""
        import sys
        while True:
            sys.stdout.write("x" * 100000)
    """, output_bytes=10_000, wall_s=10)
    assert r.limit == "output" and r.truncated and len(r.stdout) <= 10_000 and r.wall_s < 5


def test_big_file_is_stopped():
    r = run("open('big', 'wb').write(b'0' * (8 << 20))", file_mb=1)
    assert r.limit == "file_size"


@pytest.mark.skipif(ISO.get("process_limit") is None, reason="no process limit on this machine (root without a pids cgroup)")
def test_fork_bomb_is_stopped():
    r = run("""
        import os, time
        n = 0
        try:
            while n < 500:
                if os.fork() == 0:
                    time.sleep(30)
                    os._exit(0)
                n += 1
        except OSError as e:
            print("stopped after", n, e)
    """, processes=16, wall_s=10)
    assert "stopped after" in r.stdout, r
    assert int(r.stdout.split()[2]) < 16
    assert r.wall_s < 8  # the sleeping children did not keep the run alive


@pytest.mark.skipif(not LANDLOCK, reason="no Landlock on this kernel: reads outside the directory are not confined")
def test_reading_outside_the_directory_is_blocked(tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("hunter2")
    secret.chmod(0o644)
    r = run(f"""
        for path in [{str(secret)!r}, "/etc/hostname", "../spec.json"]:
            try:
                print(path, open(path).read())
            except OSError as e:
                print(path, "blocked", e.errno)
    """)
    assert "hunter2" not in r.stdout
    assert r.stdout.count("blocked") == 3, r.stdout


@pytest.mark.skipif(not (LANDLOCK or ISO.get("namespaces")), reason="no network isolation on this machine")
def test_sockets_cannot_reach_a_listening_loopback_server():
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    port = server.getsockname()[1]
    accepted = []
    threading.Thread(target=lambda: accepted.append(server.accept()), daemon=True).start()
    try:
        r = run(f"""
            import socket
            try:
                socket.create_connection(("127.0.0.1", {port}), timeout=2)
                print("connected")
            except OSError as e:
                print("refused", e)
        """)
    finally:
        server.close()
    assert "refused" in r.stdout and not accepted


def test_cli_prints_one_json_result(tmp_path):
    f = tmp_path / "hello.py"
    f.write_text("import sys\nprint('hi')\nsys.exit(3)\n")
    proc = tfgrpo("sandbox", "run", str(f), "--timeout", "5", check=False)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["stdout"] == "hi\n" and out["exit_code"] == 3 and out["limit"] is None
    assert set(out) >= {"stderr", "wall_s", "cpu_s", "isolation"}
    bad = tfgrpo("sandbox", "run", str(tmp_path / "missing.py"), check=False)
    assert bad.returncode == 2 and "file not found" in bad.stderr


async def test_output_held_open_by_a_straggler_is_abandoned_not_waited_for(monkeypatch):
    """If anything outlives the kill and keeps the pipes open, the rollout goes on."""
    import asyncio
    import os
    import signal
    import time

    from tfgrpo.tools import sandbox

    monkeypatch.setattr(sandbox, "SETTLE_S", 0.2)
    # sh exits at once; its background sleep keeps stdout open (EOF never comes).
    proc = await asyncio.create_subprocess_exec("sh", "-c", "echo started; sleep 30 & exit 0",
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
                                                start_new_session=True)
    out, err = sandbox._Capture(1000), sandbox._Capture(1000)
    over = asyncio.Event()
    readers = asyncio.gather(sandbox._drain(proc.stdout, out, over), sandbox._drain(proc.stderr, err, over))
    t0 = time.monotonic()
    try:
        assert await sandbox._settle(proc, readers, None) is False
        assert time.monotonic() - t0 < 3
        assert bytes(out.buf) == b"started\n"  # what was read before is kept
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
