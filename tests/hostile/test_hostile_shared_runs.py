"""Issue 23, items 1, 2 and 8 and the run-directory minor items: a run directory someone hands
you is data (its endpoint, key variable, task code and embedder are not used unless it is your
own run or you pass --trust-run); eval on a read-only run stops before it evaluates; a hand edit
of config.yaml cannot slip past the resume guard; bad cache paths and group sizes are one line;
the "in use" error names the live holder."""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from hostile_rows import Case, pack_dir, rows

from cli_helpers import ENV, tfgrpo
from openai_stub import StubServer
from tfgrpo import api
from tfgrpo.errors import UserError
from tfgrpo.rundir import RunDir
from tfgrpo.training_free.config import EvalConfig, RunConfig

SECRET = "hunter2-not-a-real-secret"
PLANTED = "import pathlib, os\npathlib.Path(os.environ['PLANTED_MARK']).write_text('ran')\n"


@pytest.fixture(scope="module")
def made_here(tmp_path_factory):
    """A finished simulated run made by this user (tfgrpo wrote its config.yaml)."""
    out = tmp_path_factory.mktemp("own") / "run"
    api.train(
        RunConfig(task="demo", epochs=1, limit=4, batch_size=2, policy={"model": "sim"}, sampling={"group_size": 3}),
        out=out,
    )
    return out


def handed(ctx, made_here: Path, **change) -> Path:
    """A copy of ``made_here`` with ``change`` written into its config.yaml by someone else."""
    run = ctx.tmp / "shared_run"
    shutil.copytree(made_here, run)
    data = yaml.safe_load((run / "config.yaml").read_text())
    for key, value in change.items():
        section, _, field = key.partition("__")
        (data[section].__setitem__(field, value) if field else data.__setitem__(section, value))
    (run / "config.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    return run


def planted_task(ctx, run: Path) -> Path:
    mark = ctx.tmp / "planted-code-ran"
    (run / "tasks.py").write_text(PLANTED + "from tfgrpo import task\n")
    ctx.monkeypatch.setenv("PLANTED_MARK", str(mark))
    return mark


def quick(**kw) -> EvalConfig:
    return EvalConfig(k=1, limit=2, **kw)


def evaluate(run: Path, cfg: EvalConfig, **kw):
    return api.evaluate(cfg, run, on_training_problems=True, **kw)


# ------------------------------------------------------------------ 1-2 a shared run is data


def secrets_stay_home(ctx, made_here, mine_given: tuple[str, ...]) -> None:
    """The user names their model (and maybe their server); the run's server and key variable
    stay unused whatever the user left out."""
    with StubServer() as theirs, StubServer() as mine:
        run = handed(ctx, made_here, policy__api_base=theirs.base_url, policy__api_key_env="AWS_SECRET_ACCESS_KEY")
        ctx.monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
        ctx.monkeypatch.setenv("OPENAI_API_KEY", "mine")
        given = {"model": "openai/mine", "api_base": mine.base_url} if "api_base" in mine_given else {"model": "sim"}
        evaluate(run, quick(policy=given))
        assert theirs.requests == 0
        assert not any(SECRET in (a or "") for a in mine.auth), mine.auth
        assert mine.requests > 0 or "api_base" not in mine_given


def their_endpoint_needs_my_model(ctx, made_here) -> None:
    with StubServer() as theirs:
        run = handed(ctx, made_here, policy__model="openai/theirs", policy__api_base=theirs.base_url)
        with pytest.raises(UserError, match=r"not made here and names its own endpoint .*pass your own --model"):
            evaluate(run, quick())
        assert theirs.requests == 0


def their_task_file_is_not_imported(ctx, made_here) -> None:
    run = handed(ctx, made_here)
    mark = planted_task(ctx, run)
    data = yaml.safe_load((run / "config.yaml").read_text())
    data["task"] = f"{run}/tasks.py:demo"
    (run / "config.yaml").write_text(yaml.safe_dump(data))
    proc = tfgrpo("eval", "--library", str(run), "--model", "sim", "-k", "1", "--limit", "2", check=False,
                  env={**ENV, "PLANTED_MARK": str(mark)})  # fmt: skip
    assert proc.returncode == 2 and "names its task as code" in proc.stderr and "--task" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert not mark.exists()


def trust_run_accepts_them(ctx, made_here) -> None:
    with StubServer() as theirs:
        run = handed(ctx, made_here, policy__model="openai/theirs", policy__api_base=theirs.base_url)
        evaluate(run, quick(), trust_run=True)
        assert theirs.requests > 0


def pack_task_file_is_not_imported(ctx) -> None:
    d = pack_dir(ctx.tmp / "pack")
    mark = planted_task(ctx, ctx.tmp)  # beside the pack: a pack folder holds no other files
    m = json.loads((d / "manifest.json").read_text())
    (d / "manifest.json").write_text(json.dumps({**m, "task": f"{ctx.tmp}/tasks.py:demo"}))
    with pytest.raises(UserError, match="names its task as code"):
        api.evaluate(quick(policy={"model": "sim"}), d)
    assert not mark.exists()


def foreign_embedder_refused(ctx, made_here) -> None:
    run = handed(ctx, made_here, library__injection={"mode": "retrieve"})
    for version in (run / "library" / "versions").glob("*.json"):
        state = json.loads(version.read_text())
        version.write_text(json.dumps({**state, "embedding": {"name": "litellm", "model": "openai/theirs"}}))
    with pytest.raises(UserError, match=r"names the embedding litellm.*--trust-run"):
        evaluate(run, quick(policy={"model": "sim"}))


def my_own_run_keeps_working(ctx, made_here) -> None:
    with StubServer() as mine:
        run = ctx.tmp / "mine"
        api.train(
            RunConfig(task="demo", epochs=1, limit=2, batch_size=2, policy={"model": "openai/m", "api_base": mine.base_url},
                      judge={"model": "sim"}, sampling={"group_size": 2}),
            out=run,
        )  # fmt: skip
        before = mine.requests
        evaluate(run, quick())  # its endpoint, from its config.yaml, with no flags
        assert mine.requests > before


def export_records_the_task_name(ctx, made_here) -> None:
    run = handed(ctx, made_here, task=f"{ctx.tmp}/elsewhere/tasks.py:demo")
    pack = api.export_pack(run, ctx.tmp / "p.zip")
    assert pack.manifest.task == "demo"


def report_and_runs_run_nothing(ctx, made_here) -> None:
    with StubServer() as theirs:
        run = handed(ctx, made_here, policy__api_base=theirs.base_url)
        mark = planted_task(ctx, run)
        data = yaml.safe_load((run / "config.yaml").read_text())
        (run / "config.yaml").write_text(yaml.safe_dump({**data, "task": f"{run}/tasks.py:demo"}))
        env = {**ENV, "PLANTED_MARK": str(mark)}
        tfgrpo("report", str(run), "-o", str(ctx.tmp / "r.html"), env=env)
        tfgrpo("runs", str(ctx.tmp), env=env)
        assert not mark.exists() and theirs.requests == 0


# ------------------------------------------------------------------ 8 read-only run directory


@contextlib.contextmanager
def read_only_copy(ctx, made_here):
    mnt = ctx.tmp / "ro"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(mnt)], capture_output=True).returncode:
        pytest.skip("mounting a tmpfs is not permitted here")
    try:
        shutil.copytree(made_here, mnt / "run")
        subprocess.run(["mount", "-o", "remount,ro", str(mnt)], check=True)
        yield mnt / "run"
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def eval_on_read_only_run(ctx, made_here) -> None:
    with read_only_copy(ctx, made_here) as run:
        calls = []
        with pytest.raises(UserError, match=r"cannot save .*--save-dir") as e:
            evaluate(run, quick(), hooks=api.Hooks(on_phase=lambda *a: calls.append(a)))
        assert not calls, "it evaluated before finding it cannot save"
        assert len(str(e.value).splitlines()) == 1
        out = evaluate(run, quick(), save_dir=ctx.tmp / "elsewhere")  # the advice works
        assert Path(out.saved).is_relative_to(ctx.tmp / "elsewhere")


def eval_where_results_cannot_go(ctx, made_here) -> None:
    run = ctx.tmp / "run"
    shutil.copytree(made_here, run)
    (run / "eval").write_text("a file where the eval folder would be")
    calls = []
    with pytest.raises(UserError, match="cannot save"):
        evaluate(run, quick(), hooks=api.Hooks(on_phase=lambda *a: calls.append(a)))
    assert not calls


# ------------------------------------------------------------------ minor: resume and config


def hand_edit_cannot_resume(ctx, made_here) -> None:
    run = ctx.tmp / "run"
    shutil.copytree(made_here, run)
    text = (run / "config.yaml").read_text()
    assert "group_size: 3" in text
    (run / "config.yaml").write_text(text.replace("group_size: 3", "group_size: 5"))
    proc = tfgrpo("train", "--resume", str(run), "--epochs", "2", "-q", check=False)
    assert proc.returncode == 2 and "was edited after tfgrpo wrote it" in proc.stderr, proc.stderr
    assert len(RunDir(run).steps()) == 2


def flag_change_still_resumes(ctx, made_here) -> None:
    run = ctx.tmp / "run"
    shutil.copytree(made_here, run)
    tfgrpo("train", "--resume", str(run), "--epochs", "2", "-q")
    assert len(RunDir(run).steps()) == 4


def cache_path_unusable(ctx, where: str) -> None:
    proc = tfgrpo("train", "--task", "demo", "--model", "sim", "--limit", "2", "--batch-size", "2",
                  "--out", str(ctx.tmp / "run"), "--cache-path", where.format(tmp=ctx.tmp), "-q", check=False)  # fmt: skip
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "cannot open the response cache" in errors[0], proc.stderr
    assert not (ctx.tmp / "run").exists()  # a failed start leaves nothing


def group_size_bounded(ctx) -> None:
    proc = tfgrpo("train", "--task", "demo", "--model", "sim", "--group-size", "100000", "-q", check=False)
    assert proc.returncode == 2 and "group" in proc.stderr.lower() and "Traceback" not in proc.stderr


def in_use_names_the_live_holder(ctx, made_here) -> None:
    run = ctx.tmp / "run"
    shutil.copytree(made_here, run)
    status = json.loads((run / "status.json").read_text())
    (run / "status.json").write_text(json.dumps({**status, "status": "running", "pid": 999_999_999}))
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from tfgrpo.rundir import RunDir\n"
         "with RunDir(sys.argv[1]).locked():\n print('held', flush=True); time.sleep(60)", str(run)],
        stdout=subprocess.PIPE, text=True, env=ENV,
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(UserError) as e:
            with RunDir(run).locked():
                pass
        assert "999999999" not in str(e.value) and f"pid {holder.pid}" in str(e.value)
    finally:
        holder.kill()
        holder.wait()


async def resumed_group_is_the_uninterrupted_group(ctx, cached: tuple[int, ...]) -> None:
    from tfgrpo.llm import LLMClient
    from tfgrpo.llm.cache import ResponseCache
    from tfgrpo.sim import start_sim_server

    messages = [{"role": "user", "content": "What is 12 + 30? End with 'Answer: N'."}]
    with start_sim_server(seed=3) as sim:

        def client(cache_file: str) -> LLMClient:
            return LLMClient(model="openai/sim-policy", api_base=sim.base_url, api_key="sim",
                             cache=ResponseCache(ctx.tmp / cache_file))  # fmt: skip

        whole = [c.text for c in await client("whole.sqlite").sample(messages, n=6, seed=11, temperature=1.0)]
        part = client("part.sqlite")
        first = await part.sample(messages, n=max(cached) + 1, seed=11, temperature=1.0)  # a group cut short
        with part.cache._db:  # keep only the samples the killed run had finished
            part.cache._db.execute("DELETE FROM responses WHERE idx NOT IN (%s)" % ",".join(map(str, cached)))
        resumed = [c.text for c in await part.sample(messages, n=6, seed=11, temperature=1.0)]
        assert [first[i].text for i in cached] == [whole[i] for i in cached]
        assert resumed == whole, (resumed, whole)


CASES = [
    Case("r3 01-02 shared run is data", "config.yaml names their server and AWS_SECRET_ACCESS_KEY; I name my model",
         "no request reaches their server", secrets_stay_home, (("model",),)),
    Case("r3 01-02 shared run is data", "the same; I name my model and my server",
         "my server never sees the secret", secrets_stay_home, (("model", "api_base"),)),
    Case("r3 01-02 shared run is data", "config.yaml names their server; I name no model",
         "one line asking for my --model; no request sent", their_endpoint_needs_my_model),
    Case("r3 01-02 shared run is data", "config.yaml names tasks.py inside the run as the task",
         "one line asking for my --task; the file is never imported", their_task_file_is_not_imported, slow=True),
    Case("r3 01-02 shared run is data", "--trust-run on a run naming its own server",
         "the run's endpoint is used, as asked", trust_run_accepts_them),
    Case("r3 01-02 shared run is data", "a pack whose manifest names a task file",
         "refused before importing it", pack_task_file_is_not_imported),
    Case("r3 01-02 shared run is data", "a handed library names a litellm embedder",
         "refused: the queries would go where its author chose", foreign_embedder_refused),
    Case("r3 01-02 shared run is data", "my own run with a local server, evaluated with no flags",
         "its endpoint is used as before", my_own_run_keeps_working),
    Case("r3 01-02 shared run is data", "export of a run whose task is a file path",
         "the pack records the task's name, not a path", export_records_the_task_name),
    Case("r3 01-02 shared run is data", "report and runs on a run naming task code and a server",
         "nothing imported, nothing sent", report_and_runs_run_nothing, slow=True),
    Case("r3 08 read-only run", "eval of a run on a read-only filesystem",
         "one line before any evaluation, naming --save-dir; --save-dir then works", eval_on_read_only_run),
    Case("r3 08 read-only run", "eval where the run's eval/ is a file",
         "one line before any evaluation", eval_where_results_cannot_go),
    Case("r3 minor resume and config", "config.yaml's group size edited by hand, then --resume",
         "refused in one line, as the same flag is", hand_edit_cannot_resume, slow=True),
    Case("r3 minor resume and config", "--resume --epochs 2 on an untouched run",
         "resumes (the guard lets flags through)", flag_change_still_resumes, slow=True),
    Case("r3 minor resume and config", "--cache-path under /proc", "one line, exit 2",
         cache_path_unusable, ("/proc/self/tfgrpo-cache.sqlite",), slow=True),
    Case("r3 minor resume and config", "--cache-path is a directory", "one line, exit 2",
         cache_path_unusable, ("{tmp}",), slow=True),
    Case("r3 minor resume and config", "a group of 6 resumed with samples 0-2 cached",
         "the same 6 answers as uninterrupted", resumed_group_is_the_uninterrupted_group, ((0, 1, 2),)),
    Case("r3 minor resume and config", "a group of 6 resumed with samples 0, 2 and 4 cached",
         "the same 6 answers as uninterrupted", resumed_group_is_the_uninterrupted_group, ((0, 2, 4),)),
    Case("r3 minor resume and config", "--group-size 100000", "one line, exit 2", group_size_bounded),
    Case("r3 minor resume and config", "status.json names a long-dead pid while another process holds the lock",
         "the error names the live holder's pid", in_use_names_the_live_holder),
]  # fmt: skip


@pytest.mark.parametrize("case", rows(CASES))
def test_hostile_shared_run(case, ctx, request):
    if "made_here" in case.check.__code__.co_varnames[: case.check.__code__.co_argcount]:
        case = Case(
            case.area, case.input, case.expected, case.check, (request.getfixturevalue("made_here"), *case.args)
        )
    case.run(ctx)
