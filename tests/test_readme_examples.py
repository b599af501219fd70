"""The README's and docs' examples run as written (issue 13).

Every ``tfgrpo`` command line of a shell block is checked: each flag it uses exists in that
command's ``--help`` (fast, every line, real providers included). The lines that need no real
provider (the simulator, the demo) are also run, as written, in a fresh folder (slow mark).
Environment setup (venv, pip) and the test suite itself are not commands to run here.
"""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli_helpers import ENV
from tfgrpo.cli import build_app

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def _blocks(path: Path, langs: tuple[str, ...]) -> list[tuple[int, str]]:
    out, lines = [], path.read_text(encoding="utf-8").splitlines()
    start = None
    for i, line in enumerate(lines):
        if start is None and line.startswith("```") and line[3:].strip() in langs:
            start = i + 1
        elif start is not None and line.startswith("```"):
            out.append((start, "\n".join(lines[start:i])))
            start = None
    return out


def _commands() -> list[tuple[str, list[str]]]:
    """(where, argv after ``tfgrpo``) for every tfgrpo command line in a shell block."""
    found = []
    for doc in DOCS:
        for start, block in _blocks(doc, ("bash", "sh", "shell", "console")):
            for j, line in enumerate(block.replace("\\\n", " ").splitlines()):  # continued lines joined
                for part in re.split(r"&&|;", line.split("  #", 1)[0]):
                    words = shlex.split(part, comments=True)
                    for k, w in enumerate(words):
                        if w.endswith("tfgrpo") or w == "tfgrpo.params":  # tfgrpo, .venv/bin/tfgrpo, -m tfgrpo
                            argv = words[k + 1 :]
                            if w == "tfgrpo.params":
                                argv = ["grpo", *argv]
                            found.append((f"{doc.name}:{start + j + 1}", argv))
                            break
    return found


COMMANDS = _commands()


def _help(argv: list[str]) -> str:
    result = CliRunner().invoke(build_app(), [*argv, "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    return result.output


def test_the_docs_have_commands_to_check():
    assert len(COMMANDS) >= 8
    assert any(argv[:1] == ["demo"] for _, argv in COMMANDS)


@pytest.mark.parametrize("where,argv", COMMANDS, ids=[w for w, _ in COMMANDS])
def test_every_flag_in_the_docs_exists(where, argv):
    command = [w for w in argv[:2] if not w.startswith("-") and w != "..."]
    command = command[:2] if command[:1] in (["sandbox"], ["library"], ["pack"]) else command[:1]
    text = _help(command)
    for flag in (w.split("=", 1)[0] for w in argv if w.startswith("-") and w not in ("-", "--")):
        assert re.search(rf"(^|[\s,/]){re.escape(flag)}([\s,/=]|$)", text, re.M), (
            f"{where}: {flag} not in tfgrpo {' '.join(command)} --help"
        )


def _offline(argv: list[str]) -> bool:
    """Runs without a real provider: the demo, or the simulator on a task it knows."""
    if argv[:1] == ["demo"]:
        return True
    if argv[:1] != ["train"] or "--serve" in argv:
        return False
    model = argv[argv.index("--model") + 1] if "--model" in argv else None
    return model == "sim"


OFFLINE = [(w, a) for w, a in COMMANDS if _offline(a)]


def test_some_examples_run_offline():
    assert len(OFFLINE) >= 2


@pytest.mark.slow
@pytest.mark.parametrize("where,argv", OFFLINE, ids=[w for w, _ in OFFLINE])
def test_offline_example_runs_as_written(where, argv, tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "tfgrpo", *argv, "--quiet"],
        cwd=tmp_path,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, f"{where}: tfgrpo {' '.join(argv)}\n{proc.stderr[-2000:]}"
    assert list((tmp_path / "runs").iterdir()), "the example left no run directory"


@pytest.mark.slow
def test_readme_python_example_runs(tmp_path):
    blocks = [b for _, b in _blocks(ROOT / "README.md", ("python",)) if "tfgrpo.train(" in b]
    assert blocks
    proc = subprocess.run(
        [sys.executable, "-c", blocks[0]], cwd=tmp_path, env=ENV, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (tmp_path / "demo.zip").is_file()
