"""Two writers never lose an op: on one run directory (file lock + version check) and on one
collection of a Chroma server (``chroma run`` on loopback, optimistic commit log)."""

import multiprocessing
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from experience_store import ConflictError, ExperienceOp, InjectionSettings, Library, StoreError


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
    proc = subprocess.Popen([exe, "run", "--path", str(tmp_path_factory.mktemp("chroma")), "--host", "127.0.0.1",
                             "--port", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
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
