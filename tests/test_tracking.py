"""--report-to wandb and --report-to mlflow, offline: each step's metrics are read back with the
tracker's own reader (W&B: ``wandb leet inspect --json`` over the offline run's .wandb log;
MLflow: ``MlflowClient.get_metric_history``). Nothing may leave the machine: W&B runs offline,
telemetry is off, and any HTTP(S) request would go to a closed local port."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tfgrpo import api
from tfgrpo.training_free.config import RunConfig
from tfgrpo.tracking import trackers


@pytest.fixture
def offline(monkeypatch, tmp_path):
    home = tmp_path / "home"
    env = {
        "WANDB_MODE": "offline",
        "WANDB_SILENT": "true",
        "WANDB_DISABLE_GIT": "true",
        "WANDB_DISABLE_CODE": "true",
        "WANDB_CONSOLE": "off",
        "WANDB_CACHE_DIR": str(home / "wandb-cache"),
        "WANDB_CONFIG_DIR": str(home / "wandb-config"),
        "WANDB_DATA_DIR": str(home / "wandb-data"),
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "DO_NOT_TRACK": "1",
        "HTTP_PROXY": "http://127.0.0.1:9",
        "HTTPS_PROXY": "http://127.0.0.1:9",
        "NO_PROXY": "127.0.0.1,localhost",
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    for key in (
        "WANDB_API_KEY",
        "WANDB_PROJECT",
        "MLFLOW_TRACKING_URI",
        "MLFLOW_EXPERIMENT_NAME",
        "MLFLOW_EXPERIMENT_ID",
    ):
        monkeypatch.delenv(key, raising=False)
    return tmp_path


def _train(out, report_to: str):
    """Two steps of the demo task on the simulator, logged to ``report_to``."""
    return api.train(
        RunConfig(
            task="demo",
            epochs=2,
            limit=8,
            batch_size=8,
            policy={"model": "sim"},
            sampling={"group_size": 2},
            report_to=report_to,
        ),
        out=out,
    )


def test_report_to_wandb_offline_logs_each_step(offline):
    pytest.importorskip("wandb")
    result = _train(offline / "run", "wandb")
    runs = list((offline / "run" / "wandb").glob("offline-run-*"))
    assert len(runs) == 1
    inspect = [sys.executable, "-m", "wandb", "leet", "inspect", "--json"]
    records = [
        json.loads(line)
        for line in subprocess.run(
            [*inspect, str(runs[0])], capture_output=True, text=True, check=True, timeout=120
        ).stdout.splitlines()
    ]
    history = [r["history"]["item"] for r in records if r["type"] == "history"]
    assert [h["_step"] for h in history] == [s.step for s in result.steps] == [1, 2]
    assert [h["mean_reward"] for h in history] == pytest.approx([s.mean_reward for s in result.steps])
    assert [h["library_size"] for h in history] == [s.library_size for s in result.steps]
    assert [h["epoch"] for h in history] == [1, 2]  # epochs count from 1, as on screen
    assert all(h["tokens/policy"] > 0 for h in history)
    summary = json.loads(
        subprocess.run(
            [*inspect, "--summary", str(runs[0])], capture_output=True, text=True, check=True, timeout=120
        ).stdout
    )
    assert (summary["name"], summary["project"], summary["state"]) == ("run", "tfgrpo", "finished")
    assert summary["config"]["task"] == "demo" and summary["config"]["epochs"] == 2


def test_report_to_mlflow_logs_each_step_to_the_run_directory(offline):
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient

    result = _train(offline / "run", "mlflow")
    # no MLFLOW_TRACKING_URI: the run keeps its own SQLite store
    client = MlflowClient(tracking_uri=f"sqlite:///{offline / 'run' / 'mlflow.db'}")
    (run,) = client.search_runs([client.get_experiment_by_name("tfgrpo").experiment_id])
    assert run.info.run_name == "run" and run.info.status == "FINISHED"
    history = client.get_metric_history(run.info.run_id, "mean_reward")
    assert [m.step for m in history] == [s.step for s in result.steps] == [1, 2]
    assert [m.value for m in history] == pytest.approx([s.mean_reward for s in result.steps])
    assert [m.value for m in client.get_metric_history(run.info.run_id, "library_size")] == [
        s.library_size for s in result.steps
    ]
    assert [m.value for m in client.get_metric_history(run.info.run_id, "epoch")] == [1, 2]
    assert run.data.params["task"] == "demo" and run.data.params["sampling.group_size"] == "2"


def test_mlflow_follows_its_environment_and_marks_a_failed_run(offline, monkeypatch):
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient

    store = (offline / "mlruns").as_uri()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store)
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow's file store, opted into as its message says
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "mine")
    with pytest.raises(RuntimeError, match="boom"):
        with trackers(["mlflow"], offline / "broken", {"task": "demo", "judge": {"model": "x"}}) as log:
            log(1, {"mean_reward": 0.25})
            raise RuntimeError("boom")
    assert not (offline / "broken" / "mlflow.db").exists()
    client = MlflowClient(tracking_uri=store)
    (run,) = client.search_runs([client.get_experiment_by_name("mine").experiment_id])
    assert run.info.run_name == "broken" and run.info.status == "FAILED"
    assert [(m.step, m.value) for m in client.get_metric_history(run.info.run_id, "mean_reward")] == [(1, 0.25)]
    assert run.data.params == {"task": "demo", "judge.model": "x"}


def test_an_unreachable_tracking_server_is_one_line(offline, monkeypatch):
    pytest.importorskip("mlflow")
    import socket

    from tfgrpo.errors import UserError

    with socket.socket() as s:  # a local port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    with pytest.raises(UserError, match=rf"^--report-to mlflow: API request to http://127.0.0.1:{port}/") as e:
        with trackers(["mlflow"], offline / "run", {}):
            pass
    assert "\n" not in str(e.value)
