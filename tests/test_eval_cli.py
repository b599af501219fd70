"""``tfgrpo eval`` end to end with the simulated model: the JSON contract, saved results,
splits, best-val selection, and one-line errors for bad input."""

import json

import pytest

from cli_helpers import last_json, tfgrpo
from tfgrpo.training_free.split import parse_fractions, split_task
from tfgrpo.task_registry import load_task


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "demo"
    tfgrpo("train", "--task", "demo", "--model", "sim", "--epochs", "1", "--out", str(out), "--quiet")
    return out


def test_eval_json_contract_and_saved_results(run):
    proc = tfgrpo("eval", "--library", str(run), "-k", "2", "-n", "4", "--seeds", "2", "--json", "-q")
    r = last_json(proc)
    for arm in ("baseline", "library"):
        assert set(r[arm]) >= {"mean_at_k", "pass_at_k", "ci95"}
        low, high = r[arm]["ci95"]
        assert low <= r[arm]["mean_at_k"] <= high
        assert r[arm]["samples"] == 32 * 4 * 2
    assert set(r["diff"]) == {"mean", "ci95", "p_value", "significant"}
    assert r["n_problems"] == 32 and r["k"] == 2 and r["n"] == 4 and r["seeds"] == [0, 1]
    assert r["diff"]["mean"] == pytest.approx(r["library"]["mean_at_k"] - r["baseline"]["mean_at_k"], abs=1e-5)
    assert r["diff"]["significant"] and r["diff"]["p_value"] < 0.01  # the simulator's lift is large
    assert [s["seed"] for s in r["by_seed"]] == [0, 1]
    saved = run / "eval" / "test-k2-n4-step4"
    assert r["saved"] == str(saved)
    assert json.loads((saved / "summary.json").read_text()) == r
    rows = [json.loads(line) for line in (saved / "results.jsonl").read_text().splitlines()]
    assert len(rows) == 2 * 2 * 32 * 4
    assert {row["arm"] for row in rows} == {"baseline", "library"}
    right = sum(row["correct"] for row in rows if row["arm"] == "library")
    assert right / (2 * 32 * 4) == pytest.approx(r["library"]["mean_at_k"], abs=1e-5)


@pytest.mark.slow
def test_empty_library_shows_no_significant_difference_in_words(tmp_path):
    (tmp_path / "lib" / "versions").mkdir(parents=True)
    proc = tfgrpo(
        "eval",
        "--library",
        str(tmp_path / "lib"),
        "--task",
        "demo",
        "--model",
        "sim",
        "-k",
        "2",
        "--limit",
        "8",
        "--save-dir",
        str(tmp_path),
        "-q",
    )
    assert "no significant difference" in proc.stdout
    r = last_json(
        tfgrpo(
            "eval",
            "--library",
            str(tmp_path / "lib"),
            "--task",
            "demo",
            "--model",
            "sim",
            "-k",
            "2",
            "--limit",
            "8",
            "--save-dir",
            str(tmp_path),
            "--json",
            "-q",
        )
    )
    assert r["diff"] == {"mean": 0.0, "ci95": [0.0, 0.0], "p_value": 1.0, "significant": False}
    assert (tmp_path / "eval" / "test-k2-n2-step0" / "summary.json").is_file()


def test_split_is_fixed_by_its_seed_and_ids():
    task = load_task("demo")
    a = split_task(task, "70/15/15", seed=3)
    task.dataset = list(reversed(task.dataset))
    b = split_task(task, "70/15/15", seed=3)
    c = split_task(task, "70/15/15", seed=4)
    assert [s.id for s in a.test] == [s.id for s in b.test]
    assert [s.id for s in a.test] != [s.id for s in c.test]
    assert (len(a.train), len(a.validation), len(a.test)) == (22, 5, 5)
    assert not {s.id for s in a.train} & {s.id for s in a.validation + a.test}
    assert parse_fractions("0.8,0.2") == (0.8, 0.2, 0.0)


@pytest.mark.slow
def test_select_best_val_keeps_the_best_epoch_and_eval_uses_it(tmp_path):
    out = tmp_path / "run"
    s = last_json(
        tfgrpo(
            "train",
            "--model",
            "sim",
            "--epochs",
            "3",
            "--split",
            "50/25/25",
            "--select",
            "best-val",
            "--out",
            str(out),
            "--json",
            "-q",
        )
    )
    sel = json.loads((out / "selection.json").read_text())
    assert [c["epoch"] for c in sel["candidates"]] == [1, 2, 3]
    assert sel["validation_problems"] == 8
    best = max(c["mean_at_k"] for c in sel["candidates"])
    chosen = next(c for c in sel["candidates"] if c["step"] == sel["chosen"]["step"])
    assert chosen["mean_at_k"] == best and s["selected_step"] == chosen["step"]
    r = last_json(tfgrpo("eval", "--library", str(out), "--split", "50/25/25", "-k", "2", "--json", "-q"))
    assert r["library_step"] == chosen["step"] and r["n_problems"] == 8 and r["split"] == "test"


@pytest.mark.parametrize(
    "extra,message",
    [
        (["-k", "4", "-n", "2"], "-k 4 is larger than -n 2"),
        (["--split", "100/0/0"], "the test split is empty"),
        (["--split", "1/2/x"], "--split '1/2/x'"),
    ],
)
def test_bad_eval_input_is_one_line(run, extra, message):
    proc = tfgrpo("eval", "--library", str(run), *extra, check=False)
    lines = [line for line in proc.stderr.strip().splitlines() if line.strip()]
    assert proc.returncode == 2 and len(lines) == 1 and message in lines[0], proc.stderr


def test_library_from_another_task_is_refused(run, tmp_path):
    data = tmp_path / "p.jsonl"
    data.write_text('{"id": "a", "problem": "1+1?", "answer": "2"}\n')
    proc = tfgrpo("eval", "--library", str(run), "--task", "math", "--data", str(data), check=False)
    assert proc.returncode == 2 and "learned on task 'demo', not 'math'" in proc.stderr
    assert proc.stderr.strip().count("\n") == 0


def test_best_val_without_a_validation_split_is_one_line(tmp_path):
    proc = tfgrpo("train", "--select", "best-val", "--out", str(tmp_path / "r"), check=False)
    assert proc.returncode == 2 and "needs a validation split" in proc.stderr
