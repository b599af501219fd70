"""Sandbox launcher, run as a script: ``python -I -S _confine.py SPEC.json`` (stdlib, plus
``pyseccomp`` from the directory the spec names, where it is installed).

It confines itself and the code it runs, then reports how the code ended:

* its own session, started by the caller (which kills the whole process group on a wall-clock timeout);
* new network and PID namespaces where the kernel lets it (root, or an unprivileged user
  namespace): only a downed loopback interface, and every process dies with the first;
* in the child: a pids cgroup (``pids.max``) and/or RLIMIT_NPROC; a new mount namespace whose
  root is an empty read-only tmpfs holding only read-only binds of the Python installation and
  system libraries, /dev/{null,zero,urandom}, a fresh /proc of the PID namespace and the working
  directory as a size-capped tmpfs (so no host socket file, /tmp or /run can be reached, and the
  disk use of the run is capped); RLIMIT_CPU (SIGKILL at the limit: a PID-namespace init
  ignores SIGXCPU), RLIMIT_AS, RLIMIT_FSIZE, RLIMIT_NOFILE, no core files, ``no_new_privs``, a
  Landlock ruleset (read only the Python installation and system libraries, write only the
  working directory, no TCP bind/connect, no signals or abstract sockets outside the sandbox)
  where the kernel has Landlock, no capabilities, and a seccomp filter refusing kernel interfaces
  with a record of escapes (and new Unix sockets where no mount namespace could be had); then
  ``execve`` of the command with the
  scrubbed environment.

The parent waits and writes ``{"exit_code", "signal", "cpu_s", "max_rss_kb", "applied"}``
to the status path (outside the working directory, which the code cannot read).
"""

import ctypes
import json
import os
import platform
import resource
import shutil
import stat
import sys

CLONE_NEWNS = 0x00020000
CLONE_NEWNET = 0x40000000
CLONE_NEWPID = 0x20000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUTS = 0x04000000
PR_SET_NO_NEW_PRIVS = 38
SYS_LANDLOCK_CREATE_RULESET, SYS_LANDLOCK_ADD_RULE, SYS_LANDLOCK_RESTRICT_SELF = 444, 445, 446
FS_EXECUTE, FS_WRITE_FILE, FS_READ_FILE, FS_READ_DIR = 1, 2, 4, 8
FS_FILE_ONLY = FS_EXECUTE | FS_WRITE_FILE | FS_READ_FILE | (1 << 14) | (1 << 15)  # + truncate, ioctl_dev
NET_BIND_TCP, NET_CONNECT_TCP = 1, 2
SCOPE_ABSTRACT_UNIX, SCOPE_SIGNAL = 1, 2
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_REMOUNT = 1, 2, 4, 8, 32
MS_NOATIME, MS_NODIRATIME, MS_BIND, MS_REC, MS_PRIVATE, MS_RELATIME = 1024, 2048, 4096, 16384, 1 << 18, 1 << 21
MNT_DETACH = 2
# statvfs flags a bind remount must keep (the kernel locks them inside a user namespace) -> MS_*
KEEP_FLAGS = {
    os.ST_RDONLY: MS_RDONLY,
    os.ST_NOSUID: MS_NOSUID,
    os.ST_NODEV: MS_NODEV,
    os.ST_NOEXEC: MS_NOEXEC,
    os.ST_NOATIME: MS_NOATIME,
    os.ST_NODIRATIME: MS_NODIRATIME,
    os.ST_RELATIME: MS_RELATIME,
}
SYS_PIVOT_ROOT = {"x86_64": 155, "aarch64": 41, "riscv64": 41, "ppc64le": 203, "s390x": 217}.get(platform.machine())
PR_CAPBSET_DROP, PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL = 24, 47, 4
# System calls untrusted Python has no use for, each a kernel interface with a record of escapes
# (io_uring also bypasses seccomp for what it does); they fail with EPERM.
DENIED_SYSCALLS = (
    "bpf",
    "perf_event_open",
    "userfaultfd",
    "io_uring_setup",
    "io_uring_enter",
    "io_uring_register",
    "kexec_load",
    "kexec_file_load",
    "init_module",
    "finit_module",
    "delete_module",
    "add_key",
    "request_key",
    "keyctl",
    "unshare",
    "setns",
    "mount",
    "umount2",
    "pivot_root",
    "chroot",
    "move_mount",
    "open_tree",
    "fsopen",
    "fsmount",
    "fsconfig",
    "fspick",
    "mount_setattr",
    "open_by_handle_at",
    "name_to_handle_at",
    "ptrace",
    "process_vm_readv",
    "process_vm_writev",
    "swapon",
    "swapoff",
    "reboot",
    "acct",
    "quotactl",
    "syslog",
    # System V IPC (shared with the host where there is no IPC namespace; its memory outlives
    # the run) and memory files, whose pages no address-space limit counts
    "shmget",
    "shmat",
    "shmctl",
    "shmdt",
    "msgget",
    "msgsnd",
    "msgrcv",
    "msgctl",
    "semget",
    "semop",
    "semctl",
    "semtimedop",
    "memfd_create",
    "memfd_secret",
)
CLONE_NS_FLAGS = (0x00020000, 0x02000000, 0x04000000, 0x08000000, 0x10000000, 0x20000000, 0x40000000)
AF_UNIX, AF_VSOCK, SOCK_DGRAM, SOCK_TYPE_MASK = 1, 40, 2, 0xF

libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long


class _RulesetAttr(ctypes.Structure):
    _fields_ = [("fs", ctypes.c_uint64), ("net", ctypes.c_uint64), ("scoped", ctypes.c_uint64)]


class _PathBeneath(ctypes.Structure):
    _pack_ = 1
    _fields_ = [("allowed", ctypes.c_uint64), ("fd", ctypes.c_int32)]


def _check(rc, what):
    if rc != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def _unshare(flags):
    _check(libc.unshare(flags), "unshare")


def _mount(source, target, fstype, flags, data=None):
    enc = [None if v is None else v.encode() for v in (source, target, fstype, data)]
    _check(libc.mount(enc[0], enc[1], enc[2], ctypes.c_ulong(flags), enc[3]), f"mount {target}")


def _bind_read_only(path, target):
    """Bind ``path`` at ``target`` read-only, keeping the flags the source mount is locked with."""
    if os.path.isdir(path):
        os.makedirs(target, exist_ok=True)
    else:
        os.makedirs(os.path.dirname(target), exist_ok=True)
        open(target, "a").close()
    _mount(path, target, None, MS_BIND | MS_REC)
    keep = os.statvfs(path).f_flag
    flags = MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID
    if not stat.S_ISCHR(os.stat(path).st_mode):  # /dev/null and the like stay usable
        flags |= MS_NODEV
    flags |= sum(ms for st, ms in KEEP_FLAGS.items() if keep & st)
    _mount(None, target, None, flags)


def build_root(spec, applied):
    """A new mount namespace and, at ``spec["root"]``, a tree holding only what the code may
    see (read-only binds), a fresh /proc and the working directory as a tmpfs of ``disk_bytes``."""
    if SYS_PIVOT_ROOT is None:
        raise OSError(0, f"no pivot_root number known for {platform.machine()}")
    _unshare(CLONE_NEWNS)
    _mount(None, "/", None, MS_REC | MS_PRIVATE)  # nothing propagates back to the host
    new, lim = spec["root"], spec["limits"]
    _mount("tfgrpo-root", new, "tmpfs", MS_NOSUID | MS_NODEV, "size=1m,nr_inodes=4096,mode=0755")
    done = []
    for path in sorted(set(spec["read_paths"])):
        if not os.path.lexists(path) or any(path.startswith(d.rstrip("/") + "/") for d in done):
            continue  # a path this machine does not have, or one already inside a bound directory
        target = new + path
        if os.path.islink(path):  # /lib -> usr/lib: the same link, resolved inside the new root
            os.makedirs(os.path.dirname(target), exist_ok=True)
            os.symlink(os.readlink(path), target)
            continue
        _bind_read_only(path, target)
        done.append(path)
    work = new + spec["workdir"]
    os.makedirs(work)
    _mount(
        "tfgrpo-work",
        work,
        "tmpfs",
        MS_NOSUID | MS_NODEV,
        f"size={lim['disk_bytes']},nr_inodes={lim['disk_files']},mode=0700",
    )
    os.makedirs(new + "/proc")
    try:
        _mount("proc", new + "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
        applied["proc"] = "private"
        for ro in ("/proc/sys", "/proc/sysrq-trigger"):  # the host's kernel settings (core_pattern, ...): read-only
            try:
                _bind_read_only(new + ro, new + ro)
            except OSError:
                pass
    except OSError as e:  # e.g. a container that masks parts of the host's /proc
        applied["proc"] = f"none ({e})"


def enter_root(spec, applied):
    """Copy the run's files into its tmpfs, make the built tree the root and detach the host's:
    no socket file, /tmp or /run of the host can be reached from inside any more. A failure
    here (files over the disk limit, say) stops the run rather than run it less confined."""
    shutil.copytree(spec["workdir"], spec["root"] + spec["workdir"], symlinks=True, dirs_exist_ok=True)
    os.chdir(spec["root"])
    _check(libc.syscall(SYS_PIVOT_ROOT, b".", b"."), "pivot_root")
    _check(libc.umount2(b".", MNT_DETACH), "umount old root")
    os.chdir("/")
    _mount(None, "/", None, MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV)
    applied["mount"] = "private root"


def drop_capabilities():
    """No capabilities for the code, even when the caller is root: empty bounding, ambient,
    inheritable, permitted and effective sets (so ``execve`` grants none back)."""
    cap = 0
    while libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) == 0:
        cap += 1
    libc.prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0)
    header = (ctypes.c_uint32 * 2)(0x20080522, 0)  # _LINUX_CAPABILITY_VERSION_3, this thread
    data = (ctypes.c_uint32 * 6)()
    _check(libc.capset(header, data), "capset")


def enter_namespaces(applied):
    """Network + PID namespaces: directly as root, else through a user namespace."""
    uid, gid = os.getuid(), os.getgid()
    try:
        _unshare(CLONE_NEWNET | CLONE_NEWPID | CLONE_NEWIPC | CLONE_NEWUTS)
        applied["namespaces"] = "net+pid+ipc+uts"
        return
    except OSError as e:
        applied["namespaces_error"] = str(e)
    try:
        _unshare(CLONE_NEWUSER | CLONE_NEWNET | CLONE_NEWPID | CLONE_NEWIPC | CLONE_NEWUTS)
        with open("/proc/self/setgroups", "w") as f:
            f.write("deny")
        with open("/proc/self/uid_map", "w") as f:
            f.write(f"{uid} {uid} 1")
        with open("/proc/self/gid_map", "w") as f:
            f.write(f"{gid} {gid} 1")
        applied["namespaces"] = "user+net+pid+ipc+uts"
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
    attr = _RulesetAttr(
        fs_all, NET_BIND_TCP | NET_CONNECT_TCP if abi >= 4 else 0, SCOPE_ABSTRACT_UNIX | SCOPE_SIGNAL if abi >= 6 else 0
    )
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


def import_pyseccomp(spec, applied):
    """pyseccomp, imported before the private root hides ldconfig and libseccomp's path; None
    where it or libseccomp is missing (the launcher runs with -S: its directory is in the spec)."""
    try:
        sys.path.append(spec["seccomp_module"])
        import pyseccomp  # noqa: PLC0415

        return pyseccomp
    except (ImportError, RuntimeError, OSError) as e:
        applied["seccomp"] = None
        applied["seccomp_error"] = f"{type(e).__name__}: {e}"
        return None


def seccomp(sc, applied):
    """A seccomp filter (libseccomp, through pyseccomp) denying :data:`DENIED_SYSCALLS` and new
    namespaces; without the private root also new Unix sockets, the one way left to a host
    socket file (socketpair stays: asyncio and multiprocessing pipes need it; a datagram pair,
    which could be re-addressed, does not). Other architectures' system calls kill the process."""
    deny = sc.ERRNO(1)
    f = sc.SyscallFilter(sc.ALLOW)
    for name in DENIED_SYSCALLS:
        try:
            f.add_rule(deny, name)
        except (OSError, ValueError):
            continue  # not a system call on this architecture
    f.add_rule(sc.ERRNO(38), "clone3")  # ENOSYS: the C library falls back to clone, whose flags can be checked
    if platform.machine() in ("x86_64", "aarch64"):  # clone's flags are its first argument there
        for flag in CLONE_NS_FLAGS:
            f.add_rule(deny, "clone", sc.Arg(0, sc.MASKED_EQ, flag, flag))
    f.add_rule(sc.ERRNO(97), "socket", sc.Arg(0, sc.EQ, AF_VSOCK))  # EAFNOSUPPORT: no namespace separates vsock
    if applied.get("mount") is None:
        f.add_rule(sc.ERRNO(13), "socket", sc.Arg(0, sc.EQ, AF_UNIX))
        f.add_rule(
            sc.ERRNO(13), "socketpair", sc.Arg(0, sc.EQ, AF_UNIX), sc.Arg(1, sc.MASKED_EQ, SOCK_TYPE_MASK, SOCK_DGRAM)
        )
    try:
        f.load()
    except OSError as e:  # a kernel without seccomp filters
        applied["seccomp"] = None
        applied["seccomp_error"] = str(e)
        return
    applied["seccomp"] = "deny-list" + ("" if applied.get("mount") else " + no new Unix sockets")


def child(spec, applied, report, sc):
    lim = spec["limits"]
    if spec.get("cgroup"):
        with open(os.path.join(spec["cgroup"], "cgroup.procs"), "w") as f:
            f.write("0")
    if applied.get("namespaces"):
        try:
            build_root(spec, applied)
        except OSError as e:  # still the host's root: run with Landlock alone
            applied["mount"] = None
            applied["mount_error"] = str(e)
        else:
            enter_root(spec, applied)
    # soft = hard: SIGKILL at the limit (SIGXCPU at a soft limit is ignored by a PID-namespace init)
    resource.setrlimit(resource.RLIMIT_CPU, (lim["cpu_s"], lim["cpu_s"]))
    resource.setrlimit(resource.RLIMIT_AS, (lim["memory_bytes"], lim["memory_bytes"]))
    resource.setrlimit(resource.RLIMIT_FSIZE, (lim["file_bytes"], lim["file_bytes"]))
    resource.setrlimit(resource.RLIMIT_NOFILE, (lim["open_files"], lim["open_files"]))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    if spec.get("nproc"):
        resource.setrlimit(resource.RLIMIT_NPROC, (spec["nproc"], spec["nproc"]))
    os.chdir(spec["workdir"])
    if spec.get("landlock"):
        landlock(spec["read_paths"], [spec["workdir"]], applied)
    drop_capabilities()
    if sc is not None:
        seccomp(sc, applied)
    cmd = spec["cmd"]
    report(applied)
    os.execve(cmd[0], cmd, spec["env"])


def main():
    with open(sys.argv[1]) as f:
        spec = json.load(f)
    applied = {}  # the caller started us as a session leader (start_new_session)
    # before the PID namespace: finding libseccomp runs ldconfig, which would become its init and die
    sc = import_pyseccomp(spec, applied) if spec.get("seccomp_module") else None
    if spec.get("namespaces"):
        enter_namespaces(applied)
    r, w = os.pipe()  # the child reports what it applied, or what failed, before it execs (CLOEXEC)
    pid = os.fork()
    if pid == 0:
        os.close(r)

        def report(what):
            os.write(w, json.dumps(what).encode() + b"\n")

        try:
            child(spec, applied, report, sc)
        except BaseException as e:  # noqa: BLE001 - report and never run the code unconfined
            report({"setup_error": f"{type(e).__name__}: {e}"})
            os._exit(126)
    os.close(w)
    _, status, usage = os.wait4(pid, 0)
    with os.fdopen(r, "rb") as lines:
        for line in lines:
            applied.update(json.loads(line))
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
