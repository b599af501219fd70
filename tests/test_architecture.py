"""The layering rules of docs/architecture.md, checked on the real import graph (grimp reads
every import statement, function-level ones included)."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import grimp
import pytest

ROOT = Path(__file__).resolve().parent.parent
MAX_LINES = 450  # counted on ruff-formatted code (one argument per line where a call is long)


@pytest.fixture(scope="module")
def graph():
    return grimp.build_graph(
        "tfgrpo", "experience_store", include_external_packages=True, exclude_type_checking_imports=True, cache_dir=None
    )


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
CORE = [
    "tfgrpo.errors",
    "tfgrpo.config",
    "tfgrpo.rundir",
    "tfgrpo.records",
    "tfgrpo.rewards",
    "tfgrpo.task_registry",
    "tfgrpo.hooks",
    "tfgrpo.version",
]
ABOVE_CORE = [
    "tfgrpo.training_free",
    "tfgrpo.params",
    "tfgrpo.llm",
    "tfgrpo.sim",
    "tfgrpo.cli",
    "tfgrpo.api",
    "chromadb",
    "litellm",
    "torch",
]


# Modules a FORBIDDEN rule of their package does not cover: the simulator's CLI plugin (the demo
# command) sits on top of the API like every command; the rest of tfgrpo.sim is a server.
EXEMPT = {"tfgrpo.sim": {"tfgrpo.sim.cli"}}


@pytest.mark.parametrize("importer,forbidden,why", FORBIDDEN, ids=[f"{a}->{b}" for a, b, _ in FORBIDDEN])
def test_forbidden_imports(graph, importer, forbidden, why):
    chains = _reaches(graph, [m for m in _modules(graph, importer) if m not in EXEMPT.get(importer, ())], forbidden)
    assert not chains, f"{why}; found: {' -> '.join(chains[0])}"


@pytest.mark.parametrize("layer", ABOVE_CORE)
def test_core_modules_import_nothing_above_them(graph, layer):
    chains = _reaches(graph, [m for m in CORE if m in graph.modules], layer)
    assert not chains, f"core module reaches {layer}: {' -> '.join(chains[0])}"


SIM_WORDS = re.compile(r"\bsim\b|\bsim[-_/]|simulat", re.IGNORECASE)


def test_only_the_simulator_and_tests_know_the_simulator(graph):
    """The simulator is a provider and a command plugin found through entry points: no module
    outside tfgrpo.sim imports it, and none names it in code, strings or docstrings."""
    outside = [
        m
        for m in graph.modules
        if m.split(".")[0] in ("tfgrpo", "experience_store") and not (m == "tfgrpo.sim" or m.startswith("tfgrpo.sim."))
    ]
    importers = [
        (m, i)
        for m in outside
        for i in graph.find_modules_directly_imported_by(m)
        if i == "tfgrpo.sim" or i.startswith("tfgrpo.sim.")
    ]
    assert not importers, f"modules outside tfgrpo.sim import it: {importers}"
    named = [
        f"{path.relative_to(ROOT)}:{n}: {line.strip()}"
        for folder in ("tfgrpo", "experience_store")
        for path in sorted((ROOT / folder).rglob("*.py"))
        if "sim" not in path.relative_to(ROOT / folder).parts[:1]
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if SIM_WORDS.search(line)
    ]
    assert not named, "the simulator is named outside tfgrpo/sim:\n" + "\n".join(named)


def test_cli_modules_import_only_the_shared_cli_helpers(graph):
    shared = {"tfgrpo.cli", "tfgrpo.cli.console", "tfgrpo.cli.options"}
    bad = [
        (m, i)
        for m in _modules(graph, "tfgrpo.cli")
        if m not in shared
        for i in graph.find_modules_directly_imported_by(m)
        if i.startswith("tfgrpo.cli") and i not in shared
    ]
    assert not bad, f"CLI modules import each other: {bad}"


def test_no_import_cycles(graph):
    ours = [m for m in graph.modules if m.split(".")[0] in ("tfgrpo", "experience_store")]
    cycles = sorted(
        {
            tuple(sorted((m, i)))
            for m in ours
            for i in graph.find_modules_directly_imported_by(m)
            if i in ours and graph.find_shortest_chain(importer=i, imported=m)
        }
    )
    assert not cycles, f"import cycles between: {cycles}"


def test_no_module_over_the_size_limit():
    big = {
        str(p.relative_to(ROOT)): n
        for folder in ("tfgrpo", "experience_store", "tasks")
        for p in (ROOT / folder).rglob("*.py")
        if (n := len(p.read_text().splitlines())) > MAX_LINES
    }
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


# ------------------------------------------------------------------ docs/architecture.md vs the files
ARCH_DOC = ROOT / "docs" / "architecture.md"
REPO_ROOTS = ("tfgrpo/", "experience_store/", "tasks/", "prompts/", "tests/", "bench/")


def _doc_text() -> str:
    """docs/architecture.md without its fenced blocks (data-flow sketches name files loosely)."""
    return re.sub(r"^```.*?^```", "", ARCH_DOC.read_text(encoding="utf-8"), flags=re.M | re.S)


def _package_rows() -> list[tuple[list[str], list[str]]]:
    """(paths, module names) of each row of the "Packages" table: the first cell's backticked
    paths and the second cell's backticked names."""
    text = _doc_text()
    section = re.search(r"^## Packages\n(.*?)(?=^## |\Z)", text, re.M | re.S)
    assert section, "docs/architecture.md has no '## Packages' section"
    rows = []
    for line in section.group(1).splitlines():
        cells = [c.strip() for c in re.split(r"(?<!\\)\|", line.strip())[1:-1]] if line.startswith("|") else []
        if len(cells) < 3 or set(cells[0]) <= set("-: ") or not cells[0].startswith("`"):
            continue  # not a table row, the header or the separator
        rows.append((re.findall(r"`([^`]+)`", cells[0]), re.findall(r"`([^`]+)`", cells[1])))
    assert rows, "the Packages table of docs/architecture.md has no rows"
    return rows


def _modules_in(folder: Path) -> set[str]:
    """A package's modules: its .py files (bar __init__) and its sub-packages."""
    return {p.stem for p in folder.glob("*.py") if p.name != "__init__.py"} | {
        p.name for p in folder.iterdir() if p.is_dir() and (p / "__init__.py").is_file()
    }


def test_every_path_the_architecture_doc_names_exists():
    paths = sorted({p for p in re.findall(r"`([^`\s]+)`", _doc_text()) if p.startswith(REPO_ROOTS)})
    assert paths, "docs/architecture.md names no paths"
    missing = [p for p in paths if not (ROOT / p).exists()]
    assert not missing, f"docs/architecture.md names paths that do not exist: {missing}"


def test_every_module_a_package_row_lists_exists():
    wrong = [
        f"{path}{name} (no {path}{name}.py nor {path}{name}/)"
        for paths, names in _package_rows()
        for path in paths
        if path.endswith("/")
        for name in names
        if not ((ROOT / path / f"{name}.py").is_file() or (ROOT / path / name).is_dir())
    ]
    assert not wrong, f"docs/architecture.md, Packages table: modules that do not exist: {wrong}"


def test_every_tfgrpo_module_and_package_has_a_row():
    named = {p.rstrip("/") for paths, _ in _package_rows() for p in paths}
    on_disk = {
        f"tfgrpo/{p.name}"
        for p in (ROOT / "tfgrpo").iterdir()
        if p.suffix == ".py" or (p.is_dir() and p.name != "__pycache__" and not p.name.startswith("."))
    }
    missing = sorted(on_disk - named)
    assert not missing, f"docs/architecture.md, Packages table: no row for {missing} (add one)"


def test_every_tfgrpo_package_row_lists_all_its_modules():
    problems = []
    for paths, names in _package_rows():
        for path in paths:
            folder = ROOT / path
            if not (path.startswith("tfgrpo/") and path.endswith("/") and (folder / "__init__.py").is_file()):
                continue
            have, listed = _modules_in(folder), set(names)
            if have - listed:
                problems.append(f"{path}: not listed: {', '.join(sorted(have - listed))}")
            if listed - have:
                problems.append(f"{path}: listed but not there: {', '.join(sorted(listed - have))}")
    assert not problems, "docs/architecture.md, Packages table (middle column) vs the files: " + "; ".join(problems)


def test_the_doc_checks_catch_drift(tmp_path, monkeypatch):
    """The doc checks can fail: a package row missing a module, naming a gone one, or a
    module without a row is caught, each named."""
    doc = tmp_path / "architecture.md"
    doc.write_text(
        "# A\n\n## Packages\n\n| path | modules | what |\n|---|---|---|\n"
        "| `tfgrpo/sim/` | `server`, `forward` | x |\n| `tfgrpo/gone.py` | | y |\n\n## Next\n"
    )
    monkeypatch.setattr(sys.modules[__name__], "ARCH_DOC", doc)
    with pytest.raises(
        AssertionError, match=r"tfgrpo/sim/: not listed: .*skills.*tfgrpo/sim/: listed but not there: forward"
    ):
        test_every_tfgrpo_package_row_lists_all_its_modules()
    with pytest.raises(AssertionError, match=r"tfgrpo/sim/forward"):
        test_every_module_a_package_row_lists_exists()
    with pytest.raises(AssertionError, match=r"tfgrpo/gone.py"):
        test_every_path_the_architecture_doc_names_exists()
    with pytest.raises(AssertionError, match=r"no row for .*tfgrpo/api\.py"):
        test_every_tfgrpo_module_and_package_has_a_row()


def test_stage_methods_take_few_arguments():
    """Stages are objects built once with their client, prompts and settings: their methods take
    what changes per call, at most four arguments besides self."""
    import inspect

    from tfgrpo.training_free.distill import Curator
    from tfgrpo.training_free.evaluate import Evaluator
    from tfgrpo.training_free.judge import Judge
    from tfgrpo.training_free.policy import Policy, PromptPolicy
    from tfgrpo.training_free.rollout import Scorer

    methods = [
        Judge.judge_group,
        PromptPolicy.sample_group,
        Policy.sample_group,
        Evaluator.compare,
        Evaluator.baseline,
        Evaluator.select_best_epoch,
        Curator.curate,
        Scorer.score,
    ]
    wide = {m.__qualname__: n for m in methods if (n := len(inspect.signature(m).parameters) - 1) > 4}
    assert not wide, f"stage methods with more than 4 arguments: {wide}"
