"""Hostile inputs (issue 14, items 12 and 13): each one ends in ONE line on stderr and exit
status 2, never a traceback, and leaves nothing behind (no run directory, no partial file).

Every case is a row of a table: a name and a function that writes its input files under the
test's directory and returns the command line. The commands run in-process through typer's
runner; the directory's contents before and after must be the same."""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import socket
import threading
from pathlib import Path
from typing import Callable

import pytest
from typer.testing import CliRunner

from tfgrpo.cli import build_app

DEEP = 100_000  # nesting far past Python's recursion limit
DEEP_YAML = 5_000  # the same for YAML (read by a pure-Python parser, slowly)
HUGE = "1" * 5000  # past Python's 4300-digit limit for int()
ROW = {"problem": "1+1?", "answer": "2"}


def jsonl(*rows: dict | str) -> str:
    return "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows)


def write(path: Path, data: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    return path


def train_on(tmp: Path, data: Path, *extra: str) -> list[str]:
    return ["train", "--task", "math", "--data", str(data), "--model", "sim", "--out", str(tmp / "run"), "-q", *extra]


def data_case(name: str, content: str | bytes) -> Callable[[Path], list[str]]:
    return lambda tmp: train_on(tmp, write(tmp / name, content))


def config_case(content: str | bytes) -> Callable[[Path], list[str]]:
    return lambda tmp: ["train", "--config", str(write(tmp / "c.yaml", content)), "--model", "sim",
                        "--out", str(tmp / "run"), "-q"]


# ------------------------------------------------------------------------------------ packs

def pack_dir(tmp: Path, lines: list[str] | None = None, manifest_raw: str | bytes | None = None, **manifest) -> Path:
    """A directory pack written by hand, its checksums and counts made to match ``lines``."""
    from experience_store import pack_format

    d = tmp / "pack"
    lines = [json.dumps({"id": "E1", "text": "Check the units before answering."})] if lines is None else lines
    files = {"experiences.jsonl": "".join(x + "\n" for x in lines).encode(), "history.jsonl": b""}
    for name, blob in files.items():
        write(d / name, blob)
    meta = {"format": pack_format.FORMAT, "format_version": pack_format.FORMAT_VERSION,
            "embedding": {"name": "lexical", "dim": 64},
            "counts": {"experiences": len(lines), "retired": 0, "history": 0},
            "files": {n: {"sha256": hashlib.sha256(b).hexdigest(), "bytes": len(b)} for n, b in files.items()},
            **manifest}
    write(d / "manifest.json", manifest_raw if manifest_raw is not None else json.dumps(meta))
    return d


def lesson(ident: object) -> str:
    return json.dumps({"id": ident, "text": "Check the units before answering."})


def verify(**kw) -> Callable[[Path], list[str]]:
    return lambda tmp: ["pack", "verify", str(pack_dir(tmp, **kw))]


def import_into(**kw) -> Callable[[Path], list[str]]:
    return lambda tmp: ["pack", "import", str(pack_dir(tmp, **kw)), "--into", str(tmp / "new")]


def corrupt_library(tmp: Path) -> list[str]:
    good = pack_dir(tmp)
    write(tmp / "lib" / "library" / "versions" / "000001.json", "{not json")
    return ["pack", "import", str(good), "--into", str(tmp / "lib")]


def library(tmp: Path) -> Path:
    """A library folder with one version (what ``pack export`` reads), made from a good pack."""
    from experience_store import Library, Pack

    lib = Library(tmp / "lib" / "library")
    lib.import_pack(Pack.load(pack_dir(tmp)), step=0)
    return lib.path


def export_to(out: str) -> Callable[[Path], list[str]]:
    return lambda tmp: ["pack", "export", str(library(tmp)), "--out", out]


def export_with_eval(content: str | bytes) -> Callable[[Path], list[str]]:
    return lambda tmp: ["pack", "export", str(library(tmp)), "--out", str(tmp / "p.zip"),
                        "--eval", str(write(tmp / "eval.json", content))]


def resume_with_step(line: str) -> Callable[[Path], list[str]]:
    def make(tmp: Path) -> list[str]:
        from tfgrpo.rundir import STEPS, RunDir
        from tfgrpo.training_free.config import RunConfig

        rd = RunDir(tmp / "run").create()
        rd.write_config(RunConfig(task="demo", epochs=1, limit=2, batch_size=2, policy={"model": "sim"}))
        write(rd.file(STEPS), line + "\n")
        return ["train", "--resume", str(rd.path), "-q"]

    return make


def corrupt_version(tmp: Path, content: str | bytes) -> Path:
    """A library folder whose one version file is damaged."""
    write(tmp / "bad" / "library" / "versions" / "000001.json", content)
    return tmp / "bad"


def task_file(tmp: Path, body: str) -> str:
    """A user task file whose factory ``x`` runs ``body``."""
    return str(write(tmp / "t.py", "from tfgrpo.task_registry import task\n@task\ndef x():\n    " + body + "\n")) + ":x"


def proxy_with(tmp: Path) -> list[str]:
    return ["proxy", "--pack", str(pack_dir(tmp, lines=[lesson("")])), "--upstream", "http://127.0.0.1:9/v1"]


CASES: dict[str, Callable[[Path], list[str]]] = {
    # datasets (task_registry.read_rows and the tasks reading rows)
    "dataset jsonl not UTF-8": data_case("d.jsonl", b'{"problem": "\xff\xfe", "answer": "2"}\n'),
    "dataset json not UTF-8": data_case("d.json", b'[{"problem": "\xff", "answer": "2"}]'),
    "dataset jsonl 5000-digit int": data_case("d.jsonl", '{"problem": "x", "answer": ' + HUGE + "}\n"),
    "dataset json 5000-digit int": data_case("d.json", '[{"problem": "x", "answer": ' + HUGE + "}]"),
    "dataset json deeply nested": data_case("d.json", "[" * DEEP + "]" * DEEP),
    "dataset jsonl deeply nested": data_case("d.jsonl", '{"problem": ' + "[" * DEEP + "]" * DEEP + "}\n"),
    "dataset parquet garbage": data_case("d.parquet", b"PAR1 this is not parquet PAR1"),
    "dataset parquet empty file": data_case("d.parquet", b""),
    "dataset json not a list": data_case("d.json", '{"problem": "x"}'),
    "dataset jsonl line not an object": data_case("d.jsonl", "[1, 2]\n"),
    "dataset a directory": lambda tmp: train_on(tmp, (tmp / "dir.jsonl").mkdir() or tmp / "dir.jsonl"),
    "duplicate sample ids": data_case("d.jsonl", jsonl({**ROW, "id": 1}, {**ROW, "id": 1})),
    "dict sample id": data_case("d.jsonl", jsonl({**ROW, "id": {"a": 1}})),
    "list sample id": data_case("d.jsonl", jsonl({**ROW, "id": [1]})),
    "empty sample id": data_case("d.jsonl", jsonl({**ROW, "id": ""})),
    "bool sample id": data_case("d.jsonl", jsonl({**ROW, "id": True})),
    # config YAML (config.load_yaml, config.build)
    "yaml not UTF-8": config_case(b"task: demo\nepochs: \xff\n"),
    "yaml deeply nested": config_case("task_args: " + "[" * DEEP_YAML + "]" * DEEP_YAML + "\n"),
    "yaml 5000-digit int": config_case("epochs: " + HUGE + "\n"),
    "yaml top level a list": config_case("- 1\n"),
    "yaml group_size: true": config_case("sampling:\n  group_size: true\n"),
    "yaml epochs: .nan": config_case("epochs: .nan\n"),
    "yaml a directory": lambda tmp: ["train", "--config", str(tmp), "--out", str(tmp / "run")],
    "--split 50/60": lambda tmp: ["train", "--task", "demo", "--model", "sim", "--split", "50/60", "--out", str(tmp / "run")],
    "--split nan/1": lambda tmp: ["train", "--task", "demo", "--model", "sim", "--split", "nan/1", "--out", str(tmp / "run")],
    "--split 1/inf": lambda tmp: ["train", "--task", "demo", "--model", "sim", "--split", "1/inf", "--out", str(tmp / "run")],
    # --out (a model that needs no notice, so the error is the only line; nothing is sent before --out fails)
    "--out an existing file": lambda tmp: ["train", "--task", "demo", "--model", "openai/x", "--out", str(write(tmp / "f", "x"))],
    "--out /dev/null": lambda tmp: ["train", "--task", "demo", "--model", "openai/x", "--out", "/dev/null"],
    "--out /proc/x": lambda tmp: ["train", "--task", "demo", "--model", "openai/x", "--out", "/proc/x"],
    "--out under a file": lambda tmp: ["train", "--task", "demo", "--model", "openai/x", "--out", str(write(tmp / "f", "x") / "run")],
    # ports
    "proxy --port 99999": lambda tmp: ["proxy", "--pack", str(pack_dir(tmp)), "--upstream", "http://127.0.0.1:9/v1", "--port", "99999"],
    "proxy --port -1": lambda tmp: ["proxy", "--pack", str(pack_dir(tmp)), "--upstream", "http://127.0.0.1:9/v1", "--port", "-1"],
    "serve --port 99999": lambda tmp: ["serve", "some/model", "--port", "99999"],
    "sim-server --port 70000": lambda tmp: ["sim-server", "--port", "70000"],
    # packs (verify, import, proxy start-up)
    "pack 5000-digit int in manifest": verify(manifest_raw='{"format_version": ' + HUGE + "}"),
    "pack deeply nested manifest": verify(manifest_raw="[" * DEEP + "]" * DEEP),
    "pack manifest not UTF-8": verify(manifest_raw=b"{\xff}"),
    "pack non-integer dim": verify(embedding={"name": "lexical", "dim": 64.5}),
    "pack string dim": verify(embedding={"name": "lexical", "dim": "64"}),
    "pack huge dim": verify(embedding={"name": "lexical", "dim": 10**12}),
    "pack 5000-digit int in a lesson": verify(lines=['{"id": "E1", "text": "x", "revision": ' + HUGE + "}"]),
    "pack deeply nested lesson": verify(lines=['{"id": "E1", "text": ' + "[" * DEEP + "]" * DEEP + "}"]),
    "pack empty id": verify(lines=[lesson("")]),
    "pack odd id": verify(lines=[lesson("E1]\n[E2")]),
    "pack integer id": verify(lines=[lesson(7)]),
    "pack counts not the data": verify(counts={"experiences": 5, "retired": 0, "history": 0}),
    "pack import empty id": import_into(lines=[lesson("")]),
    "pack import huge int": import_into(manifest_raw='{"format_version": ' + HUGE + "}"),
    "pack import into a corrupt library": corrupt_library,
    "proxy start-up with an empty-id pack": proxy_with,
    # pack export
    "pack export --out /proc/x.zip": export_to("/proc/x.zip"),
    "pack export --out /proc/x": export_to("/proc/x"),
    "pack export --out /dev/null/x.zip": export_to("/dev/null/x.zip"),
    "pack export --eval deeply nested": export_with_eval("[" * DEEP + "]" * DEEP),
    "pack export --eval 5000-digit int": export_with_eval('{"library": ' + HUGE + "}"),
    "pack export --eval not UTF-8": export_with_eval(b'{"a": "\xff"}'),
    "pack export --eval a list": export_with_eval("[1]"),
    # resume
    "resume: a step record of the wrong shape": resume_with_step('{"step": "one"}'),
    "resume: a step record with a 5000-digit int": resume_with_step('{"step": ' + HUGE + "}"),
    # a start that fails after the run directory was made
    "train --serve without vllm": lambda tmp: ["train", "--task", "demo", "--serve", "no/such-model",
                                               "--out", str(tmp / "run"), "-q"],
    # damaged libraries read by other commands
    "library show, version not JSON": lambda tmp: ["library", "show", str(corrupt_version(tmp, "{oops"))],
    "library log, version not UTF-8": lambda tmp: ["library", "log", str(corrupt_version(tmp, b'{"step": "\xff"}'))],
    "library show, version deeply nested": lambda tmp: ["library", "show", str(corrupt_version(tmp, "[" * DEEP + "]" * DEEP))],
    "library show, version with a 5000-digit int": lambda tmp: ["library", "show", str(corrupt_version(tmp, '{"step": ' + HUGE + "}"))],
    "eval --library damaged": lambda tmp: ["eval", "--task", "demo", "--model", "sim", "--library", str(corrupt_version(tmp, "{oops"))],
    "eval --data not UTF-8": lambda tmp: ["eval", "--task", "math", "--model", "sim", "--library", str(library(tmp)),
                                          "--data", str(write(tmp / "d.jsonl", b'{"problem": "\xff"}\n'))],
    "eval --config deeply nested": lambda tmp: ["eval", "--library", str(library(tmp)), "--model", "sim",
                                                "--config", str(write(tmp / "c.yaml", "k: " + "[" * DEEP_YAML + "]" * DEEP_YAML))],
    # devices and special files given as inputs
    "--data /dev/zero": lambda tmp: ["train", "--task", "math", "--data", "/dev/zero", "--model", "sim", "--out", str(tmp / "run")],
    "--config /dev/zero": lambda tmp: ["train", "--config", "/dev/zero", "--out", str(tmp / "run")],
    # where results are written
    "pack merge --out /proc/x.zip": lambda tmp: ["pack", "merge", str(pack_dir(tmp)), str(pack_dir(tmp)), "--out", "/proc/x.zip"],
    "pack import --into /proc/x": lambda tmp: ["pack", "import", str(pack_dir(tmp)), "--into", "/proc/x"],
    "pack import --into /dev/null": lambda tmp: ["pack", "import", str(pack_dir(tmp)), "--into", "/dev/null"],
    "pack import --into a file": lambda tmp: ["pack", "import", str(pack_dir(tmp)), "--into", str(write(tmp / "f", "x"))],
    "report --out /proc/x": lambda tmp: ["report", str(library(tmp).parent), "--out", "/proc/x"],
    # user task files and prompt templates
    "task factory returns no Task": lambda tmp: ["train", "--task", task_file(tmp, "return 5"), "--model", "sim", "--out", str(tmp / "run")],
    "task factory raises": lambda tmp: ["train", "--task", task_file(tmp, "raise KeyError('split')"), "--model", "sim", "--out", str(tmp / "run")],
    "prompt template with a syntax error": lambda tmp: ["train", "--task", "demo", "--model", "sim", "--out", str(tmp / "run"),
                                                        "--prompts-dir", str(write(tmp / "p" / "agent.j2", "{% if %}").parent)],
    "prompt template not UTF-8": lambda tmp: ["train", "--task", "demo", "--model", "sim", "--out", str(tmp / "run"),
                                              "--prompts-dir", str(write(tmp / "p" / "agent.j2", b"\xff\xfe").parent)],
    # flags typer itself refuses (usage errors)
    "--epochs abc": lambda tmp: ["train", "--epochs", "abc", "--out", str(tmp / "run")],
    "an unknown option": lambda tmp: ["train", "--no-such-flag", "--out", str(tmp / "run")],
    "a missing argument": lambda tmp: ["pack", "verify"],
    "proxy --port abc": lambda tmp: ["proxy", "--pack", str(tmp), "--upstream", "http://127.0.0.1:9/v1", "--port", "abc"],
    # other commands
    "report a directory that is no run": lambda tmp: ["report", str(tmp)],
    "sandbox run a binary": lambda tmp: ["sandbox", "run", "/bin/ls"],
}


ENV = {"train --serve without vllm": {"TFGRPO_VLLM_EXECUTABLE": "/nonexistent/vllm"}}


@pytest.fixture(scope="module")
def runner() -> CliRunner:
    return CliRunner()


def tree(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): (p.stat().st_size if p.is_file() else -1) for p in root.rglob("*")}


def check_one_line(result, before: dict[str, int], root: Path) -> None:
    __tracebackhide__ = True
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    detail = f"exit {result.exit_code}, stderr {result.stderr[-1500:]!r}, exception {result.exception!r}"
    assert result.exit_code == 2, detail
    assert len(lines) == 1 and lines[0].startswith("error: "), detail
    assert "Traceback" not in result.output + result.stderr, detail
    after = tree(root)
    assert after == before, f"left behind: {sorted(set(after) - set(before))}"


def _case(name: str) -> object:
    from tfgrpo.rundir import RunDir

    if name == "train --serve without vllm" and not hasattr(RunDir, "forget_failed_start"):
        return pytest.param(name, marks=pytest.mark.xfail(reason="a failed start's cleanup comes with branch store"))
    return name


@pytest.mark.parametrize("name", [_case(n) for n in CASES])
def test_hostile_input_gives_one_line_and_exit_2(name, tmp_path, runner, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a default run directory (runs/...) would land here too
    for key, value in ENV.get(name, {}).items():
        monkeypatch.setenv(key, value)
    args = CASES[name](tmp_path)
    before = tree(tmp_path)
    result = runner.invoke(build_app(), args, catch_exceptions=True)
    check_one_line(result, before, tmp_path)


# ----------------------------------------------------------------- numbers a server sends

class _Err(Exception):
    def __init__(self, value: str):
        self.headers = {"retry-after": value}


@pytest.mark.parametrize("value", ["nan", "-1", "inf", "-inf", "1e309", "NaN", "", "Wed, 21 Oct 2015 07:28:00 GMT", "9" * 5000])
def test_retry_after_from_a_server_is_finite_non_negative_and_bounded(value):
    from tfgrpo.llm.retry import RetryPolicy, retry_after

    wait = retry_after(_Err(value), upper=60.0)
    assert wait is None or (math.isfinite(wait) and 0 <= wait <= 60.0)
    assert 0 <= RetryPolicy(max_delay=60.0).delay(0, wait) <= 60.0


@pytest.mark.parametrize("usage", [{"prompt_tokens": -10**9, "completion_tokens": -5}, {"prompt_tokens": float("nan"), "completion_tokens": float("inf")},
                                   {"prompt_tokens": "-3", "completion_tokens": True}, {"prompt_tokens": 10**5000, "completion_tokens": None}])
def test_usage_from_a_server_never_lowers_the_counts(usage):
    """Negative, non-finite or absurd usage is read as 0 or capped, so a --max-tokens budget holds."""
    from types import SimpleNamespace

    from tfgrpo.llm.client import LLMClient
    from tfgrpo.llm.reply import Reply
    from tfgrpo.llm.usage import MAX_TOKENS_PER_REPLY

    client = LLMClient(model="openai/x", role="policy")
    reply = Reply(usage=SimpleNamespace(**usage), cost=None, choices=[SimpleNamespace(
        message=SimpleNamespace(content="4", tool_calls=None), finish_reason="stop")])
    out = client._completions(reply, [0])
    stats = client.usage.role("policy")
    for n in (stats.prompt_tokens, stats.completion_tokens, out[0].prompt_tokens, out[0].completion_tokens):
        assert isinstance(n, int) and 0 <= n <= MAX_TOKENS_PER_REPLY


# ------------------------------------------------------------ a Chroma server that dies

try:  # the shared server fixture, until it moves to conftest
    from test_store_shared import chroma_server  # noqa: F401
except ImportError:
    pass


class Relay:
    """A loopback TCP relay in front of the Chroma server; ``cut()`` drops every connection and
    refuses new ones, which is what a client sees of a server killed mid-run."""

    def __init__(self, port: int):
        self.target, self.conns = port, []
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.target))
            self.conns += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(a: socket.socket, b: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := a.recv(65536):
                b.sendall(data)
        with contextlib.suppress(OSError):
            b.shutdown(socket.SHUT_WR)

    def cut(self, *_: object) -> None:
        self.sock.close()
        for c in self.conns:
            with contextlib.suppress(OSError):
                c.shutdown(socket.SHUT_RDWR)
            c.close()


@pytest.mark.slow
def test_chroma_server_lost_mid_run_is_one_line(tmp_path, monkeypatch, chroma_server):
    """``--store`` on a Chroma server that goes away after the first step: one line naming the
    server and the resume command, exit 2, and the finished steps kept."""
    from tfgrpo.cli import train as train_cli
    from tfgrpo.hooks import Hooks

    relay = Relay(int(chroma_server.rsplit(":", 1)[1]))
    monkeypatch.setattr(train_cli, "progress_hooks", lambda enabled=True: contextlib.nullcontext(Hooks(on_step=relay.cut)))
    out, store = tmp_path / "run", f"http://127.0.0.1:{relay.port}"
    result = CliRunner().invoke(build_app(), ["train", "--task", "demo", "--model", "sim", "--epochs", "1", "--limit", "6",
                                              "--batch-size", "2", "--group-size", "2", "--store", store,
                                              "--store-collection", "lost-server", "--out", str(out), "-q"])
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.exit_code == 2 and len(lines) == 1, (result.stderr, result.exception)
    assert f"lost the Chroma server at {store}" in lines[0] and f"--resume {out}" in lines[0], lines[0]
    assert 1 <= (out / "steps.jsonl").read_text().count("\n") < 3  # the steps finished before the loss are kept
