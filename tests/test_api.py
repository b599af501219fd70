"""The Python API runs the main jobs without the CLI, and the CLI's --help shows the config
models' own defaults (one declaration per setting)."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from tfgrpo.cli import build_app
from tfgrpo.cli.options import collect
from tfgrpo.params.config import ParamsConfig
from tfgrpo.training_free.config import EvalConfig, RunConfig

API_SCRIPT = r"""
import json, sys
import tfgrpo
run = tfgrpo.train(tfgrpo.RunConfig(task="demo", epochs=1, batch_size=4, limit=8,
                                    sampling=tfgrpo.SamplingConfig(group_size=3), policy={"model": "sim"}),
                    out=sys.argv[1])
ev = tfgrpo.evaluate(tfgrpo.EvalConfig(task="demo", k=2, limit=6), library=run.run_dir)
pack = tfgrpo.export_pack(run.run_dir, sys.argv[2])
cli_loaded = sorted(m for m in ("typer", "tfgrpo.cli") if m in sys.modules)  # (rich comes with httpx)
print(json.dumps({"steps": len(run.steps), "library": run.library_size, "eval": sorted(ev.summary),
                  "saved": str(ev.saved), "pack": str(pack), "cli_loaded": cli_loaded}))
"""


def test_train_evaluate_export_from_python_without_the_cli(tmp_path):
    out, pack = tmp_path / "run", tmp_path / "lessons.zip"
    proc = subprocess.run(
        [sys.executable, "-c", API_SCRIPT, str(out), str(pack)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 1, f"the API printed: {proc.stdout!r}"  # only the script's own line
    got = json.loads(lines[0])
    assert got["cli_loaded"] == [], "the API imported the CLI"
    assert got["steps"] == 2 and {"baseline", "library", "diff"} <= set(got["eval"])
    assert (out / "steps.jsonl").is_file() and (out / "eval.json").is_file()
    assert pack.is_file() and got["saved"].startswith(str(out))


def _option_help(text: str) -> dict[str, str]:
    """``--flag`` → its help entry with whitespace collapsed (the help wraps long lines)."""
    entries: dict[str, str] = {}
    current = None
    for line in text.splitlines():
        m = re.match(r"\s{2}(?:-\w, )?(--[\w-]+)", line)
        if m:
            current = m.group(1)
            entries[current] = line
        elif current and line.startswith(" " * 10):
            entries[current] += " " + line
    return {k: " ".join(v.split()) for k, v in entries.items()}


@pytest.mark.parametrize(
    "command,model,exclude",
    [
        ("train", RunConfig, frozenset()),
        ("grpo", ParamsConfig, frozenset()),
        ("eval", EvalConfig, frozenset({"group-size", "max-turns", "agent-max-tokens", "agent-wall-s"})),
    ],
)
def test_help_shows_the_config_models_defaults(command, model, exclude):
    result = CliRunner().invoke(build_app(), [command, "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    entries = _option_help(result.output)
    checked = 0
    for spec in collect(model, exclude).values():
        entry = entries.get(f"--{spec.flag}")
        assert entry is not None, f"--{spec.flag} missing from `tfgrpo {command} --help`"
        default = model()  # the value a config built with no settings holds
        for part in spec.path:
            default = getattr(default, part)
        if default in (None, {}, []):
            continue  # described in words ("default: the task's")
        if isinstance(default, dict) and "name" in default:
            default = default["name"]  # a spec shown by the name its flag takes (--embedding lexical)
        assert f"(default: {default})" in entry, f"`tfgrpo {command} --help` {entry!r} should show {default!r}"
        checked += 1
    assert checked >= 5


def test_each_mode_shows_its_own_group_size():
    app = build_app()
    train = _option_help(CliRunner().invoke(app, ["train", "--help"], env={"COLUMNS": "200"}).output)
    grpo = _option_help(CliRunner().invoke(app, ["grpo", "--help"], env={"COLUMNS": "200"}).output)
    assert "(default: 5)" in train["--group-size"] and "(default: 8)" in grpo["--group-size"]
    assert "--loss" not in train and "--judge" not in grpo  # each command has only its own mode's flags
