"""Areas 12 and 13: hostile command lines and input files. Each ends in ONE line on stderr
starting ``error:`` and exit status 2, never a traceback, and leaves nothing behind: the test
directory holds the same files before and after (no run directory, no partial file).

A row's argument builds the input under the row's directory and returns the command line; the
command runs in-process through typer's runner."""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Callable

import pytest
from hostile_rows import HUGE, Case, deep, lesson, pack_dir, rows, write
from typer.testing import CliRunner

from tfgrpo.cli import build_app

DEEP_YAML = 5_000  # YAML nesting past the recursion limit (a pure-Python parser, so fewer levels)
ROW = {"problem": "1+1?", "answer": "2"}
ONE_LINE = "one line, exit 2, nothing left"

Build = Callable[[Path], list[str]]


def jsonl(*rows_: dict) -> str:
    return "".join(json.dumps(r) + "\n" for r in rows_)


def train_on(tmp: Path, data: Path, *extra: str) -> list[str]:
    return ["train", "--task", "math", "--data", str(data), "--model", "sim", "--out", str(tmp / "run"), "-q", *extra]


def data_file(name: str, content: str | bytes) -> Build:
    return lambda tmp: train_on(tmp, write(tmp / name, content))


def config_file(content: str | bytes) -> Build:
    return lambda tmp: [
        "train",
        "--config",
        str(write(tmp / "c.yaml", content)),
        "--model",
        "sim",
        "--out",
        str(tmp / "run"),
        "-q",
    ]


def train_demo(*extra: str, model: str = "sim") -> Build:
    return lambda tmp: ["train", "--task", "demo", "--model", model, *extra]


def verify(**kw) -> Build:
    return lambda tmp: ["pack", "verify", str(pack_dir(tmp / "pack", **kw))]


def import_into(**kw) -> Build:
    return lambda tmp: ["pack", "import", str(pack_dir(tmp / "pack", **kw)), "--into", str(tmp / "new")]


def corrupt_library(tmp: Path) -> list[str]:
    write(tmp / "lib" / "library" / "versions" / "000001.json", "{not json")
    return ["pack", "import", str(pack_dir(tmp / "pack")), "--into", str(tmp / "lib")]


def library(tmp: Path) -> Path:
    """A library folder with one version (what ``pack export`` reads), made from a good pack."""
    from experience_store import Library, Pack

    lib = Library(tmp / "lib" / "library")
    lib.import_pack(Pack.load(pack_dir(tmp / "pack")), step=0)
    return lib.path


def export_to(out: str) -> Build:
    return lambda tmp: ["pack", "export", str(library(tmp)), "--out", out]


def export_with_eval(content: str | bytes) -> Build:
    return lambda tmp: [
        "pack",
        "export",
        str(library(tmp)),
        "--out",
        str(tmp / "p.zip"),
        "--eval",
        str(write(tmp / "eval.json", content)),
    ]


def resume_with_step(line: str) -> Build:
    def make(tmp: Path) -> list[str]:
        from tfgrpo.rundir import STEPS, RunDir
        from tfgrpo.training_free.config import RunConfig

        rd = RunDir(tmp / "run").create()
        rd.write_config(RunConfig(task="demo", epochs=1, limit=2, batch_size=2, policy={"model": "sim"}))
        write(rd.file(STEPS), line + "\n")
        return ["train", "--resume", str(rd.path), "-q"]

    return make


def damaged_library(tmp: Path, content: str | bytes) -> str:
    """A library folder whose one version file is damaged."""
    write(tmp / "bad" / "library" / "versions" / "000001.json", content)
    return str(tmp / "bad")


def task_file(tmp: Path, body: str) -> str:
    """A user task file whose factory ``x`` runs ``body``."""
    return str(write(tmp / "t.py", "from tfgrpo.task_registry import task\n@task\ndef x():\n    " + body + "\n")) + ":x"


def sandbox_run(*args: str) -> Build:
    """``sandbox run`` on files made first: ``binary`` (not UTF-8), ``ok.py`` and ``big.py`` (2 MiB)."""

    def make(tmp: Path) -> list[str]:
        write(tmp / "binary", b"\x7fELF\x02\x01\x01\x00\xff\xfe")
        write(tmp / "ok.py", "print(1)\n")
        write(tmp / "big.py", "#" * (2 << 20))
        return ["sandbox", "run", *(a.format(tmp=tmp) for a in args)]

    return make


def one_line(ctx, build: Build, says: str | None = None, env: dict[str, str] | None = None) -> None:
    """Run ``build``'s command line: one ``error:`` line (holding ``says``), exit 2, no traceback,
    the directory unchanged."""
    __tracebackhide__ = True
    ctx.monkeypatch.chdir(ctx.tmp)  # a default run directory (runs/...) would land here too
    for key, value in (env or {}).items():
        ctx.monkeypatch.setenv(key, value)
    args = build(ctx.tmp)
    before = tree(ctx.tmp)
    result = CliRunner().invoke(build_app(), args, catch_exceptions=True)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    detail = f"exit {result.exit_code}, stderr {result.stderr[-1500:]!r}, exception {result.exception!r}"
    assert result.exit_code == 2, detail
    assert len(lines) == 1 and lines[0].startswith("error: "), detail
    assert "Traceback" not in result.output + result.stderr, detail
    assert says is None or says in lines[0], detail
    after = tree(ctx.tmp)
    assert after == before, f"left behind: {sorted(set(after) - set(before))}"


def tree(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): (p.stat().st_size if p.is_file() else -1) for p in root.rglob("*")}


def case(
    area: str,
    input: str,
    build: Build,
    says: str | None = None,
    env: dict[str, str] | None = None,
    expect_ok: bool = False,
) -> Case:
    if expect_ok:
        return Case(area, input, "shown, exit 0, no traceback", runs_cleanly, (build,))
    return Case(area, input, ONE_LINE + (f" ({says})" if says else ""), one_line, (build, says, env))


def runs_cleanly(ctx, build: Build) -> None:
    """Run ``build``'s command line: exit 0 and no traceback."""
    ctx.monkeypatch.chdir(ctx.tmp)
    result = CliRunner().invoke(build_app(), build(ctx.tmp), catch_exceptions=True)
    assert result.exit_code == 0 and "Traceback" not in result.output + result.stderr, (
        result.exit_code,
        result.exception,
        result.stderr[-800:],
    )


def sim_run(*eval_args: str, split: str | None = None) -> Build:
    """``eval --library RUN`` with ``eval_args`` on a one-epoch simulated demo run made first."""

    def make(tmp: Path) -> list[str]:
        from tfgrpo import api

        api.train(
            {
                "task": "demo",
                "epochs": 1,
                "policy": {"model": "sim"},
                **({"split": {"fractions": split}} if split else {}),
            },
            out=tmp / "run",
        )
        return ["eval", "--library", str(tmp / "run"), *eval_args]

    return make


T, L, N, PP = "13 one line", "12 lower items", "review newcomer", "review packs and proxy"
CASES = [
    # datasets (task_registry.read_rows and the tasks reading rows)
    case(T, "dataset jsonl not UTF-8", data_file("d.jsonl", b'{"problem": "\xff\xfe", "answer": "2"}\n')),
    case(T, "dataset json not UTF-8", data_file("d.json", b'[{"problem": "\xff", "answer": "2"}]')),
    case(
        T,
        "dataset jsonl 5000-digit int",
        data_file("d.jsonl", '{"problem": "x", "answer": ' + HUGE + "}\n"),
        "a number of 5000 digits (at most 4300 allowed)",
    ),
    case(
        T,
        "dataset json 5000-digit int",
        data_file("d.json", '[{"problem": "x", "answer": ' + HUGE + "}]"),
        "a number of 5000 digits (at most 4300 allowed)",
    ),
    case(T, "dataset json deeply nested", data_file("d.json", deep())),
    case(T, "dataset jsonl deeply nested", data_file("d.jsonl", '{"problem": ' + deep() + "}\n")),
    case(T, "dataset parquet garbage", data_file("d.parquet", b"PAR1 this is not parquet PAR1")),
    case(T, "dataset parquet empty file", data_file("d.parquet", b"")),
    case(T, "dataset json not a list", data_file("d.json", '{"problem": "x"}')),
    case(T, "dataset jsonl line not an object", data_file("d.jsonl", "[1, 2]\n")),
    case(T, "dataset a directory", lambda tmp: train_on(tmp, (tmp / "dir.jsonl").mkdir() or tmp / "dir.jsonl")),
    case(T, "--data /dev/zero", lambda tmp: train_on(tmp, Path("/dev/zero"))),
    case(L, "duplicate sample ids", data_file("d.jsonl", jsonl({**ROW, "id": 1}, {**ROW, "id": 1}))),
    case(L, "dict sample id", data_file("d.jsonl", jsonl({**ROW, "id": {"a": 1}}))),
    case(L, "list sample id", data_file("d.jsonl", jsonl({**ROW, "id": [1]}))),
    case(L, "empty sample id", data_file("d.jsonl", jsonl({**ROW, "id": ""}))),
    case(L, "bool sample id", data_file("d.jsonl", jsonl({**ROW, "id": True}))),
    # config YAML (config.load_yaml, config.build)
    case(T, "yaml not UTF-8", config_file(b"task: demo\nepochs: \xff\n")),
    case(T, "yaml deeply nested", config_file("task_args: " + deep(DEEP_YAML) + "\n")),
    case(T, "yaml 5000-digit int", config_file("epochs: " + HUGE + "\n")),
    case(T, "yaml top level a list", config_file("- 1\n")),
    case(L, "yaml group_size: true", config_file("sampling:\n  group_size: true\n")),
    case(T, "yaml epochs: .nan", config_file("epochs: .nan\n")),
    case(T, "yaml a directory", lambda tmp: ["train", "--config", str(tmp), "--out", str(tmp / "run")]),
    case(T, "--config /dev/zero", lambda tmp: ["train", "--config", "/dev/zero", "--out", str(tmp / "run")]),
    case(L, "--split 50/60", lambda tmp: train_demo("--split", "50/60", "--out", str(tmp / "run"))(tmp)),
    case(L, "--split nan/1", lambda tmp: train_demo("--split", "nan/1", "--out", str(tmp / "run"))(tmp)),
    case(L, "--split 1/inf", lambda tmp: train_demo("--split", "1/inf", "--out", str(tmp / "run"))(tmp)),
    # --out (a model that needs no notice, so the error is the only line; nothing is sent before --out fails)
    case(
        T, "--out an existing file", lambda tmp: train_demo("--out", str(write(tmp / "f", "x")), model="openai/x")(tmp)
    ),
    case(T, "--out /dev/null", train_demo("--out", "/dev/null", model="openai/x")),
    case(T, "--out /proc/x", train_demo("--out", "/proc/x", model="openai/x")),
    case(
        T,
        "--out under a file",
        lambda tmp: train_demo("--out", str(write(tmp / "f", "x") / "run"), model="openai/x")(tmp),
    ),
    # ports
    case(
        T,
        "proxy --port 99999",
        lambda tmp: [
            "proxy",
            "--pack",
            str(pack_dir(tmp / "pack")),
            "--upstream",
            "http://127.0.0.1:9/v1",
            "--port",
            "99999",
        ],
    ),
    case(
        T,
        "proxy --port -1",
        lambda tmp: [
            "proxy",
            "--pack",
            str(pack_dir(tmp / "pack")),
            "--upstream",
            "http://127.0.0.1:9/v1",
            "--port",
            "-1",
        ],
    ),
    case(T, "serve --port 99999", lambda tmp: ["serve", "some/model", "--port", "99999"]),
    case(T, "sim-server --port 70000", lambda tmp: ["sim-server", "--port", "70000"]),
    # packs (verify, import, proxy start-up)
    case(T, "pack 5000-digit int in manifest", verify(manifest_raw='{"format_version": ' + HUGE + "}")),
    case(T, "pack deeply nested manifest", verify(manifest_raw=deep())),
    case(T, "pack manifest not UTF-8", verify(manifest_raw=b"{\xff}")),
    case(T, "pack non-integer dim", verify(manifest={"embedding": {"name": "lexical", "dim": 64.5}})),
    case(T, "pack string dim", verify(manifest={"embedding": {"name": "lexical", "dim": "64"}})),
    case(T, "pack huge dim", verify(manifest={"embedding": {"name": "lexical", "dim": 10**12}})),
    case(T, "pack 5000-digit int in a lesson", verify(lines=['{"id": "E1", "text": "x", "revision": ' + HUGE + "}"])),
    case(T, "pack deeply nested lesson", verify(lines=['{"id": "E1", "text": ' + deep() + "}"])),
    case(T, "pack empty id", verify(lines=[lesson(id="")])),
    case(T, "pack odd id", verify(lines=[lesson(id="E1]\n[E2")])),
    case(T, "pack integer id", verify(lines=[lesson(id=7)])),
    case(T, "pack counts not the data", verify(counts={"experiences": 5, "retired": 0, "history": 0})),
    case(T, "pack import empty id", import_into(lines=[lesson(id="")])),
    case(T, "pack import huge int", import_into(manifest_raw='{"format_version": ' + HUGE + "}")),
    case(T, "pack import into a corrupt library", corrupt_library),
    case(
        T,
        "proxy start-up with an empty-id pack",
        lambda tmp: [
            "proxy",
            "--pack",
            str(pack_dir(tmp / "pack", [lesson(id="")])),
            "--upstream",
            "http://127.0.0.1:9/v1",
        ],
    ),
    # pack export
    case(T, "pack export --out /proc/x.zip", export_to("/proc/x.zip")),
    case(T, "pack export --out /proc/x", export_to("/proc/x")),
    case(T, "pack export --out /dev/null/x.zip", export_to("/dev/null/x.zip")),
    case(T, "pack export --eval deeply nested", export_with_eval(deep())),
    case(T, "pack export --eval 5000-digit int", export_with_eval('{"library": ' + HUGE + "}")),
    case(T, "pack export --eval not UTF-8", export_with_eval(b'{"a": "\xff"}')),
    case(T, "pack export --eval a list", export_with_eval("[1]")),
    # where results are written
    case(
        T,
        "pack merge --out /proc/x.zip",
        lambda tmp: ["pack", "merge", str(pack_dir(tmp / "pack")), str(pack_dir(tmp / "pack")), "--out", "/proc/x.zip"],
    ),
    case(
        T,
        "pack import --into /proc/x",
        lambda tmp: ["pack", "import", str(pack_dir(tmp / "pack")), "--into", "/proc/x"],
    ),
    case(
        T,
        "pack import --into /dev/null",
        lambda tmp: ["pack", "import", str(pack_dir(tmp / "pack")), "--into", "/dev/null"],
    ),
    case(
        T,
        "pack import --into a file",
        lambda tmp: ["pack", "import", str(pack_dir(tmp / "pack")), "--into", str(write(tmp / "f", "x"))],
    ),
    case(T, "report --out /proc/x", lambda tmp: ["report", str(library(tmp).parent), "--out", "/proc/x"]),
    case(L, "report a directory that is no run (tfgrpo report /tmp)", lambda tmp: ["report", str(tmp)]),
    # resume
    case(T, "resume: a step record of the wrong shape", resume_with_step('{"step": "one"}'), "steps.jsonl:1"),
    case(T, "resume: a step record with a 5000-digit int", resume_with_step('{"step": ' + HUGE + "}"), "steps.jsonl:1"),
    # a start that fails after the run directory was made
    case(
        L,
        "train --serve without vllm",
        lambda tmp: ["train", "--task", "demo", "--serve", "no/such-model", "--out", str(tmp / "run"), "-q"],
        env={"TFGRPO_VLLM_EXECUTABLE": "/nonexistent/vllm"},
    ),
    # damaged libraries read by other commands
    case(T, "library show, version not JSON", lambda tmp: ["library", "show", damaged_library(tmp, "{oops")]),
    case(
        T, "library log, version not UTF-8", lambda tmp: ["library", "log", damaged_library(tmp, b'{"step": "\xff"}')]
    ),
    case(T, "library show, version deeply nested", lambda tmp: ["library", "show", damaged_library(tmp, deep())]),
    case(
        T,
        "library show, version with a 5000-digit int",
        lambda tmp: ["library", "show", damaged_library(tmp, '{"step": ' + HUGE + "}")],
    ),
    case(
        T,
        "eval --library damaged",
        lambda tmp: ["eval", "--task", "demo", "--model", "sim", "--library", damaged_library(tmp, "{oops")],
    ),
    case(
        T,
        "eval --data not UTF-8",
        lambda tmp: [
            "eval",
            "--task",
            "math",
            "--model",
            "sim",
            "--library",
            str(library(tmp)),
            "--data",
            str(write(tmp / "d.jsonl", b'{"problem": "\xff"}\n')),
        ],
    ),
    case(
        T,
        "eval --config deeply nested",
        lambda tmp: [
            "eval",
            "--library",
            str(library(tmp)),
            "--model",
            "sim",
            "--config",
            str(write(tmp / "c.yaml", "k: " + deep(DEEP_YAML))),
        ],
    ),
    # user task files and prompt templates
    case(
        T,
        "task factory returns no Task",
        lambda tmp: ["train", "--task", task_file(tmp, "return 5"), "--model", "sim", "--out", str(tmp / "run")],
    ),
    case(
        T,
        "task factory raises",
        lambda tmp: [
            "train",
            "--task",
            task_file(tmp, "raise KeyError('split')"),
            "--model",
            "sim",
            "--out",
            str(tmp / "run"),
        ],
    ),
    case(
        T,
        "prompt template with a syntax error",
        lambda tmp: train_demo(
            "--out", str(tmp / "run"), "--prompts-dir", str(write(tmp / "p" / "agent.j2", "{% if %}").parent)
        )(tmp),
    ),
    case(
        T,
        "prompt template not UTF-8",
        lambda tmp: train_demo(
            "--out", str(tmp / "run"), "--prompts-dir", str(write(tmp / "p" / "agent.j2", b"\xff\xfe").parent)
        )(tmp),
    ),
    # flags typer itself refuses (usage errors)
    case(T, "--epochs abc", lambda tmp: ["train", "--epochs", "abc", "--out", str(tmp / "run")]),
    case(T, "an unknown option", lambda tmp: ["train", "--no-such-flag", "--out", str(tmp / "run")]),
    case(T, "a missing argument", lambda tmp: ["pack", "verify"]),
    case(
        T,
        "proxy --port abc",
        lambda tmp: ["proxy", "--pack", str(tmp), "--upstream", "http://127.0.0.1:9/v1", "--port", "abc"],
    ),
    # sandbox run (the code file and the limits)
    case(T, "sandbox run /bin/ls", sandbox_run("/bin/ls"), "not UTF-8"),
    case(T, "sandbox run a non-UTF-8 file", sandbox_run("{tmp}/binary"), "not UTF-8"),
    case(T, "sandbox run a missing file", sandbox_run("{tmp}/missing.py"), "file not found"),
    case(T, "sandbox run a directory", sandbox_run("{tmp}"), "not a regular file"),
    case(T, "sandbox run /dev/zero", sandbox_run("/dev/zero"), "not a regular file"),
    case(T, "sandbox run a file over the disk limit", sandbox_run("{tmp}/big.py", "--disk-mb", "1"), "disk limit"),
    case(T, "sandbox --cpu 1e30", sandbox_run("{tmp}/ok.py", "--cpu", str(10**30)), "--cpu must be"),
    case(T, "sandbox --cpu -1", sandbox_run("{tmp}/ok.py", "--cpu", "-1"), "--cpu must be"),
    case(T, "sandbox --processes 0", sandbox_run("{tmp}/ok.py", "--processes", "0"), "--processes must be"),
    case(
        T, "sandbox --memory-mb 2**60", sandbox_run("{tmp}/ok.py", "--memory-mb", str(1 << 60)), "--memory-mb must be"
    ),
    case(T, "sandbox --timeout nan", sandbox_run("{tmp}/ok.py", "--timeout", "nan"), "--timeout must be"),
    case(T, "sandbox --timeout inf", sandbox_run("{tmp}/ok.py", "--timeout", "inf"), "--timeout must be"),
    case(T, "sandbox --max-output -5", sandbox_run("{tmp}/ok.py", "--max-output", "-5"), "--max-output must be"),
    case(T, "sandbox --disk-mb 0", sandbox_run("{tmp}/ok.py", "--disk-mb", "0"), "--disk-mb must be"),
    # a newcomer's walk through the CLI (review)
    case(N, "demo -k 0", lambda tmp: ["demo", "-k", "0", "-o", str(tmp / "d")], "-k"),
    case(N, "demo --epochs 0", lambda tmp: ["demo", "--epochs", "0", "-o", str(tmp / "d")], "--epochs"),
    case(
        N,
        "eval --eval-on validation of a run without --split",
        sim_run("--eval-on", "validation"),
        "--eval-on validation needs a --split",
    ),
    case(
        N,
        "eval --eval-on train of a run with --split",
        sim_run("--eval-on", "train", split="70/15/15"),
        "(--eval-on train)",
    ),
    case(
        N,
        "config with a YAML syntax error",
        lambda tmp: ["train", "--config", str(write(tmp / "c.yaml", "task: demo\nepochs: [1, 2\nx: 3\n"))],
        "invalid YAML at line 3, column 2",
    ),
    *(
        case(
            PP,
            f"pack show of a pack whose eval holds {name}",
            lambda tmp, ev=ev: ["pack", "show", str(pack_dir(tmp / "p", manifest={"eval": ev})), "--json"],
            expect_ok=True,
        )
        for name, ev in [
            ("a text Mean@k", {"library": {"mean_at_k": "x"}, "baseline": {}}),
            ("a null Mean@k", {"library": {"mean_at_k": None}, "baseline": {"mean_at_k": 0.5}}),
            ("a list for diff", {"library": {"mean_at_k": 0.5}, "baseline": {"mean_at_k": 0.4}, "diff": [1]}),
        ]
    ),
    case(
        PP,
        "a pack embedded with litellm:ollama/...: pack show --query",
        lambda tmp: [
            "pack",
            "show",
            str(pack_dir(tmp / "p", manifest={"embedding": OLLAMA, "injection": {"mode": "retrieve"}})),
            "--query",
            "fractions",
        ],
        "--trust-embedding",
    ),
    case(
        PP,
        "a pack embedded with litellm:ollama/...: pack import into a new directory",
        lambda tmp: [
            "pack",
            "import",
            str(pack_dir(tmp / "p", manifest={"embedding": OLLAMA})),
            "--into",
            str(tmp / "new"),
        ],
        "--trust-embedding",
    ),
    case(
        PP,
        "a pack embedded with litellm:ollama/...: pack merge",
        lambda tmp: [
            "pack",
            "merge",
            str(pack_dir(tmp / "p", manifest={"embedding": OLLAMA})),
            str(pack_dir(tmp / "q", manifest={"embedding": OLLAMA})),
            "-o",
            str(tmp / "m.zip"),
        ],
        "--trust-embedding",
    ),
    case(
        PP,
        "pack import into a run that has started (config.yaml, no step yet)",
        lambda tmp: [
            "pack",
            "import",
            str(pack_dir(tmp / "p")),
            "--into",
            str(write(tmp / "run" / "config.yaml", "task: demo\n").parent),
        ],
        "holds a run",
    ),
    case(
        N,
        "sim-server on a port in use",
        lambda tmp: ["sim-server", "--port", str(held_port())],
        "--port 0 for a free one",
    ),
]

HELD: list = []
OLLAMA = {
    "name": "litellm",
    "model": "ollama/nomic-embed-text",
}  # a provider whose default server is this machine's port 11434


def held_port() -> int:
    """A port another socket listens on for the rest of the session."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen()
    HELD.append(s)
    return s.getsockname()[1]


@pytest.mark.parametrize("case", rows(CASES))
def test_hostile_command_line(case, ctx):
    case.run(ctx)
