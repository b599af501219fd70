"""Two writers never lose an op: on one run directory (file lock + version check) and on one
collection of a Chroma server (``chroma run`` on loopback, optimistic commit log; the
``chroma_server`` fixture is in conftest.py)."""

import multiprocessing

import pytest

from experience_store import ConflictError, ExperienceOp, InjectionSettings, Library, Stats, StoreError


def add(text):
    return ExperienceOp(op="ADD", text=text)


def test_two_writers_on_one_directory_the_loser_gets_a_clear_error(tmp_path):
    a = Library(tmp_path / "lib")
    b = Library(tmp_path / "lib")
    a.apply([add("When A, do a.")], step=1)
    with pytest.raises(ConflictError, match="changed by another writer.*not applied"):
        b.apply([add("When B, do b.")], step=1)
    assert [e.text for e in Library(tmp_path / "lib").experiences] == ["When A, do a."]
    c = Library(tmp_path / "lib")  # reopened: sees A's op and builds on it
    c.apply([add("When B, do b.")], step=2)
    assert [e.text for e in Library(tmp_path / "lib").experiences] == ["When A, do a.", "When B, do b."]


def _writer(path, text, barrier, results):
    lib = Library(path)  # both processes read the same (empty) version
    barrier.wait()
    try:
        lib.apply([add(text)], step=1)
        results.put(("won", text))
    except ConflictError as e:
        results.put(("lost", str(e)))


def test_two_processes_racing_on_one_directory_exactly_one_wins(tmp_path):
    ctx = multiprocessing.get_context("fork")
    barrier, results = ctx.Barrier(2), ctx.Queue()
    procs = [ctx.Process(target=_writer, args=(tmp_path / "lib", f"When {c}, do {c}.", barrier, results)) for c in "XY"]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    outcomes = sorted(results.get(timeout=5) for _ in procs)
    assert [o[0] for o in outcomes] == ["lost", "won"]
    assert "not applied" in outcomes[0][1]
    assert [e.text for e in Library(tmp_path / "lib").experiences] == [outcomes[1][1]]


def test_two_runs_on_one_server_collection(tmp_path, chroma_server):
    a = Library(tmp_path / "run-a" / "library", store=chroma_server, collection="shared-lib")
    b = Library(tmp_path / "run-b" / "library", store=chroma_server, collection="shared-lib")
    a.apply([add("When adding fractions, use a common denominator.")], step=1)
    with pytest.raises(ConflictError, match="got commit 1 from another writer first.*not applied"):
        b.apply([add("When a triangle is right-angled, use Pythagoras.")], step=1)
    # the loser reopens, sees the winner's op, and commits on top of it: nothing lost
    b = Library(tmp_path / "run-b" / "library", store=chroma_server, collection="shared-lib")
    assert [e.text for e in b.experiences] == ["When adding fractions, use a common denominator."]
    b.apply([add("When a triangle is right-angled, use Pythagoras.")], step=2)
    fresh = Library(tmp_path / "run-c" / "library", store=chroma_server, collection="shared-lib")
    assert [e.id for e in fresh.experiences] == ["E1", "E2"]
    # the index lives on the server and retrieval uses it
    assert fresh.inject("right triangle, Pythagoras", InjectionSettings(mode="retrieve", top_k=1)).ids == ["E2"]
    assert fresh.collection().count() == 2


def _steps(lib, store, collection, *, kill_after_commit_of=None):
    """Three steps (ADD + usage credit each); optionally a kill right after one step's shared
    commit, before the run marked that step done, then the resume: reopen, discard, redo."""
    path = lib
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


@pytest.mark.parametrize("killed_at", [1, 2, 3])
def test_a_kill_after_the_shared_commit_never_applies_the_step_twice(tmp_path, chroma_server, killed_at):
    ref = _steps(tmp_path / "ref" / "library", chroma_server, f"ref-{killed_at}")
    run = _steps(tmp_path / "run" / "library", chroma_server, f"run-{killed_at}", kill_after_commit_of=killed_at)
    assert run.state == ref.state and run.state.experiences[0].stats.cited == 2  # usage credit counted once
    commits = run._chroma.client().get_collection(f"run-{killed_at}-commits").get(include=["metadatas"])
    assert [m["step"] for _, m in sorted(zip(commits["ids"], commits["metadatas"]))] == [1, 2, 3]
    fresh = Library(tmp_path / "other" / "library", store=chroma_server, collection=f"run-{killed_at}")
    assert fresh.state == ref.state


def test_unreachable_store_is_one_line(tmp_path):
    with pytest.raises(StoreError, match="cannot reach the Chroma server at http://127.0.0.1:9"):
        Library(tmp_path / "lib", store="http://127.0.0.1:9", collection="x-lib")
    with pytest.raises(StoreError, match="must look like http://host:port"):
        Library(tmp_path / "lib", store="chroma.example", collection="x-lib")


@pytest.mark.slow
def test_train_runs_share_a_library_on_the_server(tmp_path, chroma_server):
    from cli_helpers import last_json, tfgrpo

    args = ["train", "--task", "demo", "--model", "sim", "--epochs", "1", "--limit", "8", "--store", chroma_server,
            "--store-collection", "team-lib", "--json", "-q"]
    first = last_json(tfgrpo(*args, "--out", str(tmp_path / "a")))
    assert first["library_size"] > 0
    learned = [e.text for e in Library(tmp_path / "a" / "library", store=chroma_server, collection="team-lib").experiences]
    second = last_json(tfgrpo(*args, "--out", str(tmp_path / "b"), "--seed", "1"))
    shared = Library(tmp_path / "b" / "library", store=chroma_server, collection="team-lib")
    assert second["library_size"] == len(shared)
    kept = {e.text for e in shared.state.experiences}  # the second run built on the first's lessons
    assert set(learned) <= kept


def test_a_copied_library_gets_its_own_writer_id_and_a_moved_one_keeps_it(tmp_path):
    import shutil

    from experience_store.versions import VersionStore

    first = VersionStore(tmp_path / "a" / "library").writer_id()
    assert VersionStore(tmp_path / "a" / "library").writer_id() == first  # kept
    shutil.copytree(tmp_path / "a", tmp_path / "b")  # a copy, its original still there
    copy = VersionStore(tmp_path / "b" / "library").writer_id()
    assert copy != first and VersionStore(tmp_path / "b" / "library").writer_id() == copy
    assert VersionStore(tmp_path / "a" / "library").writer_id() == first
    (tmp_path / "a").rename(tmp_path / "c")  # moved: the same writer
    assert VersionStore(tmp_path / "c" / "library").writer_id() == first
    legacy = tmp_path / "d" / "library"
    legacy.mkdir(parents=True)
    (legacy / "writer").write_text("0123abcd")  # written before the path was kept
    assert VersionStore(legacy).writer_id() == "0123abcd"
