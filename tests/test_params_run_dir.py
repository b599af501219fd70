"""Parameter mode's run directory: a second run never overwrites the first, the default run
directory is new each time, config.yaml records the effective values and re-runs as is, and
the report reads its steps."""

import json

import pytest

torch = pytest.importorskip("torch")

from tfgrpo.config import build, load_yaml  # noqa: E402
from tfgrpo.errors import UserError  # noqa: E402
from tfgrpo.params import make_config, train_params  # noqa: E402
from tfgrpo.params.config import ParamsConfig  # noqa: E402
from tfgrpo.report import load_run  # noqa: E402


def test_second_run_refused_config_reruns_and_report_reads_steps(tmp_path):
    out = tmp_path / "run"
    cfg = make_config(
        task="toy", model="tiny", steps=2, batch_size=2, group_size=2, device="cpu", report_to="tensorboard"
    )
    train_params(cfg, out=out)
    steps_before = (out / "steps.jsonl").read_text()
    with pytest.raises(UserError, match=f"{out} already holds a run: continue it with tfgrpo grpo --resume"):
        train_params(cfg, out=out)
    assert (out / "steps.jsonl").read_text() == steps_before  # nothing appended, nothing overwritten
    saved = build(ParamsConfig, load_yaml(out / "config.yaml"))  # re-runs as is
    assert saved.learning_rate == cfg.learning_rate == 3e-3 and saved.lr == 3e-3  # the lr actually used
    steps = load_run(out).steps
    assert len(steps) == 2 and all(
        s["mean_reward"] == json.loads(line)["reward_mean"] for s, line in zip(steps, steps_before.splitlines())
    )
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(out / "tensorboard"))  # --report-to tensorboard, read by TensorBoard's reader
    events.Reload()
    logged = events.Scalars("train/reward_mean")
    assert [e.step for e in logged] == [s["step"] for s in steps]
    assert [e.value for e in logged] == pytest.approx([s["mean_reward"] for s in steps])


def test_default_run_directory_is_new_per_run():
    from tfgrpo.params.config import default_run_dir

    assert default_run_dir("toy").as_posix().startswith("runs/grpo-toy-")
    assert default_run_dir("tasks/x.py:adder").name.startswith("grpo-tasks-x.py-adder-")


@pytest.mark.slow  # a subprocess that loads torch and trains; CI runs it
def test_sigterm_marks_a_parameter_mode_run_interrupted_and_it_resumes(tmp_path):
    import signal
    import subprocess
    import time

    from cli_helpers import CMD, ENV, tfgrpo

    run = tmp_path / "run"
    flags = [
        "--task",
        "toy",
        "--model",
        "tiny",
        "--batch-size",
        "2",
        "--group-size",
        "2",
        "--device",
        "cpu",
        "--save-every",
        "1",
    ]
    proc = subprocess.Popen([*CMD, "grpo", *flags, "--steps", "200", "--out", str(run), "--quiet"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=ENV)  # fmt: skip
    steps = run / "steps.jsonl"
    deadline = time.monotonic() + 180
    while (
        not (steps.exists() and steps.read_text().count("\n") >= 2)
        and proc.poll() is None
        and time.monotonic() < deadline
    ):
        time.sleep(0.05)
    assert proc.poll() is None, proc.stderr.read()[-2000:]
    assert json.loads((run / "status.json").read_text())["status"] == "running"
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(120) == 143
    assert f"interrupted; continue with: tfgrpo grpo --resume {run}" in proc.stderr.read()
    status = json.loads((run / "status.json").read_text())
    assert status["status"] == "interrupted" and status["reason"] == "SIGTERM" and status["mode"] == "params"
    assert 2 <= status["steps_done"] == steps.read_text().count("\n") < 200
    assert "interrupted" in tfgrpo("runs", str(tmp_path)).stdout
    done = status["steps_done"]
    resumed = tfgrpo("grpo", "--resume", str(run), "--steps", str(done + 1), "--json", "--quiet")
    assert json.loads(resumed.stdout.splitlines()[-1])["steps"] == done + 1
    assert json.loads((run / "status.json").read_text())["status"] == "finished"


def test_a_second_trainer_on_the_same_run_directory_is_refused(tmp_path):
    from filelock import FileLock

    out = tmp_path / "run"
    out.mkdir()
    cfg = make_config(task="toy", model="tiny", steps=1, batch_size=2, group_size=2, device="cpu")
    with FileLock(str(out / "run.lock"), timeout=0):  # another process trains here
        with pytest.raises(UserError, match=f"{out} is in use by another tfgrpo process"):
            train_params(cfg, out=out)
    assert not (out / "steps.jsonl").exists() and not (out / "config.yaml").exists()
    assert len(train_params(cfg, out=out).steps) == 1  # the same start once the other has ended
