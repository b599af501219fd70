"""Bundled resources and the simulator/task boundary: the simulator reads the built-in data
through tfgrpo.resources only, tasks do not import the simulator, and a built-in task imports
a shared helper like any module (no digging in sys.modules)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tfgrpo import resources

ROOT = Path(__file__).resolve().parent.parent


def imports_of(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            out.add(node.module)
    return out


def test_builtin_folders_and_task_data():
    assert (resources.builtin_dir("tasks") / "demo.py").is_file()
    assert (resources.builtin_dir("prompts") / "compare.j2").is_file()
    assert resources.task_data("demo.jsonl").is_file()


def test_read_jsonl_reads_rows_and_names_a_bad_line(tmp_path):
    good = tmp_path / "a.jsonl"
    good.write_text('{"a": 1}\n\n{"a": 2}\n')
    assert resources.read_jsonl(good) == ({"a": 1}, {"a": 2})
    bad = tmp_path / "b.jsonl"
    bad.write_text('{"a": 1}\n[1]\n')
    with pytest.raises(ValueError, match="b.jsonl:2"):
        resources.read_jsonl(bad)


def test_simulator_imports_no_task_and_no_task_registry():
    for path in (ROOT / "tfgrpo" / "sim").glob("*.py"):
        mods = imports_of(path)
        assert not {m for m in mods if m == "tasks" or m.startswith("tasks.") or m == "tfgrpo.task_registry"}, path


def test_tasks_do_not_import_the_simulator_or_dig_in_sys_modules():
    for path in (ROOT / "tasks").glob("*.py"):
        mods = imports_of(path)
        assert not {m for m in mods if m.startswith("tfgrpo.sim")}, path
        assert "sys.modules" not in path.read_text(), path


def test_math_tasks_share_one_reward_through_a_normal_import():
    from tfgrpo.answers import math_verified
    from tfgrpo.task_registry import load_task

    assert load_task("math-tools").rewards == [math_verified]
