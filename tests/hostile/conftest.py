"""Fixtures of the hostile-input table and the closing table it prints: for each area, how many
rows were tried (ran), held (passed) and failed, and how many were not run (skipped for a kernel
feature this machine lacks, or deselected, e.g. the slow rows of a default run)."""

from __future__ import annotations

from collections import Counter, defaultdict
from types import SimpleNamespace

import pytest
from hostile_rows import AREAS, Case

_area: dict[str, str] = {}  # node id -> area, for the rows collected
_outcome: dict[str, str] = {}  # node id -> held / failed / skipped
_deselected: Counter[str] = Counter()


def _case_of(item) -> Case | None:
    case = getattr(item, "callspec", None) and item.callspec.params.get("case")
    return case if isinstance(case, Case) else None


@pytest.fixture
def ctx(request, tmp_path, monkeypatch):
    """What a row's check works with: its directory, monkeypatch, the row itself (``expected``)
    and ``request`` (for fixtures only some rows need, e.g. a Chroma server)."""
    case = request.node.callspec.params["case"]
    return SimpleNamespace(tmp=tmp_path, monkeypatch=monkeypatch, request=request, case=case, expected=case.expected)


def pytest_itemcollected(item):
    case = _case_of(item)
    if case is not None:
        _area[item.nodeid] = case.area


def pytest_deselected(items):
    for item in items:
        case = _case_of(item)
        if case is not None:
            _deselected[case.area] += 1
            _area.pop(item.nodeid, None)


def pytest_runtest_logreport(report):
    if report.nodeid not in _area:
        return
    if report.failed:
        _outcome[report.nodeid] = "failed"
    elif report.skipped:
        _outcome.setdefault(report.nodeid, "skipped")
    elif report.when == "call":
        _outcome.setdefault(report.nodeid, "held")


def pytest_terminal_summary(terminalreporter):
    if not _outcome and not _deselected:
        return
    counts: dict[str, Counter[str]] = defaultdict(Counter)
    for nodeid, outcome in _outcome.items():
        counts[_area[nodeid]][outcome] += 1
    for area, n in _deselected.items():
        counts[area]["not run"] += n
    width = max(len(a) for a in AREAS)
    write = terminalreporter.write_line
    terminalreporter.section("hostile inputs")
    write(f"{'area':<{width}} | tried | held | failed | not run")
    total: Counter[str] = Counter()
    for area in AREAS:
        c = counts.get(area, Counter())
        tried = c["held"] + c["failed"]
        total.update(c)
        write(f"{area:<{width}} | {tried:>5} | {c['held']:>4} | {c['failed']:>6} | {c['skipped'] + c['not run']:>7}")
    write(
        f"{'all':<{width}} | {total['held'] + total['failed']:>5} | {total['held']:>4} | {total['failed']:>6} | "
        f"{total['skipped'] + total['not run']:>7}"
    )
