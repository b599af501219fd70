"""Area r3 10 and the report row of r3 minor: ``report`` and ``runs`` on a real run (the simulator)
with one file damaged, valid JSON or YAML of the wrong types included (a string count, a null
step, a missing ``chosen``, a list for a summary). The damaged record is named in one line (its
file, and its line or key) and everything else still shows: the other sections of the report,
the other runs of the listing, the damaged run's own readable columns. A 2,000-character
unbroken lesson wraps inside the report page instead of widening it."""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from cli_helpers import tfgrpo_in_process
from hostile_rows import Case, rows

RUN = ["--task", "demo", "--model", "sim", "--epochs", "2", "--limit", "4", "--batch-size", "2", "-q"]
SUMMARY = "eval/*/summary.json"

# what the report of the undamaged run shows, by section: a needle in report.html for each
SECTIONS = {
    "status": "<td>finished</td>",
    "steps": 'alt="reward per step"',
    "cost": "<td>$0.0",
    "models": "<td>sim</td>",
    "evals": 'alt="evaluation, baseline vs library"',
    "selection": "Best-val selection: kept epoch",
    "library": "All lessons",
    "config": "group_size",
}


@pytest.fixture(scope="module")
def base_run(tmp_path_factory) -> Path:
    """One finished run (two epochs, best-val selection, a price, a saved eval), made once per module."""
    run = tmp_path_factory.mktemp("base") / "run"
    tfgrpo_in_process("train", *RUN, "--out", str(run), "--select", "best-val", "--split", "50/25/25",
                      "--price-per-mtok", "0.5,1.5")  # fmt: skip
    tfgrpo_in_process("eval", "--library", str(run), "-k", "1", "-n", "1", "-q")
    return run


def copy_of(ctx, name: str = "run") -> Path:
    run = ctx.tmp / name
    shutil.copytree(ctx.request.getfixturevalue("base_run"), run, ignore=shutil.ignore_patterns("report", "run.lock"))
    return run


# ------------------------------------------------------------------------------ damages


def json_file(pattern: str, change: Callable[[Any], Any]) -> Callable[[Path], None]:
    """Damage: the JSON file at ``pattern`` replaced by ``change(its data)`` (which may edit it in place)."""

    def damage(run: Path) -> None:
        (path,) = run.glob(pattern)
        data = json.loads(path.read_text())
        new = change(data)
        path.write_text(json.dumps(data if new is None else new))

    return damage


def step_line(n: int, change: Callable[[dict], Any] | str) -> Callable[[Path], None]:
    """Damage: line ``n`` of steps.jsonl edited by ``change``, or replaced by the text ``change``."""

    def damage(run: Path) -> None:
        lines = (run / "steps.jsonl").read_text().splitlines()
        if isinstance(change, str):
            lines[n - 1] = change
        else:
            row = json.loads(lines[n - 1])
            change(row)
            lines[n - 1] = json.dumps(row)
        (run / "steps.jsonl").write_text("".join(line + "\n" for line in lines))

    return damage


def config_yaml(change: Callable[[dict], Any]) -> Callable[[Path], None]:
    """Damage: config.yaml edited by ``change``."""

    def damage(run: Path) -> None:
        data = yaml.safe_load((run / "config.yaml").read_text())
        change(data)
        (run / "config.yaml").write_text(yaml.safe_dump(data, sort_keys=False))

    return damage


def library_version(change: Callable[[dict], Any]) -> Callable[[Path], None]:
    """Damage: the newest library version edited by ``change``."""

    def damage(run: Path) -> None:
        path = max((run / "library" / "versions").glob("*.json"))
        data = json.loads(path.read_text())
        change(data)
        path.write_text(json.dumps(data))

    return damage


def _set(**kv: Any) -> Callable[[dict], None]:
    return lambda d: d.update(kv)


def _drop(key: str) -> Callable[[dict], None]:
    return lambda d: d.pop(key)


# ------------------------------------------------------------------------------ checks


def one_line_naming(text: str, where: str, what: str) -> str:
    """The line of ``text`` naming ``where`` (a file, with its line number when there is one) and ``what``."""
    lines = [line for line in text.splitlines() if where in line and what in line]
    assert lines, f"no line names {where!r} and {what!r}:\n{text}"
    return lines[0]


def report_of_damaged(ctx, damage: Callable[[Path], None], where: str, what: str, *gone: str) -> None:
    """``report`` on the run with ``damage`` done: exit 0, the damage named in one line on stderr
    and in the page, every section but ``gone`` still shown."""
    run = copy_of(ctx)
    damage(run)
    proc = tfgrpo_in_process("report", str(run), check=False)
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    assert "Traceback" not in proc.stderr
    one_line_naming(proc.stderr, where, what)
    page = (run / "report" / "report.html").read_text()
    assert re.search(rf"<li>[^<]*{re.escape(where)}[^<]*{re.escape(what)}", page), "the page does not name it"
    shown = {name for name, needle in SECTIONS.items() if needle in page}
    assert shown >= set(SECTIONS) - set(gone), f"left out: {set(SECTIONS) - shown}"


def runs_with_damaged(ctx, damage: Callable[[Path], None], where: str, what: str, *shown: str) -> None:
    """``runs`` on a folder of two good runs and a damaged one: all three listed; the damaged
    run's row says which file is unreadable and still shows ``shown``; one line names the run,
    the file, its line or key and ``what``; ``--json`` names it too."""
    for name in ("a-good", "z-good"):
        copy_of(ctx, name)
    damage(copy_of(ctx, "m-damaged"))
    proc = tfgrpo_in_process("runs", str(ctx.tmp), check=False)
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    rows_ = {line.split("│")[1].strip(): line for line in proc.stdout.splitlines() if line.startswith("│")}
    for good in ("a-good", "z-good"):
        assert "finished" in rows_[good] and "unreadable" not in rows_[good], rows_[good]
    row = rows_["m-damaged"]
    assert f"unreadable: {Path(where.split(':')[0]).name}" in row, row
    for needle in shown:
        assert needle in row, f"{needle!r} not in {row}"
    assert "m-damaged/" in one_line_naming(proc.stderr, where, what)
    listed = json.loads(tfgrpo_in_process("runs", str(ctx.tmp), "--json").stdout)
    (damaged,) = [r for r in listed if r["run"] == "m-damaged"]
    assert any(where in d and what in d for d in damaged["damaged"]), damaged


# ------------------------------------------------------------------------------ the long lesson


def long_lesson(ctx) -> None:
    """A 2,000-character unbroken lesson: the lesson cells carry ``overflow-wrap: anywhere``, and
    where Chromium is installed the page, measured in it, is no wider than its window."""
    run = copy_of(ctx)
    word = "x" * 2000
    library_version(lambda d: d["experiences"][0].update(text=word))(run)
    assert tfgrpo_in_process("report", str(run)).returncode == 0
    page = (run / "report" / "report.html").read_text()
    css = re.search(r"<style>(.*?)</style>", page, re.DOTALL).group(1)
    rules = dict(re.findall(r"([^{}]+)\{([^}]*)\}", css))
    wraps = [sel.strip() for sel, body in rules.items() if re.search(r"overflow-wrap:\s*anywhere", body)]
    assert "td" in {s.strip() for sel in wraps for s in sel.split(",")}, wraps
    assert f"<td>{word}</td>" in page
    chromium = next((shutil.which(n) for n in ("chromium", "chromium-browser") if shutil.which(n)), None)
    if chromium is None:
        return
    probe = run / "report" / "probe.html"
    script = "<script>document.title = 'W=' + document.documentElement.scrollWidth;</script>"
    probe.write_text(page.replace("</body>", script + "</body>"))
    dom = subprocess.run(
        [
            chromium,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--window-size=1280,800",
            "--dump-dom",
            probe.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    ).stdout
    width = int(re.search(r"<title>W=(\d+)</title>", dom).group(1))
    assert width <= 1280, f"the page is {width} px wide"


# ------------------------------------------------------------------------------ rows

R, M = "r3 10 damaged records", "r3 minor proxy and report"
SHOWN = "listed as damaged in one line (file, line or key); every other section shown"
LISTED = "the damaged run listed with the damage named and its readable columns; the others listed"
CASES = [
    # report: status.json
    Case(R, "status.json: a string count (steps_planned) → report", SHOWN, report_of_damaged,
         (json_file("status.json", _set(steps_planned="many")), "status.json", "steps_planned")),
    Case(R, "status.json: running with a pid past any process id → report", SHOWN, report_of_damaged,
         (json_file("status.json", _set(status="running", pid=10**30)), "status.json", "pid", "status")),
    Case(R, "status.json: a list for the status → report", SHOWN, report_of_damaged,
         (json_file("status.json", _set(status=["finished"])), "status.json", "status", "status")),
    # report: steps.jsonl
    Case(R, "steps.jsonl: a null step → report", SHOWN, report_of_damaged,
         (step_line(2, _set(step=None)), "steps.jsonl:2", "step")),
    Case(R, "steps.jsonl: a string count (library_size) → report", SHOWN, report_of_damaged,
         (step_line(4, _set(library_size="three")), "steps.jsonl:4", "library_size")),
    Case(R, "steps.jsonl: a list for the usage → report", SHOWN, report_of_damaged,
         (step_line(1, _set(usage=[1, 2])), "steps.jsonl:1", "usage")),
    Case(R, "steps.jsonl: a string for a role's calls → report", SHOWN, report_of_damaged,
         (step_line(3, lambda r: r["usage"]["policy"].update(calls="lots")), "steps.jsonl:3", "usage.policy.calls")),
    Case(R, "steps.jsonl: a string for the group rewards → report", SHOWN, report_of_damaged,
         (step_line(2, _set(group_mean_rewards="0.5")), "steps.jsonl:2", "group_mean_rewards")),
    Case(R, "summary.json: a string for library Mean@k → report", SHOWN, report_of_damaged,
         (json_file(SUMMARY, lambda d: d["library"].update(mean_at_k="high")), "summary.json", "library.mean_at_k",
          "evals")),
    Case(R, "summary.json: a list for the summary → report", SHOWN, report_of_damaged,
         (json_file(SUMMARY, lambda d: [d]), "summary.json", "valid dictionary", "evals")),
    Case(R, "summary.json: a string for the baseline → report", SHOWN, report_of_damaged,
         (json_file(SUMMARY, _set(baseline="0.4")), "summary.json", "baseline", "evals")),
    # report: selection.json, config.yaml, the library
    Case(R, "selection.json: no chosen → report", SHOWN, report_of_damaged,
         (json_file("selection.json", _drop("chosen")), "selection.json", "chosen", "selection")),
    Case(R, "selection.json: a string for the candidates → report", SHOWN, report_of_damaged,
         (json_file("selection.json", _set(candidates="all")), "selection.json", "candidates", "selection")),
    Case(R, "config.yaml: a string for policy → report", SHOWN, report_of_damaged,
         (config_yaml(_set(policy="sim")), "config.yaml", "policy", "models")),
    Case(R, "config.yaml: a list for the group size → report", SHOWN, report_of_damaged,
         (config_yaml(lambda d: d["sampling"].update(group_size=[5])), "config.yaml", "sampling.group_size")),
    Case(R, "library version: a string for a lesson's stats → report", SHOWN, report_of_damaged,
         (library_version(lambda d: d["experiences"][0].update(stats="good")), "000004.json",
          "experiences.0.stats")),
    Case(R, "library version: a mapping for the lessons → report", SHOWN, report_of_damaged,
         (library_version(lambda d: d.update(experiences={"E1": {}})), "000004.json", "experiences")),
    # runs
    Case(R, "steps.jsonl: a list for the usage → runs", LISTED, runs_with_damaged,
         (step_line(4, _set(usage=["policy"])), "steps.jsonl:4", "usage", "sim / sim", "demo")),
    Case(R, "steps.jsonl: a null step → runs", LISTED, runs_with_damaged,
         (step_line(4, _set(step=None)), "steps.jsonl:4", "step", "sim / sim", "finished")),
    Case(R, "summary.json: a string for library Mean@k → runs", LISTED, runs_with_damaged,
         (json_file(SUMMARY, lambda d: d["library"].update(mean_at_k="high")), "summary.json", "library.mean_at_k",
          "4/4", "$0.0")),
    Case(R, "summary.json: a list for the summary → runs", LISTED, runs_with_damaged,
         (json_file(SUMMARY, lambda d: [d]), "summary.json", "dictionary", "4/4", "$0.0")),
    Case(R, "config.yaml: a string for policy → runs", LISTED, runs_with_damaged,
         (config_yaml(_set(policy="sim")), "config.yaml", "policy", "4/4", "demo")),
    Case(R, "status.json: running with a pid past any process id → runs", LISTED, runs_with_damaged,
         (json_file("status.json", _set(status="running", pid=10**30)), "status.json", "pid", "4/4", "demo")),
    Case(R, "status.json: a mapping for steps_planned → runs", LISTED, runs_with_damaged,
         (json_file("status.json", _set(steps_planned={"n": 4})), "status.json", "steps_planned", "demo")),
    # the minor item
    Case(M, "a 2,000-character unbroken lesson → report", "the lesson cell wraps: the page keeps its width",
         long_lesson),
]  # fmt: skip
# Every row damages a copy of one trained run (about 10 s to make, each row under 1 s): the slow
# mark keeps the default test run short; CI runs them all.
CASES = [dataclasses.replace(c, slow=True) for c in CASES]


@pytest.mark.parametrize("case", rows(CASES))
def test_hostile_records(case, ctx):
    case.run(ctx)
