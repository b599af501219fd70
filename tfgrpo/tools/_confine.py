"""Sandbox launcher, run as a script (stdlib only): ``python -I -S _confine.py SPEC.json``.

It confines itself and the code it runs, then reports how the code ended:

* its own session, started by the caller (which kills the whole process group on a wall-clock timeout);
* new network and PID namespaces where the kernel lets it (root, or an unprivileged user
  namespace): only a downed loopback interface, and every process dies with the first;
* in the child: a pids cgroup (``pids.max``) and/or RLIMIT_NPROC, RLIMIT_CPU, RLIMIT_AS,
  RLIMIT_FSIZE, RLIMIT_NOFILE, no core files, ``no_new_privs`` and a Landlock ruleset (read
  only the Python installation and system libraries, write only the working directory, no
  TCP bind/connect, no signals or abstract sockets outside the sandbox) where the kernel
  has Landlock; then ``execve`` of the command with the scrubbed environment.

The parent waits and writes ``{"exit_code", "signal", "cpu_s", "max_rss_kb", "applied"}``
to the status path (outside the working directory, which the code cannot read).
"""

import ctypes
import json
import os
import resource
import sys

CLONE_NEWNET = 0x40000000
CLONE_NEWPID = 0x20000000
CLONE_NEWUSER = 0x10000000
PR_SET_NO_NEW_PRIVS = 38
SYS_LANDLOCK_CREATE_RULESET, SYS_LANDLOCK_ADD_RULE, SYS_LANDLOCK_RESTRICT_SELF = 444, 445, 446
FS_EXECUTE, FS_WRITE_FILE, FS_READ_FILE, FS_READ_DIR = 1, 2, 4, 8
FS_FILE_ONLY = FS_EXECUTE | FS_WRITE_FILE | FS_READ_FILE | (1 << 14) | (1 << 15)  # + truncate, ioctl_dev
NET_BIND_TCP, NET_CONNECT_TCP = 1, 2
SCOPE_ABSTRACT_UNIX, SCOPE_SIGNAL = 1, 2

libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long


class _RulesetAttr(ctypes.Structure):
    _fields_ = [("fs", ctypes.c_uint64), ("net", ctypes.c_uint64), ("scoped", ctypes.c_uint64)]


class _PathBeneath(ctypes.Structure):
    _pack_ = 1
    _fields_ = [("allowed", ctypes.c_uint64), ("fd", ctypes.c_int32)]


def _unshare(flags):
    if libc.unshare(flags) != 0:
        raise OSError(ctypes.get_errno(), os.strerror(ctypes.get_errno()))


def enter_namespaces(applied):
    """Network + PID namespaces: directly as root, else through a user namespace."""
    uid, gid = os.getuid(), os.getgid()
    try:
        _unshare(CLONE_NEWNET | CLONE_NEWPID)
        applied["namespaces"] = "net+pid"
        return
    except OSError as e:
        applied["namespaces_error"] = str(e)
    try:
        _unshare(CLONE_NEWUSER | CLONE_NEWNET | CLONE_NEWPID)
        with open("/proc/self/setgroups", "w") as f:
            f.write("deny")
        with open("/proc/self/uid_map", "w") as f:
            f.write(f"{uid} {uid} 1")
        with open("/proc/self/gid_map", "w") as f:
            f.write(f"{gid} {gid} 1")
        applied["namespaces"] = "user+net+pid"
    except OSError as e:
        applied["namespaces"] = None
        applied["namespaces_error"] = str(e)


def landlock(read_paths, write_paths, applied):
    abi = libc.syscall(SYS_LANDLOCK_CREATE_RULESET, None, 0, 1)
    if abi < 1:
        applied["landlock"] = None
        return
    fs_all = (1 << 13) - 1
    if abi >= 2:
        fs_all |= 1 << 13
    if abi >= 3:
        fs_all |= 1 << 14
    if abi >= 5:
        fs_all |= 1 << 15
    attr = _RulesetAttr(fs_all, NET_BIND_TCP | NET_CONNECT_TCP if abi >= 4 else 0,
                        SCOPE_ABSTRACT_UNIX | SCOPE_SIGNAL if abi >= 6 else 0)
    size = 8 if abi < 4 else 16 if abi < 6 else 24
    rfd = libc.syscall(SYS_LANDLOCK_CREATE_RULESET, ctypes.byref(attr), size, 0)
    if rfd < 0:
        raise OSError(ctypes.get_errno(), "landlock_create_ruleset")
    rules = [(p, FS_EXECUTE | FS_READ_FILE | FS_READ_DIR) for p in read_paths] + [(p, fs_all) for p in write_paths]
    for path, access in rules:
        try:
            fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
        except OSError:
            continue  # a path this machine does not have
        if not os.path.isdir(path):
            access &= FS_FILE_ONLY
        rule = _PathBeneath(access & fs_all, fd)
        rc = libc.syscall(SYS_LANDLOCK_ADD_RULE, rfd, 1, ctypes.byref(rule), 0)
        os.close(fd)
        if rc != 0:
            raise OSError(ctypes.get_errno(), f"landlock_add_rule {path}")
    if libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(no_new_privs)")
    if libc.syscall(SYS_LANDLOCK_RESTRICT_SELF, rfd, 0) != 0:
        raise OSError(ctypes.get_errno(), "landlock_restrict_self")
    applied["landlock"] = abi


def child(spec, applied):
    lim = spec["limits"]
    if spec.get("cgroup"):
        with open(os.path.join(spec["cgroup"], "cgroup.procs"), "w") as f:
            f.write("0")
    resource.setrlimit(resource.RLIMIT_CPU, (lim["cpu_s"], lim["cpu_s"] + 1))
    resource.setrlimit(resource.RLIMIT_AS, (lim["memory_bytes"], lim["memory_bytes"]))
    resource.setrlimit(resource.RLIMIT_FSIZE, (lim["file_bytes"], lim["file_bytes"]))
    resource.setrlimit(resource.RLIMIT_NOFILE, (lim["open_files"], lim["open_files"]))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    if spec.get("nproc"):
        resource.setrlimit(resource.RLIMIT_NPROC, (spec["nproc"], spec["nproc"]))
    os.chdir(spec["workdir"])
    if spec.get("landlock"):
        landlock(spec["read_paths"], [spec["workdir"]], applied)
    cmd = spec["cmd"]
    os.execve(cmd[0], cmd, spec["env"])


def main():
    with open(sys.argv[1]) as f:
        spec = json.load(f)
    applied = {}  # the caller started us as a session leader (start_new_session)
    if spec.get("namespaces"):
        enter_namespaces(applied)
    r, w = os.pipe()  # the child reports what it could not apply before it execs
    pid = os.fork()
    if pid == 0:
        os.close(r)
        try:
            child(spec, applied)
        except BaseException as e:  # noqa: BLE001 - report and never run the code unconfined
            os.write(w, json.dumps({"setup_error": f"{type(e).__name__}: {e}"}).encode())
            os._exit(126)
    os.close(w)
    _, status, usage = os.wait4(pid, 0)
    setup = os.read(r, 65536)
    if setup:
        applied.update(json.loads(setup))
    report = {
        "exit_code": os.WEXITSTATUS(status) if os.WIFEXITED(status) else None,
        "signal": os.WTERMSIG(status) if os.WIFSIGNALED(status) else None,
        "cpu_s": usage.ru_utime + usage.ru_stime,
        "max_rss_kb": usage.ru_maxrss,
        "applied": applied,
    }
    with open(spec["status_path"], "w") as f:
        json.dump(report, f)


if __name__ == "__main__":
    main()
