"""Epochs count from 1 everywhere: in every file a run writes, in its report and on screen
(the 0-based index only seeds shuffles and rollouts, so response caches keep hitting)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Iterator

import pytest
from cli_helpers import last_json, tfgrpo

from tfgrpo.errors import UserError
from tfgrpo.report import write_report
from tfgrpo.rundir import RunDir

# 8 training problems in one batch: one step per epoch
SMALL = ["train", "--task", "demo", "--model", "sim", "--limit", "8", "--batch-size", "8"]


def _epochs(value: Any) -> Iterator[int]:
    """Every value of an "epoch" key, at any depth."""
    if isinstance(value, dict):
        for k, v in value.items():
            if k == "epoch" and v is not None:
                yield v
            else:
                yield from _epochs(v)
    elif isinstance(value, list):
        for v in value:
            yield from _epochs(v)


def _file_epochs(run: Path) -> dict[str, set[int]]:
    """File (relative to the run) -> the epochs it names, for every JSON and JSONL file of the run."""
    out = {}
    for p in sorted(run.rglob("*.json*")):
        rows = (
            [json.loads(line) for line in p.read_text().splitlines() if line.strip()]
            if p.suffix == ".jsonl"
            else [json.loads(p.read_text())]
        )
        found = set(_epochs(rows))
        if found:
            out[str(p.relative_to(run))] = found
    return out


def test_a_two_epoch_run_counts_epochs_from_one_in_every_file_and_on_screen(tmp_path):
    run = tmp_path / "run"
    proc = tfgrpo(*SMALL, "--epochs", "2", "--split", "50/25/25", "--select", "best-val", "--out", str(run))
    files = _file_epochs(run)
    for name in ("steps.jsonl", "rollouts.jsonl", "groups.jsonl", "selection.json"):
        assert files.pop(name) == {1, 2}, name
    # the rest are library versions: each lesson's provenance names the epoch of its step
    assert files and all(name.startswith("library/") for name in files), files
    step_epoch = {s.step: s.epoch for s in RunDir(run).steps()}
    assert step_epoch == {1: 1, 2: 2}
    newest = json.loads(max((run / "library" / "versions").glob("*.json")).read_text())
    for lesson in newest["experiences"]:
        assert lesson["provenance"]["epoch"] == step_epoch[lesson["provenance"]["step"]]

    # the screen: one progress line per step and the table (step, epoch, ...) agree with the files
    assert re.findall(r"step (\d) \(epoch (\d)\)", proc.stderr) == [("1", "1"), ("2", "2")]
    table = re.findall(r"^│\s+(\d+)\s+│\s+(\d+)\s+│", proc.stdout.split("LLM usage by role")[0], re.M)
    assert table == [("1", "1"), ("2", "2")]
    chosen = json.loads((run / "selection.json").read_text())["chosen"]
    assert f"kept the library of epoch {chosen['epoch']} (step {chosen['step']})" in proc.stderr

    html = write_report(run).html.read_text()
    assert f"kept epoch {chosen['epoch']} (step {chosen['step']})" in html
    assert "epoch 0" not in html and f"epoch {step_epoch[newest['experiences'][0]['provenance']['step']]}, step" in html


def _to_zero_based(run: Path) -> None:
    """Rewrite a run's records as an older tfgrpo wrote them (record version 1, epochs from 0)."""
    for name in ("steps.jsonl", "rollouts.jsonl", "groups.jsonl"):
        rows = [json.loads(line) for line in (run / name).read_text().splitlines()]
        (run / name).write_text("".join(json.dumps({**r, "version": 1, "epoch": r["epoch"] - 1}) + "\n" for r in rows))


OLDER = "run written by an older tfgrpo (record version 1); this version reads version 2 only"


@pytest.mark.slow  # one short run
def test_a_run_written_by_an_older_version_is_refused_not_converted(tmp_path):
    run = tmp_path / "old"
    tfgrpo(*SMALL, "--epochs", "1", "--out", str(run), "-q")
    _to_zero_based(run)
    before = {p.name: p.read_bytes() for p in run.glob("*.jsonl")}
    for args in (["train", "--resume", str(run), "--epochs", "2"], ["report", str(run)]):
        proc = tfgrpo(*args, check=False)
        lines = [line for line in proc.stderr.strip().splitlines() if line.strip()]
        assert proc.returncode == 2 and len(lines) == 1, proc.stderr
        assert f"{run / 'steps.jsonl'}:1: {OLDER}" in lines[0], proc.stderr
    assert {p.name: p.read_bytes() for p in run.glob("*.jsonl")} == before  # nothing rewritten or dropped
    with pytest.raises(UserError, match=re.escape(OLDER)):
        RunDir(run).read("rollouts.jsonl")
