"""Packs and library versions through the real command line, on a real (simulated) run."""

import json
import zipfile

import pytest

from cli_helpers import ENV, last_json, tfgrpo
from experience_store import Library, Pack


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "demo"
    tfgrpo("train", "--task", "demo", "--model", "sim", "--epochs", "2", "--limit", "16", "--out", str(out), "-q")
    return out


@pytest.mark.slow  # whole CLI commands on a trained run
def test_library_log_show_diff(run):
    log = last_json(tfgrpo("library", "log", str(run), "--json"))
    rows = log["versions"]
    assert [r["step"] for r in rows] == [1, 2, 3, 4]
    assert rows[-1]["size"] == len(Library(run / "library"))
    assert rows[0]["added"] == rows[0]["size"] > 0
    shown = last_json(tfgrpo("library", "show", f"{run}@1", "--json"))
    assert shown["step"] == 1 and len(shown["experiences"]) == rows[0]["size"]
    assert {"retrieved", "cited", "helpful", "harmful"} <= set(shown["experiences"][0])
    diff = last_json(tfgrpo("library", "diff", f"{run}@1", f"{run}@4", "--json"))
    assert len(diff["added"]) - len(diff["retired"]) == rows[-1]["size"] - rows[0]["size"]
    back = last_json(tfgrpo("library", "diff", f"{run}@4", f"{run}@1", "--json"))  # newer to older
    assert {e["id"] for e in back["removed"]} == {e["id"] for e in diff["added"]} and not back["added"]
    same = tfgrpo("library", "diff", f"{run}@2", f"{run}@2")
    assert same.stderr.strip().endswith("no differences")
    bad = tfgrpo("library", "show", f"{run}@99", check=False)
    assert bad.returncode == 2 and "no library version for step 99" in bad.stderr and "Traceback" not in bad.stderr


@pytest.mark.slow  # whole CLI commands on a trained run
def test_export_verify_show_import(run, tmp_path):
    evals = tmp_path / "eval.json"
    evals.write_text(json.dumps({"baseline": {"mean_at_k": 0.4}, "library": {"mean_at_k": 0.7}}))
    pack = tmp_path / "demo.zip"
    manifest = last_json(tfgrpo("pack", "export", str(run), "--out", str(pack), "--eval", str(evals), "--json"))
    lib = Library(run / "library")
    assert manifest["task"] == "demo" and manifest["policy_model"] == "sim" and manifest["source_step"] == 4
    assert manifest["embedding"] == {"name": "lexical", "dim": 512}
    assert manifest["eval"]["library"]["mean_at_k"] == 0.7
    assert manifest["counts"]["experiences"] == len(lib) and manifest["counts"]["history"] > 0
    with zipfile.ZipFile(pack) as zf:
        assert sorted(zf.namelist()) == ["README.md", "experiences.jsonl", "history.jsonl", "manifest.json"]
    assert last_json(tfgrpo("pack", "verify", str(pack), "--json"))["ok"] is True
    shown = last_json(tfgrpo("pack", "show", str(pack), "--query", "anything", "--json"))
    assert [e["text"] for e in shown["experiences"]] == [e.text for e in lib.experiences]
    # the human view shows the recorded evaluation, the injection settings and the injected block
    human = tfgrpo("pack", "show", str(pack), "--query", "anything", env={**ENV, "COLUMNS": "250"}).stdout
    assert "library 0.700 vs baseline 0.400" in human and "all, 2000 tokens, top 8" in human
    assert "injected for the query" in human and lib.experiences[0].text[:40] in " ".join(human.split())
    assert "\\n" not in human  # the block's line breaks are printed as breaks, not as escapes
    # import into a new library: the same lessons, ids kept
    res = last_json(tfgrpo("pack", "import", str(pack), "--into", str(tmp_path / "new"), "--json"))
    assert res["added"] == len(lib)
    imported = Library(tmp_path / "new" / "library")
    assert [(e.id, e.text) for e in imported.experiences] == [(e.id, e.text) for e in lib.experiences]
    # importing again adds nothing (exact duplicates are never stored twice)
    again = last_json(tfgrpo("pack", "import", str(pack), "--into", str(tmp_path / "new"), "--json"))
    assert again["added"] == 0 and again["size"] == len(lib)
    # an earlier step
    early = last_json(tfgrpo("pack", "export", str(run), "--out", str(tmp_path / "s1"), "--step", "1", "--json"))
    assert early["source_step"] == 1 and (tmp_path / "s1" / "manifest.json").is_file()


def test_import_refuses_other_embedding_unless_reembedded(run, tmp_path):
    pack = tmp_path / "p.zip"
    tfgrpo("pack", "export", str(run), "--out", str(pack))
    target = Library(tmp_path / "lib", embedding={"name": "lexical", "dim": 64})
    from experience_store import ExperienceOp

    target.apply([ExperienceOp(op="ADD", text="When unsure, check the units.")], step=1)
    refused = tfgrpo("pack", "import", str(pack), "--into", str(tmp_path / "lib"), check=False)
    assert refused.returncode == 2
    assert "embedded with lexical:512 but this library uses lexical:64; re-embed it with --reembed" in refused.stderr
    assert Library(tmp_path / "lib").versions() == [1]
    ok = last_json(tfgrpo("pack", "import", str(pack), "--into", str(tmp_path / "lib"), "--reembed", "--json"))
    lib = Library(tmp_path / "lib")
    assert ok["added"] > 0 and lib.state.embedding["dim"] == 64 and lib.versions() == [1, 2]
    assert lib.collection().count() == len(lib)


def test_bad_pack_is_refused_in_one_line_and_nothing_is_written(run, tmp_path):
    good = tmp_path / "good.zip"
    tfgrpo("pack", "export", str(run), "--out", str(good))
    bad = tmp_path / "bad.zip"
    with zipfile.ZipFile(good) as src, zipfile.ZipFile(bad, "w") as dst:
        for info in src.infolist():
            dst.writestr(info.filename, src.read(info))
        dst.writestr("../../escape.sh", "echo pwned")
    for cmd in (
        ["pack", "verify", str(bad)],
        ["pack", "import", str(bad), "--into", str(tmp_path / "target")],
        ["pack", "show", str(tmp_path / "missing.zip")],
    ):
        proc = tfgrpo(*cmd, check=False)
        assert proc.returncode == 2, proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1 and proc.stderr.startswith("error:"), proc.stderr
    assert not (tmp_path / "target").exists() and not (tmp_path.parent / "escape.sh").exists()


@pytest.mark.slow  # whole CLI commands on a trained run
def test_pack_diff_and_merge(run, tmp_path):
    a, b = tmp_path / "a.zip", tmp_path / "b.zip"
    tfgrpo("pack", "export", str(run), "--out", str(a), "--step", "1")
    tfgrpo("pack", "export", str(run), "--out", str(b))
    diff = last_json(tfgrpo("pack", "diff", str(a), str(b), "--json"))
    pa, pb = Pack.load(a), Pack.load(b)
    assert diff["same"] + len(diff["removed"]) == len(pa.active)
    merged = last_json(tfgrpo("pack", "merge", str(a), str(b), "--out", str(tmp_path / "m.zip"), "--json"))
    pm = Pack.load(tmp_path / "m.zip")
    assert merged["experiences"] == len(pm.active) <= len(pa.active) + len(pb.active)
    assert len(merged["skipped"]) >= diff["same"]  # every lesson present in both is kept once
    assert len({e.text for e in pm.active}) == len(pm.active)


def test_export_follows_best_val_attaches_only_matching_eval_and_omits_leaks(run, tmp_path):
    import shutil

    import yaml

    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    (copy / "selection.json").write_text(json.dumps({"chosen": {"step": 2}}))
    (copy / "eval.json").write_text(json.dumps({"library_step": 4, "library": {"mean_at_k": 0.7}}))
    leak = {
        "step": 1,
        "op": {"op": "ADD", "text": "SECRET training problem: 17 fence posts"},
        "status": "rejected",
        "error": "leak: quotes a training problem",
    }
    with (copy / "ops.jsonl").open("a") as fh:
        fh.write(json.dumps(leak) + "\n")
        fh.write(
            json.dumps({**leak, "status": "noop", "error": "leak flagged (kept): quotes a training problem"}) + "\n"
        )
    chosen = last_json(tfgrpo("pack", "export", str(copy), "--out", str(tmp_path / "a.zip"), "--json"))
    assert chosen["source_step"] == 2 and chosen["eval"] is None  # eval.json scored step 4, not step 2
    assert [e.text for e in Pack.load(tmp_path / "a.zip").experiences] == [
        e.text for e in Library(copy / "library", at_step=2).state.experiences
    ]
    history = Pack.load(tmp_path / "a.zip").history
    assert history and not any("SECRET" in r.op.text for r in history)
    latest = last_json(tfgrpo("pack", "export", str(copy), "--out", str(tmp_path / "b.zip"), "--step", "4", "--json"))
    assert latest["source_step"] == 4 and latest["eval"]["library"]["mean_at_k"] == 0.7
    library_cfg = yaml.safe_load((copy / "config.yaml").read_text())["library"]
    assert latest["injection"] == library_cfg["injection"] and set(library_cfg["injection"]) == {
        "mode",
        "budget_tokens",
        "top_k",
    }


@pytest.mark.slow
def test_imported_pack_is_the_starting_library_of_a_run_trained_there(run, tmp_path):
    pack = tmp_path / "p.zip"
    tfgrpo("pack", "export", str(run), "--out", str(pack))
    before = Library(run / "library").versions()
    refused = tfgrpo("pack", "import", str(pack), "--into", str(run), check=False)
    assert refused.returncode == 2 and len(refused.stderr.strip().splitlines()) == 1
    assert "import into a new directory and train there" in refused.stderr
    assert Library(run / "library").versions() == before
    target = tmp_path / "lib-run"
    res = last_json(tfgrpo("pack", "import", str(pack), "--into", str(target), "--json"))
    assert res["step"] == 0 and Library(target / "library").versions() == [0]
    tfgrpo("train", "--task", "demo", "--model", "sim", "--epochs", "1", "--limit", "16", "--out", str(target), "-q")
    lib = Library(target / "library")
    assert lib.versions()[0] == 0 and {e.text for e in Pack.load(pack).active} <= {
        e.text for e in lib.state_at(0).active()
    }
    rewards = [json.loads(line)["mean_reward"] for line in (target / "steps.jsonl").read_text().splitlines()]
    fresh = tmp_path / "fresh"
    tfgrpo("train", "--task", "demo", "--model", "sim", "--epochs", "1", "--limit", "16", "--out", str(fresh), "-q")
    baseline = [json.loads(line)["mean_reward"] for line in (fresh / "steps.jsonl").read_text().splitlines()]
    assert rewards[0] >= baseline[0] + 0.3, (rewards, baseline)  # the sim was given the pack's skills at step 1


def test_exported_packs_are_readable_by_others_as_the_umask_allows(run, tmp_path):
    import os
    import stat

    from tfgrpo import api

    old = os.umask(0o022)
    try:
        for out in (tmp_path / "p.zip", tmp_path / "pdir"):
            api.export_pack(run, out)
            assert stat.S_IMODE(out.stat().st_mode) == (0o644 if out.suffix == ".zip" else 0o755), out
    finally:
        os.umask(old)
