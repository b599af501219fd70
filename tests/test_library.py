import pytest

from experience_store import ExperienceOp, Library, Provenance, apply_ops
from experience_store import LibraryState


def op(kind, **kw):
    return ExperienceOp(op=kind, **kw)


def test_add_update_delete_merge_keep_stable_ids(tmp_path):
    lib = Library(tmp_path / "lib")
    r1 = lib.apply([op("ADD", text="When A, do a."), op("ADD", text="When B, do b."), op("ADD", text="When C, do c.")], step=1)
    assert [r.result_id for r in r1] == ["E1", "E2", "E3"]
    r2 = lib.apply([op("UPDATE", id="E2", text="When B, do b better."), op("DELETE", id="E1")], step=2)
    assert all(r.status == "applied" for r in r2)
    r3 = lib.apply([op("MERGE", ids=["E2", "E3"], text="When B or C, do both.")], step=3)
    assert r3[0].result_id == "E4"
    assert [e.id for e in lib.experiences] == ["E4"]
    merged = lib.experiences[0]
    assert merged.provenance.merged_from == ["E2", "E3"]
    # ids are never reused and history is kept as retired entries
    assert {e.id: e.status for e in lib.state.experiences} == {"E1": "retired", "E2": "retired", "E3": "retired", "E4": "active"}
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
    new, res = apply_ops(state, [op("ADD", text="When A, do a.")], step=4, provenance=Provenance(run="r", step=4, query_ids=["q1"]))
    assert state.experiences == [] and new.experiences[0].provenance.query_ids == ["q1"]
    assert new.experiences[0].created_step == 4
