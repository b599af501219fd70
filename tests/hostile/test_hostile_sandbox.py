"""Area 2, the sandbox's disk cap (item 12) and what held of the sandbox: model-written code
reaches no host socket (Unix file, abstract, TCP, UDP, DNS), sees no host process, file or
/dev/shm, cannot signal the host, leaves no orphan, and is stopped by its process and disk
limits. A row whose confinement this machine's kernel lacks is skipped with the reason, under
the same conditions as tests/test_sandbox.py."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import textwrap
import threading
import time
import uuid

import pytest
from hostile_rows import Case, rows

from tfgrpo.tools.sandbox import Limits, isolation, run_python

ISO = isolation()
LANDLOCK = ISO.get("landlock_abi") is not None
SCOPED = (ISO.get("landlock_abi") or 0) >= 6  # Landlock scopes signals and abstract sockets
MOUNT_NS = ISO.get("mount_namespace") is not None
NET_NS = "net" in (ISO.get("namespaces") or "")
SECCOMP = ISO.get("seccomp") is not None
WHY = {
    "mount": (
        MOUNT_NS,
        f"no mount namespace on this machine ({ISO.get('mount_error') or ISO.get('namespaces_error')})",
    ),
    "seccomp": (SECCOMP, f"no seccomp filter on this machine ({ISO.get('seccomp_error')})"),
    "landlock": (LANDLOCK, "no Landlock on this kernel: reads outside the directory are not confined"),
    "files": (MOUNT_NS or LANDLOCK, "neither a mount namespace nor Landlock on this machine"),
    "tcp": (LANDLOCK or bool(ISO.get("namespaces")), "no network isolation on this machine"),
    "net": (NET_NS, "no network namespace on this machine (Landlock does not cover UDP)"),
    "abstract": (NET_NS or SCOPED, "neither a network namespace nor Landlock scoping on this machine"),
    "signals": (
        bool(ISO.get("pid_namespace")) or SCOPED,
        "neither a PID namespace nor Landlock scoping on this machine",
    ),
    "processes": (
        ISO.get("process_limit") is not None,
        "no process limit on this machine (root without a pids cgroup)",
    ),
    "root": (os.geteuid() == 0, "only a root caller has capabilities to drop"),
}


def needs(feature: str) -> None:
    ok, why = WHY[feature]
    if not ok:
        pytest.skip(why)


def run(*code: str, **limits):
    """Run the code (its parts dedented one by one, then joined) in the sandbox."""
    return asyncio.run(run_python("".join(textwrap.dedent(part) for part in code), Limits(**limits)))


def override_spec(ctx, **changes) -> None:
    """Launch the following runs with parts of the launcher's spec changed (a mechanism switched off)."""
    from tfgrpo.tools import sandbox

    prepare = sandbox._prepare

    def changed(*args, **kwargs):
        base, spec_path, cgroup = prepare(*args, **kwargs)
        spec_path.write_text(json.dumps({**json.loads(spec_path.read_text()), **changes}))
        return base, spec_path, cgroup

    ctx.monkeypatch.setattr(sandbox, "_prepare", changed)


def connect(address: str) -> str:
    """Sandboxed code that connects an AF_UNIX socket to ``address``: prints connected or refused ERRNO."""
    return f"""
        import socket
        try:
            socket.socket(socket.AF_UNIX).connect({address!r})
            print("connected")
        except OSError as e:
            print("refused", e.errno)
    """


def listening_unix_socket(ctx) -> tuple[socket.socket, str]:
    path = str(ctx.tmp / "host.sock")
    server = socket.socket(socket.AF_UNIX)
    server.bind(path)
    server.listen()
    server.setblocking(False)
    os.chmod(ctx.tmp, 0o755)
    return server, path


def host_unix_socket(ctx) -> None:
    """A listening AF_UNIX socket on the host (think /var/run/docker.sock): its path is given to
    the code, which can neither see nor connect to it, and the listener gets no connection."""
    needs("mount")
    server, path = listening_unix_socket(ctx)
    try:
        r = run(
            connect(path),
            f"""
            import os
            print("visible", os.path.exists({path!r}), os.path.exists("/etc/hostname"), os.path.exists("/run"))
        """,
        )
        with pytest.raises(BlockingIOError):
            server.accept()
    finally:
        server.close()
    assert "refused" in r.stdout and "connected" not in r.stdout, r
    assert "visible False False False" in r.stdout


def host_unix_socket_by_seccomp(ctx) -> None:
    """Where no private root can be built the seccomp filter refuses new Unix sockets, so a host
    socket file stays out of reach even though the code can see it; socketpair (asyncio) works."""
    needs("seccomp")
    override_spec(ctx, namespaces=False, landlock=False)
    server, path = listening_unix_socket(ctx)
    try:
        r = run(
            connect(path),
            f"""
            import asyncio, os
            print("visible", os.path.exists({path!r}))
            print("asyncio", asyncio.run(asyncio.sleep(0, result="ok")))
        """,
        )
        with pytest.raises(BlockingIOError):
            server.accept()
    finally:
        server.close()
    assert r.isolation.get("mount") is None and "no new Unix sockets" in r.isolation["seccomp"], r
    assert "refused 13" in r.stdout and "connected" not in r.stdout, r
    assert "visible True" in r.stdout and "asyncio ok" in r.stdout, r


def abstract_socket(ctx) -> None:
    needs("abstract")
    name = f"\0tfgrpo-hostile-{uuid.uuid4().hex}"
    server = socket.socket(socket.AF_UNIX)
    server.bind(name)
    server.listen()
    server.setblocking(False)
    try:
        r = run(connect(name))
        with pytest.raises(BlockingIOError):
            server.accept()
    finally:
        server.close()
    assert "refused" in r.stdout and "connected" not in r.stdout, r


def tcp_loopback(ctx) -> None:
    needs("tcp")
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
    assert "refused" in r.stdout and not accepted, r


DNS_QUERY = bytes.fromhex("123401000001000000000000076578616d706c6503636f6d0000010001")  # A example.com


def udp_to_the_host(ctx, payload: bytes) -> None:
    """A datagram (a plain one, or a DNS query to a resolver) sent to a listener on the host's loopback never arrives."""
    needs("net")
    listener = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    listener.bind(("127.0.0.1", 0))
    listener.setblocking(False)
    port = listener.getsockname()[1]
    try:
        r = run(f"""
            import socket
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.settimeout(1)
            try:
                s.sendto({payload!r}, ("127.0.0.1", {port}))
                print("sent")
                print("answer", s.recvfrom(512))
            except OSError as e:
                print("failed", e)
        """)
        with pytest.raises(BlockingIOError):
            listener.recvfrom(512)  # nothing arrived
    finally:
        listener.close()
    assert "answer" not in r.stdout, r


def host_processes(ctx) -> None:
    needs("files")
    marker = f"tfgrpo-hostile-{uuid.uuid4().hex}"
    host = subprocess.Popen(["sh", "-c", f"sleep 60 # {marker}"])
    try:
        r = run(f"""
            import os
            seen = []
            try:
                for p in os.listdir("/proc"):
                    if p.isdigit():
                        try:
                            seen.append(open(f"/proc/{{p}}/cmdline", "rb").read())
                        except OSError:
                            pass
            except OSError as e:
                print("proc unreadable", e.errno)
            print("host seen", any({marker.encode()!r} in c for c in seen), "pids", len(seen))
        """)
    finally:
        host.kill()
        host.wait()
    assert "host seen False" in r.stdout or "proc unreadable" in r.stdout, r


def dev_shm(ctx) -> None:
    needs("files")
    name = f"tfgrpo-hostile-{uuid.uuid4().hex}"
    try:
        r = run(f"""
            try:
                open("/dev/shm/{name}", "w").write("x")
                print("wrote")
            except OSError as e:
                print("refused", e.errno)
        """)
        assert not os.path.exists(f"/dev/shm/{name}"), r
    finally:
        if os.path.exists(f"/dev/shm/{name}"):
            os.remove(f"/dev/shm/{name}")


def symlinks_out(ctx) -> None:
    needs("files")
    secret = ctx.tmp / "secret.txt"
    secret.write_text("hunter2")
    secret.chmod(0o644)
    os.chmod(ctx.tmp, 0o755)
    r = run(f"""
        import os
        for target in [{str(secret)!r}, "/etc/hostname", "/proc/1/root/etc/hostname", "../../.."]:
            link = "l" + str(abs(hash(target)))
            os.symlink(target, link)
            try:
                print(target, open(link).read() if os.path.isfile(link) else os.listdir(link))
            except OSError as e:
                print(target, "blocked", e.errno)
    """)
    assert "hunter2" not in r.stdout and secret.read_text() == "hunter2", r
    assert r.stdout.count("blocked") >= 2, r


def reading_outside(ctx) -> None:
    needs("landlock")
    secret = ctx.tmp / "secret.txt"
    secret.write_text("hunter2")
    secret.chmod(0o644)
    r = run(f"""
        for path in [{str(secret)!r}, "/etc/hostname", "../spec.json"]:
            try:
                print(path, open(path).read())
            except OSError as e:
                print(path, "blocked", e.errno)
    """)
    assert "hunter2" not in r.stdout and r.stdout.count("blocked") == 3, r


def kill_everything(ctx) -> None:
    needs("signals")
    host = subprocess.Popen(["sleep", "60"])
    try:
        r = run(f"""
            import os, signal
            for pid in (-1, {host.pid}, {os.getpid()}):
                try:
                    os.kill(pid, signal.SIGKILL)
                    print(pid, "sent")
                except OSError as e:
                    print(pid, "refused", e.errno)
        """)
        assert host.poll() is None, r  # the host's process lives on (and so does this test)
    finally:
        host.kill()
        host.wait()


def left_on_host(marker: str, field: str, *, zombies: bool = True) -> list[str]:
    """PIDs of host processes whose /proc ``field`` (cmdline, comm) holds ``marker``; a zombie
    (killed, not yet reaped) counts unless ``zombies`` is False."""
    left = []
    for p in os.listdir("/proc"):
        try:
            if not zombies and open(f"/proc/{p}/stat", "rb").read().rsplit(b")", 1)[1].split()[0] == b"Z":
                continue
            if marker.encode() in open(f"/proc/{p}/{field}", "rb").read():
                left.append(p)
        except OSError:
            pass
    return left


def orphans(ctx) -> None:
    marker = f"{uuid.uuid4().int % 10**6}.{os.getpid()}"
    r = run(f"""
        import os, subprocess
        if os.fork() == 0:
            os.setsid()
            subprocess.Popen(["sleep", "{marker}"], start_new_session=True)
            os._exit(0)
        print("parent done")
    """)
    assert "parent done" in r.stdout, r
    left = left_on_host(marker, "cmdline")
    assert not left, f"orphans left on the host: {left}"


def forks(ctx, n: int, processes: int | None) -> None:
    needs("processes")
    limits = {"wall_s": 10} | ({"processes": processes} if processes else {})
    r = run(
        f"""
        import os, time
        n = 0
        try:
            while n < {n}:
                if os.fork() == 0:
                    time.sleep(30)
                    os._exit(0)
                n += 1
        except OSError as e:
            print("stopped after", n, e)
    """,
        **limits,
    )
    cap = processes or Limits().processes
    assert "stopped after" in r.stdout, r
    assert int(r.stdout.split()[2]) < cap
    assert r.wall_s < 8  # the sleeping children did not keep the run alive


def new_namespaces(ctx) -> None:
    needs("seccomp")
    r = run("""
        import ctypes, subprocess, sys
        libc = ctypes.CDLL(None, use_errno=True)
        print("unshare", libc.unshare(0x10000000), ctypes.get_errno())  # CLONE_NEWUSER
        print("child", subprocess.run([sys.executable, "-c", "print(7)"], capture_output=True, text=True).stdout.strip())
    """)
    assert "unshare -1 1" in r.stdout and "child 7" in r.stdout, r


def private_root_alone(ctx) -> None:
    """Without Landlock (switched off here) the mount namespace still confines: a read-only root
    holding only the Python installation and system libraries, and a /proc of the sandbox's PIDs."""
    needs("mount")
    override_spec(ctx, landlock=False)
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
    assert "writable [False, False, False, True]" in r.stdout and "exists False False False" in r.stdout, r
    if r.isolation.get("proc") == "private":
        assert "pids [1]" in r.stdout, r.stdout


def no_capabilities(ctx) -> None:
    needs("root")
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


def disk_by_tmpfs(ctx) -> None:
    needs("mount")
    r = run(FILL_DISK, disk_mb=2, wall_s=10)
    assert r.limit == "disk" and "No space left on device" in r.stderr, r
    assert int(r.stdout.split()[-1]) < 4  # at most 2 MiB written


def disk_by_polling(ctx) -> None:
    """Where the launcher cannot give the run a tmpfs, the parent polls the directory and kills."""
    from tfgrpo.tools import _host

    override_spec(ctx, namespaces=False)
    ctx.monkeypatch.setattr(_host, "DISK_POLL_S", 0.05)
    r = run(FILL_DISK, disk_mb=2, wall_s=10)
    # without the poll the run would sleep into the wall-clock limit; how much it wrote before the
    # poll saw it depends on the machine's load, so it is not asserted
    assert r.limit == "disk" and r.isolation.get("mount") is None, r


def init_leaves_its_group(ctx) -> None:
    """The code is its PID namespace's init: setsid took it out of the group the wall-clock kill
    reached, and with its output closed nothing waited for it; the cgroup kill now gets it."""
    needs("processes")  # the pids cgroup is what finds it
    marker = f"sv{uuid.uuid4().int % 10**6}"
    r = run(
        f"""
        import ctypes, os, time
        os.setsid()
        ctypes.CDLL(None).prctl(15, b"{marker}", 0, 0, 0)  # PR_SET_NAME: found by its name below
        os.close(0); os.close(1); os.close(2)
        time.sleep(45)
    """,
        wall_s=2,
    )
    assert r.limit == "wall", r
    time.sleep(0.5)
    assert not left_on_host(marker, "comm", zombies=False), "a process outlived the run"  # killed, reaped or not


def kernel_objects(ctx) -> None:
    """SysV IPC (host-wide without an IPC namespace, its memory outliving the run), memory files
    (uncounted by the address-space limit), vsock (no namespace separates it), kernel settings."""
    needs("seccomp")
    needs("mount")
    r = run("""
        import ctypes, os, socket
        libc = ctypes.CDLL(None, use_errno=True)
        print("shmget", libc.shmget(0x7f6e5d01, 4096, 0o1000 | 0o600))
        print("msgget", libc.msgget(0x7f6e5d02, 0o1000 | 0o600))
        for what, call in (("memfd", lambda: os.memfd_create("x")), ("vsock", lambda: socket.socket(40, socket.SOCK_STREAM)),
                           ("core_pattern", lambda: open("/proc/sys/kernel/core_pattern", "w"))):
            try:
                call()
                print(what, "allowed")
            except OSError as e:
                print(what, "refused", e.errno)
    """)
    assert "shmget -1" in r.stdout and "msgget -1" in r.stdout, r
    assert "allowed" not in r.stdout and r.stdout.count("refused") == 3, r


SB, H, L = "02 sandbox", "held sandbox", "12 lower items"
R = "review sandbox"
CASES = [
    Case(SB, "connect to a host Unix socket file", "not visible, refused, no connection", host_unix_socket),
    Case(
        SB,
        "connect to a host Unix socket file, no mount namespace",
        "refused by seccomp, no connection",
        host_unix_socket_by_seccomp,
    ),
    Case(SB, "unshare a new user namespace", "refused; plain processes still start", new_namespaces),
    Case(
        SB,
        "the root, /tmp and /proc without Landlock",
        "read-only private root, only the sandbox's PIDs",
        private_root_alone,
    ),
    Case(H, "connect to a host abstract Unix socket", "refused, no connection", abstract_socket),
    Case(H, "TCP to a listening loopback server", "refused, nothing accepted", tcp_loopback),
    Case(H, "UDP datagram to a host listener", "nothing arrives", udp_to_the_host, (b"hello",)),
    Case(H, "DNS query to a resolver on the host", "nothing arrives", udp_to_the_host, (DNS_QUERY,)),
    Case(H, "/proc: the host's processes", "none visible", host_processes),
    Case(H, "/dev/shm written", "nothing reaches the host's /dev/shm", dev_shm),
    Case(H, "symlinks to host files", "nothing read", symlinks_out),
    Case(H, "reading host files", "blocked", reading_outside),
    Case(H, "kill(-1) and kill of host PIDs", "host processes live on", kill_everything),
    Case(H, "an orphan in its own session", "none left on the host", orphans),
    Case(H, "500 forks, process limit 16", "stopped under the limit, no child keeps the run alive", forks, (500, 16)),
    Case(
        H,
        "1000 forks, default limits",
        "stopped under the limit, no child keeps the run alive",
        forks,
        (1000, None),
        slow=True,
    ),
    Case(H, "chown and setuid as root", "no capabilities", no_capabilities),
    Case(L, "many files each under the per-file cap (tmpfs)", "stopped at the run's total disk cap", disk_by_tmpfs),
    Case(
        L,
        "many files each under the per-file cap (no mount namespace)",
        "stopped at the run's total disk cap by polling",
        disk_by_polling,
    ),
    Case(
        R,
        "the init leaves its process group (setsid), closes its output and sleeps",
        "killed with the cgroup",
        init_leaves_its_group,
    ),
    Case(R, "SysV shared memory and queues, memfd, vsock, /proc/sys", "refused", kernel_objects),
]


@pytest.mark.parametrize("case", rows(CASES))
def test_hostile_sandbox(case, ctx):
    case.run(ctx)
