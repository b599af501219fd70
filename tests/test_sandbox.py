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
MOUNT_NS = ISO.get("mount_namespace") is not None
NO_MOUNT_NS = f"no mount namespace on this machine ({ISO.get('mount_error') or ISO.get('namespaces_error')})"


def run(code: str, **limits) -> "object":
    import asyncio

    return asyncio.run(run_python(textwrap.dedent(code), Limits(**limits)))


def override_spec(monkeypatch, **changes):
    """Launch the following runs with parts of the launcher's spec changed (a mechanism switched off)."""
    from tfgrpo.tools import sandbox

    prepare = sandbox._prepare

    def changed(*args, **kwargs):
        base, spec_path, cgroup = prepare(*args, **kwargs)
        spec_path.write_text(json.dumps({**json.loads(spec_path.read_text()), **changes}))
        return base, spec_path, cgroup

    monkeypatch.setattr(sandbox, "_prepare", changed)


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


FILL_DISK = """
    n = 0
    while n < 100:  # 100 files of 512 KiB, each under the per-file limit
        with open(f"f{n}", "wb") as f:
            f.write(b"0" * (512 << 10))
        n += 1
        print(n, flush=True)
    import time
    time.sleep(30)
"""


@pytest.mark.skipif(not MOUNT_NS, reason=NO_MOUNT_NS)
def test_total_disk_use_is_capped_by_the_run_s_tmpfs():
    r = run(FILL_DISK, disk_mb=2, wall_s=10)
    assert r.limit == "disk" and "No space left on device" in r.stderr, r
    assert int(r.stdout.split()[-1]) < 4  # at most 2 MiB written


def test_total_disk_use_is_capped_without_a_mount_namespace_too(monkeypatch):
    """Where the launcher cannot give the run a tmpfs, the parent polls the directory and kills."""
    from tfgrpo.tools import _host

    override_spec(monkeypatch, namespaces=False)
    monkeypatch.setattr(_host, "DISK_POLL_S", 0.05)
    r = run(FILL_DISK, disk_mb=2, wall_s=10)
    assert r.limit == "disk" and r.isolation.get("mount") is None, r
    assert int(r.stdout.split()[-1]) < 100


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


@pytest.mark.skipif(not MOUNT_NS, reason=NO_MOUNT_NS)
def test_host_unix_socket_files_cannot_be_reached(tmp_path):
    """A listening AF_UNIX socket on the host (think /var/run/docker.sock): its path is given to
    the code, which can neither see nor connect to it, and the listener gets no connection."""
    path = str(tmp_path / "host.sock")
    server = socket.socket(socket.AF_UNIX)
    server.bind(path)
    server.listen()
    server.setblocking(False)
    os.chmod(tmp_path, 0o755)
    try:
        r = run(f"""
            import os, socket
            s = socket.socket(socket.AF_UNIX)
            try:
                s.connect({path!r})
                print("connected")
            except OSError as e:
                print("refused", e.errno)
            print("visible", os.path.exists({path!r}), os.path.exists("/etc/hostname"), os.path.exists("/run"))
        """)
        with pytest.raises(BlockingIOError):
            server.accept()
    finally:
        server.close()
    assert "refused" in r.stdout and "connected" not in r.stdout, r
    assert "visible False False False" in r.stdout


@pytest.mark.skipif(not MOUNT_NS, reason=NO_MOUNT_NS)
def test_private_root_alone_hides_the_host(monkeypatch):
    """Without Landlock (switched off here) the mount namespace still confines: a read-only root
    holding only the Python installation and system libraries, and a /proc of the sandbox's PIDs."""
    override_spec(monkeypatch, landlock=False)
    r = run("""
        import os
        print("writable", [os.access(path, os.W_OK) for path in ["/usr", "/", "/tmp", "."]])  # creates nothing
        print("exists", os.path.exists("/etc/hostname"), os.path.exists("/root/.bashrc"), os.path.exists("/var"))
        try:
            print("pids", sorted(int(p) for p in os.listdir("/proc") if p.isdigit()))
        except OSError as e:
            print("pids unreadable", e.errno)
    """)
    assert r.isolation.get("landlock") is None and r.isolation.get("mount") == "private root", r
    assert "writable [False, False, False, True]" in r.stdout, r
    assert "exists False False False" in r.stdout
    if r.isolation.get("proc") == "private":
        assert "pids [1]" in r.stdout, r.stdout


@pytest.mark.skipif(os.geteuid() != 0, reason="only a root caller has capabilities to drop")
def test_code_started_by_root_has_no_capabilities():
    r = run("""
        import os
        for name, call in [("chown", lambda: os.chown("main.py", 12345, 12345)), ("setuid", lambda: os.setuid(12345))]:
            try:
                call()
                print(name, "allowed")
            except OSError as e:
                print(name, "refused", e.errno)
    """)
    assert r.stdout.count("refused") == 2, r


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
    bad = tfgrpo("sandbox", "run", "/bin/ls", check=False)
    assert bad.returncode == 2 and "not UTF-8" in bad.stderr and "Traceback" not in bad.stderr


def _bad_inputs(tmp_path):
    (tmp_path / "binary").write_bytes(b"\x7fELF\x02\x01\x01\x00\xff\xfe")
    (tmp_path / "ok.py").write_text("print(1)\n")
    (tmp_path / "big.py").write_text("#" * (2 << 20))
    ok = str(tmp_path / "ok.py")
    return {
        "non-UTF-8 file": ([str(tmp_path / "binary")], "not UTF-8"),
        "missing file": ([str(tmp_path / "missing.py")], "file not found"),
        "directory": ([str(tmp_path)], "not a regular file"),
        "device": (["/dev/zero"], "not a regular file"),
        "file over the disk limit": ([str(tmp_path / "big.py"), "--disk-mb", "1"], "disk limit"),
        "huge --cpu": ([ok, "--cpu", str(10**30)], "--cpu must be"),
        "negative --cpu": ([ok, "--cpu", "-1"], "--cpu must be"),
        "zero --processes": ([ok, "--processes", "0"], "--processes must be"),
        "huge --memory-mb": ([ok, "--memory-mb", str(1 << 60)], "--memory-mb must be"),
        "nan --timeout": ([ok, "--timeout", "nan"], "--timeout must be"),
        "inf --timeout": ([ok, "--timeout", "inf"], "--timeout must be"),
        "negative --max-output": ([ok, "--max-output", "-5"], "--max-output must be"),
        "zero --disk-mb": ([ok, "--disk-mb", "0"], "--disk-mb must be"),
    }


def test_cli_bad_inputs_give_one_line_and_exit_2(tmp_path):
    import typer
    from typer.testing import CliRunner

    from tfgrpo.cli import sandbox as sandbox_cli

    app = typer.Typer()
    sandbox_cli.register(app)
    for case, (args, says) in _bad_inputs(tmp_path).items():
        res = CliRunner().invoke(app, ["sandbox", "run", *args])
        assert res.exit_code == 2, (case, res.output, res.exception)
        assert res.output.count("\n") == 1 and says in res.output and "Traceback" not in res.output, (case, res.output)


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
