"""Areas 5, the run side of 6, the run-directory items of 12, what held of kills and of two
writers: a run killed at any moment (with or without ``--store``) resumes to the library of an
uninterrupted run, with no step applied twice; records holding line separators survive and a
resume never deletes a line it cannot read; two writers never lose an op; a second process on a
run directory, an export over an existing folder or a failed start leave nothing behind; a
Chroma server lost mid-run is one line."""

from __future__ import annotations

import contextlib
import hashlib
import json
import multiprocessing
import os
import signal
import subprocess
import time
import zipfile
from pathlib import Path

import pytest
from hostile_rows import Case, Relay, deep, rows
from typer.testing import CliRunner

from cli_helpers import CMD, ENV, committed, last_json, tfgrpo
from experience_store import (
    ConflictError,
    Experience,
    ExperienceOp,
    InjectionSettings,
    Library,
    Pack,
    PackError,
    Stats,
    StoreError,
)
from tfgrpo.errors import UserError
from tfgrpo.resources import jsonl_rows
from tfgrpo.rundir import GROUPS, ROLLOUTS, STEPS, RunDir, save_eval

SMALL = ["train", "--task", "demo", "--model", "sim", "--epochs", "1", "--limit", "2", "--batch-size", "2"]
SEPARATORS = "a\u2028b\u2029c\x85d\ne\rf\x0bg\x0ch\x1ci"


def add(text: str) -> ExperienceOp:
    return ExperienceOp(op="ADD", text=text)


# ----------------------------------------------------------------------- 6 line separators


def separators_survive_resume(ctx) -> None:
    rd = RunDir(ctx.tmp / "run").create()
    rows_ = [{"step": s, "text": f"answer {s}.{i} {SEPARATORS}"} for s in (1, 2) for i in range(16)]
    rd.append(ROLLOUTS, rows_)
    text = rd.file(ROLLOUTS).read_text(encoding="utf-8")
    assert len(text.splitlines()) == len(rows_)  # even str.splitlines sees one record per line
    assert not set("\u2028\u2029\x85") & set(text)
    assert rd.read(ROLLOUTS) == rows_
    rd.discard_after(2)  # what a plain --resume does first
    assert rd.read(ROLLOUTS) == rows_


def raw_separators_from_older_versions(ctx) -> None:
    rd = RunDir(ctx.tmp / "run").create()
    rows_ = [{"step": 1, "text": "x\u2028y"}, {"step": 2, "text": "z\x85w"}, {"step": 3, "text": "gone"}]
    rd.file(GROUPS).write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows_), encoding="utf-8")
    assert rd.read(GROUPS) == rows_
    rd.discard_after(2)
    assert rd.read(GROUPS) == rows_[:2]
    assert "\u2028" not in rd.file(GROUPS).read_text(encoding="utf-8")


def line_cut_by_a_kill(ctx) -> None:
    rd = RunDir(ctx.tmp / "run").create()
    rd.append(ROLLOUTS, [{"step": 1, "text": "ok"}])
    with rd.file(ROLLOUTS).open("a") as f:
        f.write('{"step": 2, "text": "half a li')
    assert rd.read(ROLLOUTS) == [{"step": 1, "text": "ok"}]
    rd.discard_after(1)
    assert rd.file(ROLLOUTS).read_text() == '{"step": 1, "text": "ok"}\n'


def unreadable_line_kept(ctx, bad: bytes) -> None:
    rd = RunDir(ctx.tmp / "run").create()
    rd.append(ROLLOUTS, [{"step": 1, "text": "first"}])
    with rd.file(ROLLOUTS).open("ab") as f:
        f.write(bad + b'\n{"step": 1, "text": "third"}\n')
    before = rd.file(ROLLOUTS).read_bytes()
    with pytest.raises(UserError) as e:
        rd.discard_after(1)
    assert str(e.value).startswith(f"{rd.file(ROLLOUTS)}:2: unreadable record") and "\n" not in str(e.value)
    assert rd.file(ROLLOUTS).read_bytes() == before


def corrupt_step_record(ctx) -> None:
    rd = RunDir(ctx.tmp / "run").create()
    rd.file(STEPS).write_text('{"step": "one"}\n')
    with pytest.raises(UserError, match=r"steps\.jsonl:1: unreadable step record"):
        rd.steps()


def eval_results_escaped(ctx) -> None:
    out = save_eval(ctx.tmp / "eval", {"n": 1}, [{"answer": SEPARATORS}])
    text = (out / "results.jsonl").read_text(encoding="utf-8")
    assert len(text.splitlines()) == 1 and json.loads(text) == {"answer": SEPARATORS}


def dataset_with_separators(ctx) -> None:
    p = ctx.tmp / "data.jsonl"
    rows_ = [
        {"id": "q1", "question": "What is 2\u20282?", "answer": "4"},
        {"id": "q2", "question": "x\x85y", "answer": "1"},
    ]
    p.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows_), encoding="utf-8")
    assert jsonl_rows(p) == rows_


# -------------------------------------------------------------- 5 shared store, held: writers


def two_writers_on_a_directory(ctx) -> None:
    a, b = Library(ctx.tmp / "lib"), Library(ctx.tmp / "lib")
    a.apply([add("When A, do a.")], step=1)
    with pytest.raises(ConflictError, match="changed by another writer.*not applied"):
        b.apply([add("When B, do b.")], step=1)
    assert [e.text for e in Library(ctx.tmp / "lib").experiences] == ["When A, do a."]
    Library(ctx.tmp / "lib").apply([add("When B, do b.")], step=2)  # reopened: sees A's op and builds on it
    assert [e.text for e in Library(ctx.tmp / "lib").experiences] == ["When A, do a.", "When B, do b."]


def _writer(path, text, barrier, results):
    lib = Library(path)  # both processes read the same (empty) version
    barrier.wait()
    try:
        lib.apply([add(text)], step=1)
        results.put(("won", text))
    except ConflictError as e:
        results.put(("lost", str(e)))


def two_processes_race(ctx) -> None:
    mp = multiprocessing.get_context("fork")
    barrier, results = mp.Barrier(2), mp.Queue()
    procs = [mp.Process(target=_writer, args=(ctx.tmp / "lib", f"When {c}, do {c}.", barrier, results)) for c in "XY"]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    outcomes = sorted(results.get(timeout=5) for _ in procs)
    assert [o[0] for o in outcomes] == ["lost", "won"] and "not applied" in outcomes[0][1]
    assert [e.text for e in Library(ctx.tmp / "lib").experiences] == [outcomes[1][1]]


def two_runs_on_one_collection(ctx) -> None:
    server = ctx.request.getfixturevalue("chroma_server")
    a = Library(ctx.tmp / "run-a" / "library", store=server, collection="shared-lib")
    b = Library(ctx.tmp / "run-b" / "library", store=server, collection="shared-lib")
    a.apply([add("When adding fractions, use a common denominator.")], step=1)
    with pytest.raises(ConflictError, match="got commit 1 from another writer first.*not applied"):
        b.apply([add("When a triangle is right-angled, use Pythagoras.")], step=1)
    # the loser reopens, sees the winner's op, and commits on top of it: nothing lost
    b = Library(ctx.tmp / "run-b" / "library", store=server, collection="shared-lib")
    assert [e.text for e in b.experiences] == ["When adding fractions, use a common denominator."]
    b.apply([add("When a triangle is right-angled, use Pythagoras.")], step=2)
    fresh = Library(ctx.tmp / "run-c" / "library", store=server, collection="shared-lib")
    assert [e.id for e in fresh.experiences] == ["E1", "E2"]
    assert commit_steps(fresh, "shared-lib") == [1, 2]  # a linear commit log
    assert fresh.inject("right triangle, Pythagoras", InjectionSettings(mode="retrieve", top_k=1)).ids == ["E2"]
    assert fresh.collection().count() == 2


def commit_steps(lib: Library, collection: str) -> list[int]:
    got = lib._chroma.client().get_collection(f"{collection}-commits").get(include=["metadatas"])
    return [m["step"] for _, m in sorted(zip(got["ids"], got["metadatas"]))]


def two_train_runs_share(ctx) -> None:
    server = ctx.request.getfixturevalue("chroma_server")
    args = [
        "train",
        "--task",
        "demo",
        "--model",
        "sim",
        "--epochs",
        "1",
        "--limit",
        "8",
        "--store",
        server,
        "--store-collection",
        "team-lib",
        "--json",
        "-q",
    ]
    first = last_json(tfgrpo(*args, "--out", str(ctx.tmp / "a")))
    assert first["library_size"] > 0
    learned = [e.id for e in Library(ctx.tmp / "a" / "library", store=server, collection="team-lib").experiences]
    second = last_json(tfgrpo(*args, "--out", str(ctx.tmp / "b"), "--seed", "1"))
    shared = Library(ctx.tmp / "b" / "library", store=server, collection="team-lib")
    assert second["library_size"] == len(shared)
    assert set(learned) <= {e.id for e in shared.state.experiences}  # the second run built on the first's lessons
    assert commit_steps(shared, "team-lib") == sorted(commit_steps(shared, "team-lib"))


def copied_library_writer(ctx) -> None:
    """A copy of a library folder is a second writer: it gets its own writer id; a moved one keeps its id."""
    import shutil

    from experience_store.versions import VersionStore

    first = VersionStore(ctx.tmp / "a" / "library").writer_id()
    assert VersionStore(ctx.tmp / "a" / "library").writer_id() == first  # kept
    shutil.copytree(ctx.tmp / "a", ctx.tmp / "b")  # a copy, its original still there
    copy = VersionStore(ctx.tmp / "b" / "library").writer_id()
    assert copy != first and VersionStore(ctx.tmp / "b" / "library").writer_id() == copy
    assert VersionStore(ctx.tmp / "a" / "library").writer_id() == first
    (ctx.tmp / "a").rename(ctx.tmp / "c")  # moved: the same writer
    assert VersionStore(ctx.tmp / "c" / "library").writer_id() == first
    legacy = ctx.tmp / "d" / "library"
    legacy.mkdir(parents=True)
    (legacy / "writer").write_text("0123abcd")  # written before the path was kept
    assert VersionStore(legacy).writer_id() == "0123abcd"


def _three_steps(path: Path, store: str, collection: str, kill_after_commit_of: int | None = None) -> Library:
    """Three steps (ADD + usage credit each); optionally a kill right after one step's shared
    commit, before the run marked that step done, then the resume: reopen, discard, redo."""
    lib = Library(path, store=store, collection=collection)
    for step, text in enumerate(["When A, do a.", "When B, do b.", "When C, do c."], start=1):
        credit = {"E1": Stats(retrieved=1, cited=1, helpful=1)} if step > 1 else None
        lib.apply([add(text)], step=step, credit=credit)
        if step == kill_after_commit_of:
            lib = Library(path, store=store, collection=collection)  # resumed: steps.jsonl ends at step - 1
            lib.discard_after(step - 1)
            assert len(lib) == step - 1  # back to the state the step started from
            lib.apply([add(text)], step=step, credit=credit)  # the redone step adopts its commit
    return lib


def kill_after_the_shared_commit(ctx, killed_at: int) -> None:
    server = ctx.request.getfixturevalue("chroma_server")
    ref = _three_steps(ctx.tmp / "ref" / "library", server, f"ref-{killed_at}")
    run = _three_steps(ctx.tmp / "run" / "library", server, f"run-{killed_at}", kill_after_commit_of=killed_at)
    assert run.state == ref.state and run.state.experiences[0].stats.cited == 2  # usage credit counted once
    assert commit_steps(run, f"run-{killed_at}") == [1, 2, 3]
    assert Library(ctx.tmp / "other" / "library", store=server, collection=f"run-{killed_at}").state == ref.state


def unreachable_store(ctx) -> None:
    with pytest.raises(StoreError, match="cannot reach the Chroma server at http://127.0.0.1:9"):
        Library(ctx.tmp / "lib", store="http://127.0.0.1:9", collection="x-lib")
    with pytest.raises(StoreError, match="must look like http://host:port"):
        Library(ctx.tmp / "lib", store="chroma.example", collection="x-lib")


def chroma_lost_mid_run(ctx) -> None:
    """``--store`` on a Chroma server that goes away after the first step: one line naming the
    server and the resume command, exit 2, and the finished steps kept."""
    from tfgrpo.cli import build_app
    from tfgrpo.cli import train as train_cli
    from tfgrpo.hooks import Hooks

    server = ctx.request.getfixturevalue("chroma_server")
    relay = Relay(int(server.rsplit(":", 1)[1]))
    ctx.monkeypatch.setattr(
        train_cli, "progress_hooks", lambda enabled=True: contextlib.nullcontext(Hooks(on_step=relay.cut))
    )
    out, store = ctx.tmp / "run", f"http://127.0.0.1:{relay.port}"
    result = CliRunner().invoke(
        build_app(),
        [
            "train",
            "--task",
            "demo",
            "--model",
            "sim",
            "--epochs",
            "1",
            "--limit",
            "6",
            "--batch-size",
            "2",
            "--group-size",
            "2",
            "--store",
            store,
            "--store-collection",
            "lost-server",
            "--out",
            str(out),
            "-q",
        ],
    )
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.exit_code == 2 and len(lines) == 1, (result.stderr, result.exception)
    assert f"lost the Chroma server at {store}" in lines[0] and f"--resume {out}" in lines[0], lines[0]
    assert 1 <= (out / "steps.jsonl").read_text().count("\n") < 3  # the steps finished before the loss are kept


# ------------------------------------------------------------------- SIGKILL and resume


def final_state(run: Path) -> dict:
    state = json.loads(sorted((run / "library" / "versions").glob("*.json"))[-1].read_text())
    for e in state["experiences"]:  # the run's name and how the judge was addressed may differ
        e["provenance"].pop("run")
        e["provenance"].pop("judge_model")
    return state


def comparable(run: Path, name: str) -> list:
    rows_ = [json.loads(line) for line in (run / name).read_text().splitlines()]
    for r in rows_:
        for key in ("cached", "wall_s", "usage"):
            r.pop(key, None)
    return rows_


def store_args(ctx, store: bool, name: str) -> list[str]:
    """--store on the test's Chroma server, a collection of its own (or nothing)."""
    if not store:
        return []
    row = hashlib.sha1(ctx.request.node.name.encode()).hexdigest()[:12]
    return ["--store", ctx.request.getfixturevalue("chroma_server"), "--store-collection", f"c{row}-{name}"]


def shared_steps(ctx, name: str) -> list[int]:
    """The steps of a shared collection's commit log, in commit order."""
    _, url, _, collection = store_args(ctx, True, name)
    return commit_steps(Library(ctx.tmp / f"look-{name}" / "library", store=url, collection=collection), collection)


def sigkill_then_resume(ctx, kill_after: int, store: bool) -> None:
    server, url = ctx.request.getfixturevalue("sim_server")
    common = ["train", "--task", "demo", "--epochs", "2", "--json"]
    remote = [
        "--model",
        "openai/sim-policy-s0",
        "--api-base",
        url,
        "--judge",
        "openai/sim-judge-s0",
        "--judge-api-base",
        url,
    ]
    env = {**ENV, "OPENAI_API_KEY": "sim"}  # the simulator takes any key; the openai client wants one
    reference = ctx.tmp / "reference"  # the same endpoints as the killed run: same prompts, same answers
    ref = last_json(tfgrpo(*common, *remote, "--out", str(reference), *store_args(ctx, store, "ref"), env=env))
    common += store_args(ctx, store, "run")
    run = ctx.tmp / "killed"
    proc = subprocess.Popen(
        [*CMD, *common, *remote, "--out", str(run), "--quiet"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=env,
    )
    deadline = time.monotonic() + 120
    while committed(run) < kill_after and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    os.kill(server.pid, signal.SIGSTOP)  # every request in flight now hangs: the run is inside a step
    time.sleep(0.3)
    proc.kill()
    proc.wait()
    os.kill(server.pid, signal.SIGCONT)
    done_before = committed(run)
    assert kill_after <= done_before < ref["steps"], f"the kill did not land mid-run: {proc.stderr.read()[-2000:]}"

    resumed = last_json(
        tfgrpo("train", "--resume", str(run), "--json", "--api-base", url, "--judge-api-base", url, env=env)
    )
    assert resumed["steps"] == ref["steps"] and resumed["resumed_from_step"] == done_before
    # finished calls come back from the cache: the resumed run only pays for the steps it had left
    assert resumed["usage"]["policy"]["calls"] <= (ref["steps"] - done_before) * 8
    assert final_state(run)["experiences"] == final_state(reference)["experiences"]
    for name in ("rollouts.jsonl", "groups.jsonl", "steps.jsonl"):
        assert comparable(run, name) == comparable(reference, name), name
    ops = [json.loads(line) for line in (run / "ops.jsonl").read_text().splitlines()]
    assert [o["step"] for o in ops] == sorted(o["step"] for o in ops)  # no step applied twice
    if store:  # one shared commit per step, as in the uninterrupted run
        assert shared_steps(ctx, "run") == shared_steps(ctx, "ref") == list(range(1, ref["steps"] + 1))


def resume_after_a_cut_step(ctx, store: bool, window: str) -> None:
    run = ctx.tmp / "run"
    first = last_json(
        tfgrpo(
            "train",
            "--task",
            "demo",
            "--model",
            "sim",
            "--epochs",
            "1",
            "--out",
            str(run),
            "--json",
            *store_args(ctx, store, "run"),
        )
    )
    assert first["steps"] == 4
    # Pretend step 4 was cut off after writing its records and its (shared) library commit.
    steps = (run / "steps.jsonl").read_text().splitlines()
    (run / "steps.jsonl").write_text("\n".join(steps[:3]) + "\n")
    with (run / "rollouts.jsonl").open("a") as f:
        f.write('{"step": 4, "half a line')
    if window == "after the shared commit":  # the local version file was not written yet
        (run / "library" / "versions" / "000004.json").unlink()
    clean = last_json(
        tfgrpo(
            "train",
            "--task",
            "demo",
            "--model",
            "sim",
            "--epochs",
            "1",
            "--out",
            str(ctx.tmp / "clean"),
            "--json",
            *store_args(ctx, store, "clean"),
        )
    )
    resumed = last_json(tfgrpo("train", "--resume", str(run), "--json"))
    assert resumed["resumed_from_step"] == 3 and resumed["steps"] == 4
    assert resumed["usage"]["policy"]["calls"] == 0 and resumed["usage"]["policy"]["cache_hits"] == 8 * 5
    assert final_state(run)["experiences"] == final_state(ctx.tmp / "clean")["experiences"]
    assert comparable(run, "rollouts.jsonl") == comparable(ctx.tmp / "clean", "rollouts.jsonl")
    assert clean["library_size"] == resumed["library_size"]
    assert comparable(run, "ops.jsonl") == comparable(ctx.tmp / "clean", "ops.jsonl")
    if store:  # the step's shared commit was adopted, not made again
        assert shared_steps(ctx, "run") == shared_steps(ctx, "clean") == [1, 2, 3, 4]


# ------------------------------------------------------------------ 12 run directories


def snapshot(path: Path) -> dict:
    return {
        p.relative_to(path): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file() and p.name != "run.lock"
    }


def second_process_refused(ctx) -> None:
    run = ctx.tmp / "run"
    tfgrpo(*SMALL, "--out", str(run), "-q")
    before = snapshot(run)
    starting = RunDir(ctx.tmp / "starting").create()  # a first start that has not written its config yet
    with RunDir(run).locked(), starting.locked():  # training processes hold the directories
        for args in (["train", "--resume", str(run), "--epochs", "2"], [*SMALL, "--out", str(starting.path)]):
            proc = tfgrpo(*args, check=False)
            assert proc.returncode == 2, proc.stderr
            errors = [
                line for line in proc.stderr.splitlines() if line.startswith("error:")
            ]  # (beside the SIMULATION notice)
            assert (
                len(errors) == 1
                and "is in use by another tfgrpo process" in errors[0]
                and "Traceback" not in proc.stderr
            )
    assert snapshot(run) == before and snapshot(starting.path) == {}
    assert last_json(tfgrpo("train", "--resume", str(run), "--epochs", "2", "--json", "-q"))["steps"] == 2  # free again


def lock_is_exclusive(ctx) -> None:
    rd = RunDir(ctx.tmp / "run").create()
    with rd.locked():
        with pytest.raises(UserError, match=r"run is in use by another tfgrpo process: wait"):
            with RunDir(ctx.tmp / "run").locked():
                pass
    with RunDir(ctx.tmp / "run").locked():
        pass


def failed_start_leaves_nothing(ctx) -> None:
    run = ctx.tmp / "run"
    proc = tfgrpo(
        *SMALL, "--out", str(run), "--store", "http://127.0.0.1:9", check=False
    )  # fails after the directory is made
    assert (
        proc.returncode == 2 and "cannot reach the Chroma server" in proc.stderr and "no step finished" in proc.stderr
    )
    assert not run.exists()
    mine = ctx.tmp / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("kept")
    assert tfgrpo(*SMALL, "--out", str(mine), "--store", "http://127.0.0.1:9", check=False).returncode == 2
    assert sorted(p.name for p in mine.iterdir()) == ["notes.txt"]
    assert last_json(tfgrpo(*SMALL, "--out", str(run), "--json", "-q"))["steps"] == 1  # the retry is not blocked
    proc = tfgrpo(*SMALL, "--out", str(run), check=False)  # a run with a finished step is still protected
    assert proc.returncode == 2 and "already holds a run" in proc.stderr


def one_lesson(text: str) -> Pack:
    return Pack.build([Experience(id="E1", text=text)])


def pack_replaced_whole(ctx, suffix: str) -> None:
    out = ctx.tmp / f"p{suffix}"
    one_lesson("When a, do b.").write(out)
    one_lesson("When c, do d.").write(out)
    assert [e.text for e in Pack.load(out).experiences] == ["When c, do d."]
    assert sorted(p.name for p in ctx.tmp.iterdir()) == [out.name]  # no temporary left beside it


def not_a_pack_never_overwritten(ctx) -> None:
    folder = ctx.tmp / "data"
    folder.mkdir()
    (folder / "manifest.json").write_text("mine")
    (folder / "thesis.tex").write_text("years of work")
    not_zip = ctx.tmp / "notes.zip"
    not_zip.write_text("not a zip")
    zip_named_folder = ctx.tmp / "data.zip"
    zip_named_folder.mkdir()
    for out in (folder, not_zip, zip_named_folder):
        with pytest.raises(PackError, match="refusing to overwrite"):
            one_lesson("When a, do b.").write(out)
    assert (folder / "manifest.json").read_text() == "mine" and not_zip.read_text() == "not a zip"
    assert sorted(p.name for p in ctx.tmp.iterdir()) == ["data", "data.zip", "notes.zip"]


def export_over_a_folder(ctx) -> None:
    run = ctx.tmp / "run"
    tfgrpo(*SMALL, "--out", str(run), "-q")
    taken = ctx.tmp / "taken"
    taken.mkdir()
    (taken / "keep.txt").write_text("x")
    proc = tfgrpo("pack", "export", str(run), "--out", str(taken), check=False)
    assert (
        proc.returncode == 2 and "refusing to overwrite" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    )
    assert sorted(p.name for p in taken.iterdir()) == ["keep.txt"]
    tfgrpo("pack", "export", str(run), "--out", str(ctx.tmp / "p.zip"))
    tfgrpo("pack", "export", str(run), "--out", str(ctx.tmp / "p.zip"))  # re-export over its own pack
    assert zipfile.is_zipfile(ctx.tmp / "p.zip") and tfgrpo("pack", "verify", str(ctx.tmp / "p.zip")).returncode == 0


SEP, ST, K, W, L = "06 line separators", "05 shared store", "held kill-resume", "held store writers", "12 lower items"
CASES = [
    Case(
        SEP,
        "U+2028/U+2029/NEL and controls in 32 rollouts, then resume",
        "written escaped, all kept",
        separators_survive_resume,
    ),
    Case(
        SEP,
        "raw U+2028/NEL from an older version, then resume",
        "read, rewritten escaped",
        raw_separators_from_older_versions,
    ),
    Case(SEP, "a line cut short by a kill, then resume", "skipped and dropped", line_cut_by_a_kill),
    *(
        Case(
            SEP,
            f"an unreadable line ({name}) before a good one, then resume",
            "one line naming file:line; file untouched",
            unreadable_line_kept,
            (bad,),
        )
        for name, bad in [
            ("cut JSON", b'{"step": 1, "text": "broken'),
            ("a list", b"[1, 2]"),
            ("not UTF-8", b"\xff\xfe"),
            ("nested 100000 deep", deep().encode()),
        ]
    ),
    Case(SEP, "a corrupt steps.jsonl record", "one line naming file:line", corrupt_step_record),
    Case(SEP, "line separators in saved eval results", "one record per line", eval_results_escaped),
    Case(SEP, "line separators in a JSONL dataset value", "a valid dataset", dataset_with_separators),
    *(
        Case(
            ST,
            f"kill right after the shared commit of step {n}, then resume",
            "the step applied once, credit counted once",
            kill_after_the_shared_commit,
            (n,),
        )
        for n in (1, 2, 3)
    ),
    *(
        Case(
            ST,
            f"SIGKILL with --store after step {n}, then resume",
            "the uninterrupted library and commit log",
            sigkill_then_resume,
            (n, True),
            slow=True,
        )
        for n in (2, 5)
    ),
    *(
        Case(
            ST,
            f"--store run cut {window}, then resume",
            "the step's shared commit adopted, not made again",
            resume_after_a_cut_step,
            (True, window),
            slow=True,
        )
        for window in ("after the shared commit", "after the library version")
    ),
    Case("13 one line", "unreachable or malformed --store", "one line", unreachable_store),
    Case(
        "13 one line",
        "Chroma server killed mid-run",
        "one line naming the resume, steps kept",
        chroma_lost_mid_run,
        slow=True,
    ),
    *(
        Case(
            K,
            f"SIGKILL mid-step after step {n}, then resume",
            "the uninterrupted library, no step twice, calls from the cache",
            sigkill_then_resume,
            (n, False),
            slow=True,
        )
        for n in (1, 4)
    ),
    Case(
        K,
        "run cut after the library version, then resume",
        "the uninterrupted library",
        resume_after_a_cut_step,
        (False, "after the library version"),
        slow=True,
    ),
    Case(
        W, "two writers on one library folder", "the loser gets a clear error, nothing lost", two_writers_on_a_directory
    ),
    Case(W, "two processes racing on one library folder", "exactly one wins", two_processes_race),
    Case(W, "a copied library folder", "its own writer id; a moved folder keeps its id", copied_library_writer),
    Case(W, "two runs on one Chroma collection", "a linear commit log, nothing lost", two_runs_on_one_collection),
    Case(
        W, "two train --store runs on one collection", "the second builds on the first", two_train_runs_share, slow=True
    ),
    Case(
        L,
        "a second process on a run directory",
        "refused in one line, nothing written",
        second_process_refused,
        slow=True,
    ),
    Case(L, "the run lock held", "exclusive, free again after", lock_is_exclusive),
    Case(
        L,
        "failed starts with one --out",
        "no run directory left; the retry is not blocked",
        failed_start_leaves_nothing,
        slow=True,
    ),
    *(
        Case(
            L,
            f"pack written over an earlier pack{' (zip)' if s else ''}",
            "replaced whole, no temporary left",
            pack_replaced_whole,
            (s,),
        )
        for s in ("", ".zip")
    ),
    Case(L, "pack written over a folder or file that is no pack", "refused, untouched", not_a_pack_never_overwritten),
    Case(L, "pack export --out an existing folder", "one line, folder untouched", export_over_a_folder, slow=True),
]


@pytest.mark.parametrize("case", rows(CASES))
def test_hostile_run(case, ctx):
    case.run(ctx)
