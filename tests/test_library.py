import pytest

from experience_store import ExperienceOp, Library, Provenance, apply_ops
from experience_store import LibraryState


def op(kind, **kw):
    return ExperienceOp(op=kind, **kw)


def test_add_update_delete_merge_keep_stable_ids(tmp_path):
    lib = Library(tmp_path / "lib")
    r1 = lib.apply(
        [op("ADD", text="When A, do a."), op("ADD", text="When B, do b."), op("ADD", text="When C, do c.")], step=1
    )
    assert [r.result_id for r in r1] == ["E1", "E2", "E3"]
    r2 = lib.apply([op("UPDATE", id="E2", text="When B, do b better."), op("DELETE", id="E1")], step=2)
    assert all(r.status == "applied" for r in r2)
    r3 = lib.apply([op("MERGE", ids=["E2", "E3"], text="When B or C, do both.")], step=3)
    assert r3[0].result_id == "E4"
    assert [e.id for e in lib.experiences] == ["E4"]
    merged = lib.experiences[0]
    assert merged.provenance.merged_from == ["E2", "E3"]
    # ids are never reused and history is kept as retired entries
    assert {e.id: e.status for e in lib.state.experiences} == {
        "E1": "retired",
        "E2": "retired",
        "E3": "retired",
        "E4": "active",
    }
    assert lib.state.get("E2").revision == 2
    assert lib.versions() == [1, 2, 3]
    assert [e.id for e in lib.state_at(1).active()] == ["E1", "E2", "E3"]


def test_exact_duplicate_is_never_stored_twice(tmp_path):
    lib = Library(tmp_path / "lib")
    res = lib.apply([op("ADD", text="When A, do a."), op("ADD", text="  when a,   DO A. ")], step=1)
    assert res[1].status == "noop" and res[1].result_id == "E1"
    assert len(lib) == 1


def test_transaction_rolls_back_when_a_write_fails(tmp_path, monkeypatch):
    lib = Library(tmp_path / "lib")
    lib.apply([op("ADD", text="When A, do a.")], step=1)

    def broken(state):
        raise OSError("disk full")

    monkeypatch.setattr(lib, "_sync_index", broken)
    with pytest.raises(OSError):
        lib.apply([op("ADD", text="When B, do b."), op("DELETE", id="E1")], step=2)
    monkeypatch.undo()
    assert lib.versions() == [1]
    assert [e.text for e in lib.experiences] == ["When A, do a."]
    reopened = Library(tmp_path / "lib")
    assert [e.id for e in reopened.experiences] == ["E1"]
    assert reopened.state.next_id == 2


def test_index_resyncs_after_a_discarded_step(tmp_path):
    lib = Library(tmp_path / "lib")
    lib.apply([op("ADD", text="When A, do a.")], step=1)
    lib.apply([op("ADD", text="When B, do b.")], step=2)
    lib.discard_after(1)
    lib.sync()
    assert sorted(lib.collection().get()["ids"]) == ["E1"]
    assert lib.versions() == [1]


def test_apply_ops_is_pure_and_records_provenance():
    state = LibraryState()
    new, res = apply_ops(
        state, [op("ADD", text="When A, do a.")], step=4, provenance=Provenance(run="r", step=4, query_ids=["q1"])
    )
    assert state.experiences == [] and new.experiences[0].provenance.query_ids == ["q1"]
    assert new.experiences[0].created_step == 4


def test_a_stale_writer_is_refused_whatever_step_it_commits(tmp_path):
    """Writer A read step 1; B committed step 2; A's step 3 would overwrite B's lesson (and reuse
    its id): refused, nothing applied."""
    from experience_store import ConflictError

    a = Library(tmp_path / "lib")
    a.apply([op("ADD", text="When A, do a.")], step=1)
    b = Library(tmp_path / "lib")
    b.apply([op("ADD", text="When B, do b.")], step=2)
    with pytest.raises(ConflictError, match="changed by another writer"):
        a.apply([op("ADD", text="When C, do c.")], step=3)
    assert [e.text for e in Library(tmp_path / "lib").experiences] == ["When A, do a.", "When B, do b."]


def test_a_failed_rewrite_of_a_version_restores_it(tmp_path, monkeypatch):
    lib = Library(tmp_path / "lib")
    lib.apply([op("ADD", text="When A, do a.")], step=0)
    before = lib.versions_dir.joinpath("000000.json").read_bytes()

    def broken(state):
        raise OSError("embedding failed")

    monkeypatch.setattr(lib, "_sync_index", broken)
    new, _ = apply_ops(lib.state, [op("ADD", text="When B, do b.")], step=0)
    with pytest.raises(OSError):
        lib._commit(new, 0)
    assert lib.versions_dir.joinpath("000000.json").read_bytes() == before


def test_a_library_opened_after_a_crash_retrieves_from_its_current_version(tmp_path):
    """Killed between writing a version and updating the index: the next reader brings the
    index in line before it retrieves (it searched the old lessons, and came back short)."""
    from experience_store import InjectionSettings

    lib = Library(tmp_path / "lib")
    lib.apply([op("ADD", text="When adding fractions, find a common denominator.")], step=1)
    new, _ = apply_ops(lib.state, [op("ADD", text="When multiplying decimals, count the decimal places.")], step=2)
    lib.versions_dir.joinpath("000002.json").write_text(new.model_dump_json())  # the version, no index update
    got = Library(tmp_path / "lib").inject("multiplying decimals", InjectionSettings(mode="retrieve", top_k=2))
    assert sorted(got.ids) == ["E1", "E2"]


def test_retrieval_is_exact_and_the_same_however_the_index_was_built():
    """HNSW is approximate: it missed true top hits, and an index built in another order (a
    resume, a pack) ranked the same lessons differently. Up to EXACT_UP_TO lessons the search is exact."""
    import random

    import numpy as np

    from experience_store import Experience, Index
    from experience_store.embedding import DEFAULT_SPEC, embedding_from_spec

    rng = random.Random(1)
    exps = [Experience(id=f"E{i}", text=f"When alpha{i} happens, beta{i} works.") for i in range(1, 1501)]  # near-ties
    queries = [
        " ".join(
            rng.choice(
                [f"alpha{rng.randint(1, 1500)}", f"beta{rng.randint(1, 1500)}", "happens", "works", "when", f"zq{t}"]
            )
            for _ in range(3)
        )
        for t in range(60)
    ]
    embed = embedding_from_spec(DEFAULT_SPEC)
    rows = np.asarray(embed([e.text for e in exps]), dtype=np.float64)
    rows /= np.linalg.norm(rows, axis=1, keepdims=True)
    forward, backward = Index.in_memory(exps, DEFAULT_SPEC), Index.in_memory(exps[::-1], DEFAULT_SPEC)
    for q in queries:
        v = np.asarray(embed([q])[0], dtype=np.float64)
        sims = rows @ (v / np.linalg.norm(v))
        truth = sorted(
            ((e.id, float(s)) for e, s in zip(exps, sims)), key=lambda h: (-round(h[1], 6), len(h[0]), h[0])
        )[:4]
        assert [i for i, _ in forward.search(q, 4)] == [i for i, _ in truth] == [i for i, _ in backward.search(q, 4)], q
