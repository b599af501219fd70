"""Areas r3 05 and r3 09 of issue 23. A tracker is an observer: an MLflow server that answers 503,
drops connections, stops answering or asks for an hour's wait, a TensorBoard directory on a full
disk, a tracker that raises: the failure is logged once, the tracker dropped, training goes on,
and no tracker holds a run up for minutes. A full disk at any write of a run (its JSONL records,
the library's versions and Chroma index, the response cache, status and config, an evaluation's
results) is one line and exit 2, a failed start leaves nothing behind, and ``--resume`` after
space is freed ends with the library of an uninterrupted run. The real full disk is a small
tmpfs (skipped where mounting is not permitted); the same failures are also injected in-process,
so they are checked everywhere."""

from __future__ import annotations

import builtins
import contextlib
import errno
import io
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import types
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Self

import pytest
from cli_helpers import CMD, ENV, committed, last_json, tfgrpo, tfgrpo_in_process
from hostile_rows import Case, rows
from test_hostile_runs import comparable, final_state

TRACK, DISK = "r3 05 trackers", "r3 09 full disk"


def train_args(epochs: int, *more: str) -> list[str]:
    return ["train", "--task", "demo", "--model", "sim", "--epochs", str(epochs), "-q", *more]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """``get(epochs, *more)``: the run directory of an uninterrupted run of ``train_args(epochs,
    *more)`` without trackers (made once each)."""
    made: dict[tuple, Path] = {}

    def get(epochs: int, *more: str) -> Path:
        if (epochs, *more) not in made:
            made[(epochs, *more)] = tmp_path_factory.mktemp("reference") / "run"
            tfgrpo_in_process(*train_args(epochs, *more), "--out", str(made[(epochs, *more)]))
        return made[(epochs, *more)]

    return get


def same_run(ctx, run: Path, epochs: int, *more: str) -> None:
    """``run`` ended with the library and records of an uninterrupted run."""
    ref = ctx.request.getfixturevalue("uninterrupted")(epochs, *more)
    assert final_state(run)["experiences"] == final_state(ref)["experiences"]
    for name in ("rollouts.jsonl", "groups.jsonl", "ops.jsonl", "steps.jsonl"):
        assert comparable(run, name) == comparable(ref, name), name


def done(run: Path) -> int:
    """How many steps ``run`` has committed, as a resume reads them (a torn last line is none)."""
    from tfgrpo.rundir import RunDir

    return len(RunDir(run).steps())


def one_error(proc) -> str:
    """The one ``error:`` line of a command that ended with exit status 2 and no traceback."""
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr and "Exception ignored" not in proc.stderr, proc.stderr[-3000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, proc.stderr[-3000:]
    return errors[0]


def leftovers(path: Path) -> list[str]:
    """Half-written files (an atomic write's temporary, SQLite's journal files) under ``path``."""
    return sorted(
        str(p.relative_to(path)) for p in path.rglob("*") if p.name.endswith((".tmp", ".restore", "-wal", "-shm"))
    )


# ------------------------------------------------------------------ a tracking server that fails


class FakeMlflow:
    """A loopback MLflow tracking server answering the REST calls tfgrpo makes. Metric batches
    after the first ``after`` (every request when ``after`` is negative; the final status update
    when ``at_end``) fail as ``fail`` says: ``503``, ``drop`` (the connection closed unanswered),
    ``hang`` (no answer), ``retry-after`` (503 asking for an hour's wait)."""

    def __init__(self, fail: str, after: int = 0, at_end: bool = False):
        self.fail, self.after, self.at_end, self.metric_batches, self.calls = fail, after, at_end, 0, []
        self.steps: list[int] = []  # the step of each metric batch received
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:
                pass

            def do_GET(self) -> None:
                self.answer()

            def do_POST(self) -> None:
                self.answer()

            def answer(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
                path = self.path.split("?")[0].rsplit("/mlflow/", 1)[-1]
                server.calls.append(path)
                if path == "runs/log-batch" and body.get("metrics"):
                    server.metric_batches += 1
                    server.steps.append(int(body["metrics"][0]["step"]))
                if (
                    server.after < 0
                    or (path == "runs/log-batch" and body.get("metrics") and server.metric_batches > server.after)
                    or (server.at_end and path == "runs/update")
                ):
                    return self.failing()
                info = {
                    "run_id": "r1",
                    "run_uuid": "r1",
                    "experiment_id": "1",
                    "status": "RUNNING",
                    "start_time": 0,
                    "lifecycle_stage": "active",
                    "artifact_uri": "",
                    "run_name": "run",
                }
                reply = {
                    "experiments/get-by-name": {"experiment": {"experiment_id": "1", "name": "tfgrpo"}},
                    "runs/create": {"run": {"info": info, "data": {}}},
                    "runs/update": {"run_info": {**info, "status": body.get("status")}},
                }.get(path, {})
                self.send(200, reply)

            def failing(self) -> None:
                if server.fail == "drop":
                    self.close_connection = True
                    self.connection.close()
                elif server.fail == "hang":
                    time.sleep(3600)
                else:
                    wait = {"Retry-After": "3600"} if server.fail == "retry-after" else {}
                    self.send(503, {"error_code": "TEMPORARILY_UNAVAILABLE", "message": "overloaded"}, wait)

            def send(self, code: int, reply: dict, headers: dict | None = None) -> None:
                data = json.dumps(reply).encode()
                self.send_response(code)
                for key, value in {"Content-Type": "application/json", **(headers or {})}.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def mlflow_env(url: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in ENV.items() if not k.startswith(("MLFLOW_", "WANDB_"))}
    return {
        **env,
        "MLFLOW_TRACKING_URI": url,
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "DO_NOT_TRACK": "1",
        "NO_PROXY": "127.0.0.1,localhost",
        "no_proxy": "127.0.0.1,localhost",
        **extra,
    }


def warned_once(stderr: str, kind: str) -> None:
    said = [line for line in stderr.splitlines() if f"--report-to {kind}" in line]
    assert len(said) == 1 and "Traceback" not in stderr and "Exception ignored" not in stderr, stderr[-3000:]


def train_reporting_to(server, run: Path, *flags: str, **env: str) -> tuple[subprocess.CompletedProcess, float]:
    """A small run into ``run`` reporting to the MLflow ``server``, and how long it took."""
    started = time.monotonic()
    proc = tfgrpo(*train_args(1), "--out", str(run), "--report-to", "mlflow", *flags,
                  env=mlflow_env(server.url, **env), check=False, timeout=90)  # fmt: skip
    return proc, time.monotonic() - started


def mlflow_fails_mid_run(ctx, fail: str, retries: str | None, at_end: bool = False) -> None:
    """Steps 1 and 2 are logged, then the server fails: the run still ends with every step."""
    run = ctx.tmp / "run"
    extra = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": retries} if retries is not None else {}
    with FakeMlflow(fail, after=99 if at_end else 2, at_end=at_end) as server:
        proc, took = train_reporting_to(server, run, "--json", **extra)
    assert proc.returncode == 0, proc.stderr[-3000:]
    warned_once(proc.stderr, "mlflow")
    assert last_json(proc)["steps"] == 4 and json.loads((run / "status.json").read_text())["status"] == "finished"
    assert took < 60, f"the tracker held the run up for {took:.0f} s"
    if not at_end:  # dropped: no step after the failing one is sent, nor a final status
        assert "runs/update" not in server.calls and max(server.steps) == 3, server.calls
    same_run(ctx, run, 1)


def mlflow_fails_at_start(ctx) -> None:
    run = ctx.tmp / "run"
    with FakeMlflow("503", after=-1) as server:
        proc, took = train_reporting_to(server, run)
    assert "--report-to mlflow" in one_error(proc)
    assert took < 45, f"the tracker held the start up for {took:.0f} s"
    assert not run.exists()  # a failed start leaves nothing


@contextlib.contextmanager
def tmpfs(path: Path, size: str):
    """A small tmpfs mounted at ``path``: a real filesystem that fills up (skipped where mounting
    is not permitted)."""
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a tmpfs needs root and mount(8)")
    got = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], check=False, capture_output=True, text=True
    )
    if got.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {got.stderr.strip()[:200]}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False, capture_output=True)


def fill(mount: Path, leave: int = 0) -> Path:
    """A ballast file that leaves at most ``leave`` bytes free on ``mount``."""
    ballast = mount / "ballast"
    fd = os.open(ballast, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    try:
        st = os.statvfs(mount)
        todo = st.f_bavail * st.f_frsize - leave
        while todo > 0:
            todo -= os.write(fd, b"\0" * min(todo, 1 << 20))
    except OSError as e:
        assert e.errno == errno.ENOSPC
    finally:
        os.close(fd)
    return ballast


def paused_then_full(run: Path, mount: Path, args: list[str], after: int) -> subprocess.CompletedProcess:
    """Run ``args``; once ``after`` steps have committed, stop it, fill ``mount``, let it go on."""
    proc = subprocess.Popen([*CMD, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
    deadline = time.monotonic() + 120
    while committed(run) < after and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.002)
    os.kill(proc.pid, signal.SIGSTOP)
    fill(mount)
    os.kill(proc.pid, signal.SIGCONT)
    out, err = proc.communicate(timeout=180)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def tensorboard_disk_fills(ctx) -> None:
    """RUN/tensorboard on its own tmpfs, filled after step 2 of 16 (the event file outgrows its
    page on the way): the run still ends with every step."""
    run, small = ctx.tmp / "run", ("--batch-size", "2")
    with tmpfs(run / "tensorboard", "256k") as board:
        proc = paused_then_full(
            run, board, [*train_args(1, *small), "--out", str(run), "--report-to", "tensorboard"], 2
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
        warned_once(proc.stderr, "tensorboard")
        assert done(run) == 16
    same_run(ctx, run, 1, *small)


def fake_wandb(ctx, fail_from: int | None = None, finish_error: Exception | None = None) -> list:
    """A ``wandb`` module whose run raises ENOSPC from step ``fail_from`` on (a tracker writing to a
    full disk), or whose finish raises ``finish_error``; returns the calls it got."""
    calls: list = []

    class Run:
        def log(self, metrics: dict, step: int) -> None:
            calls.append(step)
            if fail_from is not None and step >= fail_from:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), "wandb/run.wandb")

        def finish(self, exit_code: int = 0) -> None:
            calls.append(("finish", exit_code))
            if finish_error is not None:
                raise finish_error

    module = types.ModuleType("wandb")
    module.init = lambda **kwargs: Run()
    ctx.monkeypatch.setitem(sys.modules, "wandb", module)
    return calls


def tracker_raises_mid_run(ctx) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from tfgrpo import api
    from tfgrpo.training_free.config import RunConfig

    caplog = ctx.request.getfixturevalue("caplog")
    caplog.set_level(logging.WARNING, logger="tfgrpo")
    calls = fake_wandb(ctx, fail_from=3)
    cfg = RunConfig(task="demo", epochs=1, policy={"model": "sim"}, report_to="wandb,tensorboard")
    result = api.train(cfg, out=ctx.tmp / "run")
    assert len(result.steps) == 4
    assert calls == [1, 2, 3]  # dropped after its failure: no later step, no finish
    said = [r.getMessage() for r in caplog.records if r.name.startswith("tfgrpo.tracking")]
    assert len(said) == 1 and "--report-to wandb" in said[0] and "\n" not in said[0], said
    board = EventAccumulator(str(ctx.tmp / "run" / "tensorboard"))
    board.Reload()
    assert [e.step for e in board.Scalars("train/mean_reward")] == [1, 2, 3, 4]  # the other tracker went on
    same_run(ctx, ctx.tmp / "run", 1)


def close_fails_after_a_failed_run(ctx) -> None:
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient

    from tfgrpo.tracking import trackers

    store = (ctx.tmp / "mlruns").as_uri()
    for key, value in {
        "MLFLOW_TRACKING_URI": store,
        "MLFLOW_ALLOW_FILE_STORE": "true",
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "MLFLOW_EXPERIMENT_NAME": "mine",
    }.items():
        ctx.monkeypatch.setenv(key, value)
    ctx.monkeypatch.delenv("MLFLOW_EXPERIMENT_ID", raising=False)
    calls = fake_wandb(ctx, finish_error=ConnectionError("wandb service gone"))
    with (
        pytest.raises(RuntimeError, match="^boom$"),  # the run's own error, not the tracker's
        trackers(["mlflow", "wandb"], ctx.tmp / "run", {"task": "demo"}) as log,
    ):
        log(1, {"mean_reward": 0.5})
        raise RuntimeError("boom")
    assert calls == [1, ("finish", 1)]
    client = MlflowClient(tracking_uri=store)
    (run,) = client.search_runs([client.get_experiment_by_name("mine").experiment_id])
    assert run.info.status == "FAILED"  # closed although the tracker closed before it raised


# ------------------------------------------------------------------------------- a full disk


def full_disk_mid_run(ctx, *more: str) -> None:
    """A real disk filled after step 2 of 8: one line; a resume on the still-full disk is one line
    and loses nothing; after space is freed the resume ends as an uninterrupted run. (Without the
    response cache, the records and Chroma's index are what finds the disk full.)"""
    disk = ctx.tmp / "disk"
    with tmpfs(disk, "8m"):
        run = disk / "run"
        line = one_error(paused_then_full(run, disk, [*train_args(2, *more), "--out", str(run)], 2))
        assert "no space left on device" in line.lower() and f"tfgrpo train --resume {run}" in line, line
        finished = done(run)
        assert 2 <= finished < 8
        again = tfgrpo("train", "--resume", str(run), check=False)
        assert "no space left on device" in one_error(again).lower() and done(run) == finished
        (disk / "ballast").unlink()
        resumed = last_json(tfgrpo("train", "--resume", str(run), "--json", "-q"))
        assert resumed["steps"] == 8 and resumed["resumed_from_step"] == finished
        assert leftovers(run) == []
        same_run(ctx, run, 2)


def full_disk_at_start(ctx, leave: int) -> None:
    """The disk is (nearly) full before the run starts: one line, nothing left behind, and the
    same command works once space is freed."""
    disk = ctx.tmp / "disk"
    with tmpfs(disk, "16m"):
        run = disk / "run"
        fill(disk, leave)
        line = one_error(tfgrpo(*train_args(1), "--out", str(run), check=False))
        assert "no space left on device" in line.lower(), line
        assert not run.exists(), sorted(p.name for p in run.iterdir())
        (disk / "ballast").unlink()
        assert last_json(tfgrpo(*train_args(1), "--out", str(run), "--json"))["steps"] == 4
        assert leftovers(run) == []


class _FullFile:
    """A file on a disk that just filled up: half of a write lands, then ENOSPC, as the kernel says."""

    def __init__(self, f, path) -> None:
        self._f, self._path = f, path

    def write(self, data):
        self._f.write(data[: len(data) // 2])
        self._f.flush()
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(self._path))

    def writelines(self, lines) -> None:
        lines = list(lines)
        self.write(lines[0][:0].join(lines))

    def __getattr__(self, name: str):
        return getattr(self._f, name)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        self._f.close()


@contextlib.contextmanager
def file_fills(name: str, nth: int):
    """The ``nth`` time a file named ``name`` is opened for writing, the disk fills up under it."""
    real, opened = io.open, [0]

    def opener(file, mode="r", *args, **kwargs):
        f = real(file, mode, *args, **kwargs)
        if isinstance(file, (str, os.PathLike)) and Path(file).name == name and set(mode) & set("wax+"):
            opened[0] += 1
            if opened[0] == nth:
                return _FullFile(f, file)
        return f

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(io, "open", opener)
        mp.setattr(builtins, "open", opener)
        yield


@contextlib.contextmanager
def cache_fills(after_puts: int):
    """The response cache's SQLite database is full after ``after_puts`` rows (SQLite's own
    SQLITE_FULL, by capping the database at the pages it has)."""
    from tfgrpo.llm.cache import ResponseCache

    real, puts = ResponseCache.put, [0]

    def put(self, *args, **kwargs):
        puts[0] += 1
        if puts[0] == after_puts:
            pages = self._db.execute("PRAGMA page_count").fetchone()[0]
            self._db.execute(f"PRAGMA max_page_count = {pages}")
        return real(self, *args, **kwargs)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(ResponseCache, "put", put)
        yield


@contextlib.contextmanager
def chroma_fills(at_step: int):
    """Chroma's index finds its database full when it takes the library of ``at_step`` (the
    error Chroma raised on the full tmpfs)."""
    import chromadb.errors

    from experience_store.chroma_index import ChromaIndex

    real = ChromaIndex.sync

    def sync(self, state):
        if state.step == at_step:
            raise chromadb.errors.InternalError("error returned from database: (code: 13) database or disk is full")
        return real(self, state)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(ChromaIndex, "sync", sync)
        yield


FULL_AT = {  # where the disk fills: (injection, its argument, whether a step finished before)
    "rollouts.jsonl at step 3": (file_fills, ("rollouts.jsonl", 3), True),
    "ops.jsonl at step 2": (file_fills, ("ops.jsonl", 2), True),
    "steps.jsonl (the commit line) at step 3": (file_fills, ("steps.jsonl", 3), True),
    "the library version of step 3": (file_fills, ("000003.tmp", 1), True),
    "Chroma's index at step 3": (chroma_fills, (3,), True),
    "the response cache (SQLite full) mid-run": (cache_fills, (150,), True),
    "status.json after the last step": (file_fills, ("status.json.tmp", 2), True),
    "config.yaml at the start": (file_fills, ("config.yaml.tmp", 1), False),
    "Chroma's index at the start": (chroma_fills, (0,), False),
}


def full_disk_injected(ctx, where: str) -> None:
    fills, args, resumable = FULL_AT[where]
    run = ctx.tmp / "run"
    with fills(*args):
        line = one_error(tfgrpo_in_process(*train_args(1), "--out", str(run), check=False))
    assert "no space left on device" in line.lower(), line
    if not resumable:
        assert not run.exists(), sorted(p.name for p in run.iterdir())
        assert last_json(tfgrpo_in_process(*train_args(1), "--out", str(run), "--json"))["steps"] == 4
    else:
        assert f"every finished step is saved: tfgrpo train --resume {run}" in line, line
        finished = done(run)
        resumed = last_json(tfgrpo_in_process("train", "--resume", str(run), "--json", "-q"))
        assert resumed["steps"] == 4 and resumed["resumed_from_step"] == finished
        assert json.loads((run / "status.json").read_text())["status"] == "finished"
    assert leftovers(run) == []
    same_run(ctx, run, 1)


def cache_cannot_be_made(ctx) -> None:
    """The response cache's first write finds the disk full: one line, and no cache.sqlite,
    -wal or -shm left behind (the start made the directory, so it goes too)."""
    import sqlite3

    real = sqlite3.connect

    class Full:
        def __init__(self, db) -> None:
            self._db = db

        def execute(self, sql, *args):
            if sql.startswith("CREATE TABLE"):
                raise sqlite3.OperationalError("database or disk is full")
            return self._db.execute(sql, *args)

        def __getattr__(self, name):
            return getattr(self._db, name)

    def connect(path, *args, **kwargs):
        db = real(path, *args, **kwargs)
        return Full(db) if str(path).endswith("cache.sqlite") else db

    run = ctx.tmp / "run"
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(sqlite3, "connect", connect)
        line = one_error(tfgrpo_in_process(*train_args(1), "--out", str(run), check=False))
    assert "no space left on device" in line.lower() and "cache.sqlite" in line, line
    assert not run.exists(), sorted(p.name for p in run.iterdir())


def eval_on_a_full_disk(ctx) -> None:
    """An evaluation whose results cannot be written where asked: no traceback, no half-written
    file there, and the answers are either kept elsewhere (named on stderr) or the error is one line."""
    run, saved = ctx.request.getfixturevalue("uninterrupted")(1), ctx.tmp / "evals"
    with file_fills("results.jsonl.tmp", 1):
        proc = tfgrpo_in_process(
            "eval", "--library", str(run), "-k", "1", "-n", "1", "-q", "--save-dir", str(saved), check=False
        )
    if proc.returncode == 2:
        assert "no space left on device" in one_error(proc).lower()
    else:
        assert proc.returncode == 0, proc.stderr[-3000:]
        kept = [Path(w) for w in proc.stderr.split() if (Path(w) / "results.jsonl").is_file()]
        assert kept and not kept[0].is_relative_to(saved), proc.stderr[-3000:]
    assert leftovers(saved) == [] and leftovers(run) == []


CASES = [
    *(
        Case(
            TRACK,
            f"MLflow server: {what}",
            "logged once, dropped; every step runs, in under a minute",
            mlflow_fails_mid_run,
            args,
            slow=True,
        )
        for what, args in (
            ("503 from step 3 (retries off)", ("503", "0")),
            ("connections dropped from step 3 (retries off)", ("drop", "0")),
            ("503 from step 3, MLflow's default retries", ("503", None)),
            ("no answer from step 3, MLflow's default timeout", ("hang", None)),
            ("503 with Retry-After: 3600 from step 3", ("retry-after", None)),
            ("503 to the final status update", ("503", None, True)),
        )
    ),
    Case(
        TRACK,
        "MLflow server answering 503 from the start",
        "one line, in seconds, nothing left",
        mlflow_fails_at_start,
        slow=True,
    ),
    Case(
        TRACK,
        "TensorBoard directory on a tmpfs that fills after step 2",
        "logged once, dropped; every step runs",
        tensorboard_disk_fills,
        slow=True,
    ),
    Case(
        TRACK,
        "a tracker raising ENOSPC from step 3 (in-process)",
        "logged once, dropped; the others go on",
        tracker_raises_mid_run,
        slow=True,
    ),
    Case(
        TRACK,
        "a tracker's close raising after the run failed",
        "the run's own error; the others closed",
        close_fails_after_a_failed_run,
    ),
    *(
        Case(
            DISK,
            f"a tmpfs filled after step 2{what}, resumed full, then freed",
            "one line twice; resumed as uninterrupted",
            full_disk_mid_run,
            more,
            slow=True,
        )
        for what, more in (("", ()), (" (--no-cache)", ("--no-cache",)))
    ),
    *(
        Case(
            DISK,
            f"a tmpfs with {leave // 1024} KiB free at the start",
            "one line, nothing left, retry works",
            full_disk_at_start,
            (leave,),
            slow=True,
        )
        for leave in (0, 24 << 10, 96 << 10, 320 << 10)
    ),
    *(
        Case(
            DISK,
            f"ENOSPC injected: {where}",
            "one line; resumed as uninterrupted",
            full_disk_injected,
            (where,),
            slow=True,
        )
        for where in FULL_AT
    ),
    Case(DISK, "the response cache cannot be made (disk full)", "one line, no cache files left", cache_cannot_be_made),
    Case(DISK, "eval results on a full disk", "kept elsewhere or one line; nothing half-written", eval_on_a_full_disk),
]


@pytest.mark.parametrize("case", rows(CASES))
def test_hostile_disk(case, ctx):
    case.run(ctx)
