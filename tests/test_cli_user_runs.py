"""The CLI on a user's own run: a model is required and a provider's notice is shown, eval follows
its run (task, model, held-out problems), samples are strict, task paths are stored absolute,
config keys follow the flags."""

from __future__ import annotations

import json
import re
import shutil
import textwrap

import pytest


from cli_helpers import last_json
from cli_helpers import tfgrpo_in_process as tfgrpo
from tfgrpo import api
from tfgrpo.errors import UserError
from tfgrpo.hooks import Hooks
from tfgrpo.task_registry import Sample
from tfgrpo.training_free.config import EvalConfig, RunConfig, load_run_config

TRAIN_ONLY = textwrap.dedent('''
    from tfgrpo.task_registry import Task, load_task, task

    @task
    def trainonly() -> Task:
        """The first demo problems, with no test set of their own."""
        demo = load_task("demo")
        return Task(dataset=demo.dataset[:8], rewards=demo.rewards, instructions=demo.instructions, max_tokens=256)
''')


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A simulated run on a user task (given by a relative path) that has no test set."""
    root = tmp_path_factory.mktemp("user-run")
    (root / "mytask.py").write_text(TRAIN_ONLY)
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        result = api.train(
            RunConfig(task="mytask.py:trainonly", epochs=1, policy={"model": "sim"}, sampling={"group_size": 4}),
            out=root / "run",
        )
    return result.run_dir


# ---------------------------------------------------------------------------- 1. no silent simulator


def test_train_and_eval_require_a_model(tmp_path):
    proc = tfgrpo("train", "--task", "demo", "--out", str(tmp_path / "r"), check=False)
    assert proc.returncode == 2 and "which model? pass --model" in proc.stderr
    assert not (tmp_path / "r").exists()
    proc = tfgrpo("eval", "--task", "demo", "-k", "1", check=False)
    assert proc.returncode == 2 and "which model? pass --model" in proc.stderr


def test_sim_says_it_is_a_simulation_and_stops_on_a_task_it_does_not_know(tmp_path):
    data = tmp_path / "mine.jsonl"
    data.write_text(json.dumps({"question": "What is 17 * 23?", "answer": "391"}) + "\n")
    proc = tfgrpo(
        "train", "--task", "math", "--data", str(data), "--model", "sim", "--out", str(tmp_path / "r"), check=False
    )
    assert proc.returncode == 2
    assert "SIMULATED model" in proc.stderr and "none of task 'math'" in proc.stderr
    notices = []
    api.evaluate(
        EvalConfig(task="demo", k=1, limit=2, policy={"model": "sim"}),
        save_dir=tmp_path,
        hooks=Hooks(on_notice=notices.append),
    )
    assert len(notices) == 1 and notices[0].startswith("SIMULATION:")


# ---------------------------------------------------------------------------- 2. eval follows its run


def test_eval_takes_task_and_model_from_the_run_and_refuses_training_problems(run):
    proc = tfgrpo("eval", "--library", str(run), "-k", "1", "-q", check=False)
    assert proc.returncode == 2 and "--on-training-problems" in proc.stderr
    # The advice is true: the suggested flag runs, and the result says what it scored.
    r = last_json(tfgrpo("eval", "--library", str(run), "-k", "1", "-q", "--on-training-problems", "--json"))
    assert r["task"] == "trainonly" and r["model"] == "sim"
    assert r["on_training_problems"] is True and r["split"] == "train" and r["n_problems"] == 8
    human = tfgrpo("eval", "--library", str(run), "-k", "1", "-q", "--on-training-problems")
    assert "TRAINING problems" in human.stdout
    assert f"results saved in {run / 'eval' / 'train-k1-n1-step1'}" in human.stderr  # says where results went


def test_eval_refuses_another_task_whatever_the_library_holds(run, tmp_path):
    before = (run / "eval.json").read_text() if (run / "eval.json").exists() else None
    empty = tmp_path / "empty-run"
    shutil.copytree(run, empty)
    shutil.rmtree(empty / "library")
    (empty / "library" / "versions").mkdir(parents=True)
    for target in (run, empty):
        proc = tfgrpo("eval", "--library", str(target), "--task", "demo", "-k", "1", "-q", check=False)
        assert proc.returncode == 2 and "learned on task 'trainonly', not 'demo'" in proc.stderr
    assert ((run / "eval.json").read_text() if (run / "eval.json").exists() else None) == before
    assert not (run / "eval" / "test-k1-n1-step1").exists()


def test_eval_of_a_pack_zip_follows_its_manifest(run, tmp_path):
    pack = tmp_path / "p.zip"
    api.export_pack(run, pack)
    proc = tfgrpo("eval", "--library", str(pack), "--task", "demo", "-k", "1", check=False)
    assert proc.returncode == 2 and "learned on task 'trainonly'" in proc.stderr
    r = api.evaluate(EvalConfig(k=1), pack, save_dir=tmp_path).summary
    assert r["task"] == "trainonly" and r["model"] == "sim" and r["library_kind"] == "pack"
    assert r["library_size"] == len(api.pack_from_run(run).active)


def test_baseline_only_eval(run, tmp_path):
    r = last_json(tfgrpo("eval", "--library", str(run), "--baseline-only", "-k", "1", "--json", "-q"))
    assert set(r) >= {"baseline", "task", "model"} and "library" not in r and "diff" not in r
    assert r["task"] == "trainonly" and r["on_training_problems"] is False
    r = last_json(
        tfgrpo(
            "eval",
            "--task",
            "demo",
            "--model",
            "sim",
            "-k",
            "1",
            "--limit",
            "4",
            "--save-dir",
            str(tmp_path),
            "--json",
            "-q",
        )
    )
    assert r["n_problems"] == 4 and "library" not in r
    assert (tmp_path / "eval" / "test-k1-n1-baseline" / "summary.json").is_file()


# ---------------------------------------------------------------------------- 3. strict samples


def test_sample_forbids_unknown_fields():
    with pytest.raises(UserError) as e:
        Sample(id="1", input="What is 2 + 2?", target="4")
    assert str(e.value) == "Sample got unknown field(s) input, target; accepted: id, prompt, messages, answer, metadata"
    assert Sample(id="1", prompt="What is 2 + 2?", answer="4").prompt == "What is 2 + 2?"


# ---------------------------------------------------------------------------- 6. absolute task paths


def test_task_file_is_stored_absolute(run, tmp_path, monkeypatch):
    stored = load_run_config(run).task
    assert stored.startswith("/") and stored.endswith("mytask.py:trainonly")
    monkeypatch.chdir(tmp_path)  # elsewhere, the run's config still finds its task
    assert api.build_task(stored, {}, None).name == "trainonly"


# ---------------------------------------------------------------------------- 4. the p-value column


def test_p_value_has_its_own_column():
    from rich.console import Console

    from tfgrpo.cli.console import eval_table

    arm = {"mean_at_k": 0.5, "pass_at_k": 0.6, "ci95": [0.4, 0.6], "pass_ci95": [0.5, 0.7], "failures": 3}
    report = {
        "k": 4,
        "n": 4,
        "seeds": [0],
        "n_problems": 5,
        "task": "demo",
        "baseline": arm,
        "library": {**arm, "mean_at_k": 0.75},
        "diff": {"mean": 0.25, "ci95": [0.1, 0.4], "p_value": 0.0625},
    }
    console = Console(width=200, record=True)
    console.print(eval_table(report))
    lines = console.export_text().splitlines()
    header = next(line for line in lines if "failed requests" in line)
    diff = next(line for line in lines if line.strip().startswith("│ difference") or "difference" in line)
    assert "p-value" in header
    col = header.index("p-value")
    assert "0.0625" in diff[col - 4 :]
    assert "0.0625" not in diff[header.index("failed requests") - 2 : header.index("failed requests") + 15]


# ---------------------------------------------------------------------------- 5. flag names


def _flags(*command: str) -> set[str]:
    import re

    return set(re.findall(r"--[a-z][a-z0-9-]+", tfgrpo(*command, "--help").stdout))


def test_per_answer_cap_is_max_tokens_and_budgets_say_budget():
    train, grpo = _flags("train"), _flags("grpo")
    assert {"--max-tokens", "--budget-tokens", "--budget-cost", "--budget-calls", "--task-arg"} <= train
    assert not {"--max-completion-tokens", "--max-cost", "--max-calls"} & train
    assert "--max-tokens" in grpo and "--max-response-len" not in grpo
    assert {"--max-tokens", "--task-arg"} <= _flags("eval")


def test_yaml_keys_follow_the_flags_and_unknown_keys_are_named(tmp_path):
    from tfgrpo.config import build
    from tfgrpo.params.config import ParamsConfig

    cfg = build(RunConfig, {"budget": {"tokens": 100, "cost": 2.0}, "sampling": {"max_tokens": 64}})
    assert (cfg.budget.tokens, cfg.budget.cost, cfg.sampling.max_tokens) == (100, 2.0, 64)
    # keys of older layouts are refused, naming the ones accepted
    with pytest.raises(UserError, match="unknown config key budget.max_tokens"):
        build(RunConfig, {"budget": {"max_tokens": 100}})
    with pytest.raises(UserError, match="max_response_len"):
        build(ParamsConfig, {"max_response_len": 32})
    bad = tmp_path / "c.yaml"
    bad.write_text("budget:\n  max_token: 3\n")
    proc = tfgrpo("train", "--config", str(bad), "--model", "sim", check=False)
    assert proc.returncode == 2
    assert "unknown config key budget.max_token; accepted there: cost, tokens, calls, price_per_mtok" in proc.stderr


def test_task_arguments_by_T():
    from tfgrpo.cli.options import parse_task_args

    assert parse_task_args(["n=3", "letters=ab", "flag=true", "empty="]) == {
        "n": 3,
        "letters": "ab",
        "flag": True,
        "empty": "",
    }
    proc = tfgrpo("train", "--task", "toy", "-T", "n=3", "-T", "nope=1", "--model", "sim", check=False)
    assert proc.returncode == 2 and "bad arguments {'n': 3, 'nope': 1}" in proc.stderr
    proc = tfgrpo("train", "--task", "toy", "-T", "n3", check=False)
    assert proc.returncode == 2 and "give a task argument as key=value" in proc.stderr


# ---------------------------------------------------------------------------- 6. small things a user looks for


def test_version_verbose_runs_json_and_every_task_in_help(run):
    from tfgrpo.task_registry import available_tasks, builtin_task_names
    from tfgrpo.version import __version__

    assert tfgrpo("--version").stdout.strip() == f"tfgrpo {__version__}"
    assert "--verbose" in tfgrpo("--help").stdout
    tasks = builtin_task_names()
    assert set(tasks) >= {"code", "demo", "docqa", "math", "math-tools", "sql", "toy"}
    assert set(tasks) <= set(available_tasks())
    for command in ((), ("train",), ("eval",), ("grpo",)):
        text = re.sub(r"-\s+", "-", " ".join(tfgrpo(*command, "--help").stdout.split()))  # click wraps at hyphens
        assert all(t in text for t in tasks), (command, tasks)
    rows = json.loads(tfgrpo("runs", str(run.parent), "--json").stdout)
    assert [r["run"] for r in rows] == ["run"]
    assert rows[0]["task"].endswith("mytask.py:trainonly") and rows[0]["policy"] == "sim" and rows[0]["steps"] == 1


def test_errors_keep_brackets_of_user_text():
    proc = tfgrpo("train", "--task", "my[vllm]/t.py:thing", "--model", "sim", check=False)
    assert proc.returncode == 2 and "my[vllm]/t.py" in proc.stderr


# ---------------------------------------------------------------------------- 8. item 10 leftovers


def test_csv_data_is_read(tmp_path):
    from tfgrpo.task_registry import load_task

    data = tmp_path / "p.csv"
    data.write_text('problem,answer\n"What is 1, plus 1?",2\nWhat is 3*3?,9\n')
    task = load_task("math", data=str(data))
    assert [(s.prompt, s.answer) for s in task.dataset] == [("What is 1, plus 1?", "2"), ("What is 3*3?", "9")]


def test_report_to_tensorboard_writes_each_step(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    result = api.train(
        RunConfig(
            task="demo",
            epochs=1,
            limit=8,
            batch_size=4,
            policy={"model": "sim"},
            sampling={"group_size": 2},
            report_to="tensorboard",
        ),
        out=tmp_path / "run",
    )
    events = EventAccumulator(str(tmp_path / "run" / "tensorboard"))
    events.Reload()
    rewards = events.Scalars("train/mean_reward")
    assert [e.step for e in rewards] == [s.step for s in result.steps] == [1, 2]
    assert [e.value for e in rewards] == pytest.approx([s.mean_reward for s in result.steps])
    assert "train/library_size" in events.Tags()["scalars"]
    with pytest.raises(UserError, match="unknown tracker tensorbored"):
        from tfgrpo.config import build

        build(RunConfig, {"report_to": "tensorbored"})
