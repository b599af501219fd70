"""The sandbox that runs model-written code: each limit is tried by code that breaks it. (What
confines the code, host sockets, files, processes and signals, and the total disk cap are rows
of the hostile-input table, tests/hostile/test_hostile_sandbox.py.)"""

import json
import os
import textwrap

from cli_helpers import tfgrpo
from tfgrpo.tools.sandbox import Limits, run_python


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


def test_cpu_limit_stops_at_the_limit_not_a_second_later():
    """The code is a PID-namespace init, which ignores SIGXCPU: the hard limit (SIGKILL) is the limit."""
    r = run("while True: pass", cpu_s=1, wall_s=10)
    assert r.limit == "cpu" and r.wall_s < 5
    assert r.cpu_s < 1.5, r  # was 2 s with the hard limit one second above the soft one


def test_wall_clock_limit():
    r = run("import time; time.sleep(60)", wall_s=1)
    assert r.limit == "wall" and r.wall_s < 4


def test_unbounded_allocation_is_stopped():
    r = run(
        """
        chunks = []
        while True:
            chunks.append(bytearray(64 << 20))
    """,
        memory_mb=256,
    )
    assert r.limit == "memory" and "MemoryError" in r.stderr


def test_megabytes_of_output_are_cut_and_the_run_stopped():
    r = run(
        """
        import sys
        while True:
            sys.stdout.write("x" * 100000)
    """,
        output_bytes=10_000,
        wall_s=10,
    )
    assert r.limit == "output" and r.truncated and len(r.stdout) <= 10_000 and r.wall_s < 5


def test_big_file_is_stopped():
    r = run("open('big', 'wb').write(b'0' * (8 << 20))", file_mb=1)
    assert r.limit == "file_size"


def test_disk_poller_counts_bytes_and_files(tmp_path):
    import asyncio

    from tfgrpo.tools import _host

    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "a").write_bytes(b"0" * 300_000)

    async def hits(cap, most):
        try:
            await asyncio.wait_for(_host.watch_disk(tmp_path, cap, most), 1.0)
            return True
        except asyncio.TimeoutError:
            return False

    assert asyncio.run(hits(100_000, 100)) is True  # bytes over
    assert asyncio.run(hits(10 << 20, 1)) is True  # entries over (a directory and a file)
    assert asyncio.run(hits(10 << 20, 100)) is False


def test_cli_prints_one_json_result(tmp_path):
    f = tmp_path / "hello.py"
    f.write_text("import sys\nprint('hi')\nsys.exit(3)\n")
    proc = tfgrpo("sandbox", "run", str(f), "--timeout", "5", check=False)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["stdout"] == "hi\n" and out["exit_code"] == 3 and out["limit"] is None
    assert set(out) >= {"stderr", "wall_s", "cpu_s", "isolation"}


async def test_output_held_open_by_a_straggler_is_abandoned_not_waited_for(monkeypatch):
    """If anything outlives the kill and keeps the pipes open, the rollout goes on."""
    import asyncio
    import os
    import signal
    import time

    from tfgrpo.tools import sandbox

    monkeypatch.setattr(sandbox, "SETTLE_S", 0.2)
    # sh exits at once; its background sleep keeps stdout open (EOF never comes).
    proc = await asyncio.create_subprocess_exec(
        "sh",
        "-c",
        "echo started; sleep 30 & exit 0",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        start_new_session=True,
    )
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
