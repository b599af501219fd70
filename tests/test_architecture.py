"""The layering rules of docs/architecture.md, checked on the real import graph (grimp reads
every import statement, function-level ones included)."""

from __future__ import annotations

from pathlib import Path

import grimp
import pytest

ROOT = Path(__file__).resolve().parent.parent
MAX_LINES = 400


@pytest.fixture(scope="module")
def graph():
    return grimp.build_graph("tfgrpo", "experience_store", include_external_packages=True,
                             exclude_type_checking_imports=True, cache_dir=None)


def _modules(graph, package: str) -> list[str]:
    return sorted(m for m in graph.modules if m == package or m.startswith(package + "."))


def _reaches(graph, sources: list[str], target: str) -> list[tuple[str, ...]]:
    """Import chains from any of ``sources`` to ``target`` (a module or a package)."""
    chains = []
    targets = [t for t in graph.modules if t == target or t.startswith(target + ".")]
    for src in sources:
        for t in targets:
            chain = graph.find_shortest_chain(importer=src, imported=t)
            if chain:
                chains.append(chain)
                break
    return chains


# (importer package, forbidden package, why)
FORBIDDEN = [
    ("experience_store", "tfgrpo", "the store is a library of its own: it never imports the toolkit"),
    ("tfgrpo.training_free", "torch", "the training-free loop runs without torch"),
    ("tfgrpo.training_free", "tfgrpo.params", "the modes are independent"),
    ("tfgrpo.params", "chromadb", "parameter mode runs without the experience store"),
    ("tfgrpo.params", "litellm", "parameter mode generates locally"),
    ("tfgrpo.params", "tfgrpo.training_free", "the modes are independent"),
    ("tfgrpo.cli.grpo", "litellm", "the grpo command (and python -m tfgrpo.params) stay torch-side only"),
    ("tfgrpo.cli.grpo", "chromadb", "the grpo command (and python -m tfgrpo.params) stay torch-side only"),
    ("tfgrpo.sim", "tfgrpo.task_registry", "the simulator reads its data through tfgrpo.resources, not through tasks"),
    ("tfgrpo.sim", "tfgrpo.training_free", "the simulator is a server: it knows no loop internals"),
    ("tfgrpo.llm", "tfgrpo.training_free", "model access sits below the loop"),
    ("tfgrpo.llm", "tfgrpo.api", "model access sits below the API"),
    ("tfgrpo.training_free", "tfgrpo.api", "the loop sits below the API"),
    ("tfgrpo.training_free", "tfgrpo.cli", "the loop never prints: it reports through hooks"),
    ("tfgrpo.api", "tfgrpo.cli", "the API never prints"),
    ("tfgrpo.api", "typer", "the API works without the CLI"),
    ("tfgrpo.api", "rich", "the API never prints"),
]
CORE = ["tfgrpo.errors", "tfgrpo.config", "tfgrpo.rundir", "tfgrpo.records", "tfgrpo.rewards", "tfgrpo.task_registry",
        "tfgrpo.hooks", "tfgrpo.version"]
ABOVE_CORE = ["tfgrpo.training_free", "tfgrpo.params", "tfgrpo.llm", "tfgrpo.sim", "tfgrpo.cli", "tfgrpo.api", "chromadb",
              "litellm", "torch"]


@pytest.mark.parametrize("importer,forbidden,why", FORBIDDEN, ids=[f"{a}->{b}" for a, b, _ in FORBIDDEN])
def test_forbidden_imports(graph, importer, forbidden, why):
    chains = _reaches(graph, _modules(graph, importer), forbidden)
    assert not chains, f"{why}; found: {' -> '.join(chains[0])}"


@pytest.mark.parametrize("layer", ABOVE_CORE)
def test_core_modules_import_nothing_above_them(graph, layer):
    chains = _reaches(graph, [m for m in CORE if m in graph.modules], layer)
    assert not chains, f"core module reaches {layer}: {' -> '.join(chains[0])}"


def test_cli_modules_import_only_the_shared_cli_helpers(graph):
    shared = {"tfgrpo.cli", "tfgrpo.cli.console", "tfgrpo.cli.options"}
    bad = [(m, i) for m in _modules(graph, "tfgrpo.cli") if m not in shared
           for i in graph.find_modules_directly_imported_by(m) if i.startswith("tfgrpo.cli") and i not in shared]
    assert not bad, f"CLI modules import each other: {bad}"


def test_no_import_cycles(graph):
    ours = [m for m in graph.modules if m.split(".")[0] in ("tfgrpo", "experience_store")]
    cycles = sorted({tuple(sorted((m, i))) for m in ours for i in graph.find_modules_directly_imported_by(m)
                     if i in ours and graph.find_shortest_chain(importer=i, imported=m)})
    assert not cycles, f"import cycles between: {cycles}"


def test_no_module_over_the_size_limit():
    big = {str(p.relative_to(ROOT)): n for folder in ("tfgrpo", "experience_store", "tasks")
           for p in (ROOT / folder).rglob("*.py") if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert not big, f"modules over {MAX_LINES} lines: {big}"


def test_the_rules_catch_a_violation(tmp_path, monkeypatch):
    """The checks above can fail: a package that breaks a rule is caught."""
    pkg = tmp_path / "layered"
    (pkg / "low").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "low" / "__init__.py").write_text("")
    (pkg / "low" / "a.py").write_text("def f():\n    from layered import high\n")
    (pkg / "high.py").write_text("from layered.low import a\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    g = grimp.build_graph("layered", cache_dir=None)
    assert _reaches(g, _modules(g, "layered.low"), "layered.high")
    assert g.find_shortest_chain(importer="layered.high", imported="layered.low.a")  # so a cycle
