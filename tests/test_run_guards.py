"""Issue 14 item 12: a second process on one run directory is refused (a lock) and leaves
nothing behind; ``pack export --out EXISTING`` replaces an earlier pack atomically and refuses
anything else; a failed start leaves no run directory that blocks a retry with the same --out."""

import zipfile

import pytest

from cli_helpers import last_json, tfgrpo
from experience_store import Experience, Pack, PackError
from tfgrpo.errors import UserError
from tfgrpo.rundir import RunDir

SMALL = ["train", "--task", "demo", "--model", "sim", "--epochs", "1", "--limit", "2", "--batch-size", "2"]


def snapshot(path):
    return {p.relative_to(path): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file() and p.name != "run.lock"}


@pytest.mark.slow
def test_a_second_process_on_a_run_directory_is_refused_and_writes_nothing(tmp_path):
    run = tmp_path / "run"
    tfgrpo(*SMALL, "--out", str(run), "-q")
    before = snapshot(run)
    starting = RunDir(tmp_path / "starting").create()  # a first start that has not written its config yet
    with RunDir(run).locked(), starting.locked():  # training processes hold the directories
        for args in (["train", "--resume", str(run), "--epochs", "2"], [*SMALL, "--out", str(starting.path)]):
            proc = tfgrpo(*args, check=False)
            assert proc.returncode == 2, proc.stderr
            errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]  # (beside the SIMULATION notice)
            assert len(errors) == 1 and "is in use by another tfgrpo process" in errors[0] and "Traceback" not in proc.stderr
        with pytest.raises(UserError, match="in use"), RunDir(run).locked():
            pass
    assert snapshot(run) == before and snapshot(starting.path) == {}
    assert last_json(tfgrpo("train", "--resume", str(run), "--epochs", "2", "--json", "-q"))["steps"] == 2  # free again


def test_the_lock_is_exclusive_and_free_again_after(tmp_path):
    rd = RunDir(tmp_path / "run").create()
    with rd.locked():
        with pytest.raises(UserError, match=r"run is in use by another tfgrpo process: wait"):
            with RunDir(tmp_path / "run").locked():
                pass
    with RunDir(tmp_path / "run").locked():
        pass


@pytest.mark.slow
def test_a_failed_start_leaves_nothing_that_blocks_a_retry(tmp_path):
    run = tmp_path / "run"
    proc = tfgrpo(*SMALL, "--out", str(run), "--store", "http://127.0.0.1:9", check=False)  # fails after the directory is made
    assert proc.returncode == 2 and "cannot reach the Chroma server" in proc.stderr and "no step finished" in proc.stderr
    assert not run.exists()
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("kept")
    assert tfgrpo(*SMALL, "--out", str(mine), "--store", "http://127.0.0.1:9", check=False).returncode == 2
    assert sorted(p.name for p in mine.iterdir()) == ["notes.txt"]
    assert last_json(tfgrpo(*SMALL, "--out", str(run), "--json", "-q"))["steps"] == 1  # the retry is not blocked
    proc = tfgrpo(*SMALL, "--out", str(run), check=False)  # a run with a finished step is still protected
    assert proc.returncode == 2 and "already holds a run" in proc.stderr


def pack(text):
    return Pack.build([Experience(id="E1", text=text)])


@pytest.mark.parametrize("suffix", ["", ".zip"])
def test_writing_over_an_earlier_pack_replaces_it_whole(tmp_path, suffix):
    out = tmp_path / f"p{suffix}"
    pack("When a, do b.").write(out)
    pack("When c, do d.").write(out)
    assert [e.text for e in Pack.load(out).experiences] == ["When c, do d."]
    assert sorted(p.name for p in tmp_path.iterdir()) == [out.name]  # no temporary left beside it


def test_anything_but_a_pack_is_never_overwritten(tmp_path):
    folder = tmp_path / "data"
    folder.mkdir()
    (folder / "manifest.json").write_text("mine")
    (folder / "thesis.tex").write_text("years of work")
    not_zip = tmp_path / "notes.zip"
    not_zip.write_text("not a zip")
    zip_named_folder = tmp_path / "data.zip"
    zip_named_folder.mkdir()
    for out in (folder, not_zip, zip_named_folder):
        with pytest.raises(PackError, match="refusing to overwrite"):
            pack("When a, do b.").write(out)
    assert (folder / "manifest.json").read_text() == "mine" and not_zip.read_text() == "not a zip"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "data.zip", "notes.zip"]


@pytest.mark.slow
def test_pack_export_over_an_existing_directory_is_one_line(tmp_path):
    run = tmp_path / "run"
    tfgrpo(*SMALL, "--out", str(run), "-q")
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "keep.txt").write_text("x")
    proc = tfgrpo("pack", "export", str(run), "--out", str(taken), check=False)
    assert proc.returncode == 2 and "refusing to overwrite" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert sorted(p.name for p in taken.iterdir()) == ["keep.txt"]
    tfgrpo("pack", "export", str(run), "--out", str(tmp_path / "p.zip"))
    tfgrpo("pack", "export", str(run), "--out", str(tmp_path / "p.zip"))  # re-export over its own pack
    assert zipfile.is_zipfile(tmp_path / "p.zip")
    assert tfgrpo("pack", "verify", str(tmp_path / "p.zip")).returncode == 0
