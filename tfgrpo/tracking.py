"""Each step's metrics to an experiment tracker: ``tfgrpo train --report-to tensorboard``
(also ``wandb``, ``mlflow``, or several, comma-separated), as TRL's ``report_to`` does.

Each tracker is an optional extra (``pip install 'tfgrpo[tensorboard]'``); runs are named after
the run directory and keep its config.

- TensorBoard: event files in ``RUN/tensorboard/``.
- W&B: project ``$WANDB_PROJECT`` (default ``tfgrpo``), files in ``RUN/wandb/``; its own settings
  apply (``WANDB_MODE=offline`` needs no account; ``wandb sync`` uploads later).
- MLflow: the server or store of ``$MLFLOW_TRACKING_URI``, else ``RUN/mlflow.db`` (SQLite; view it
  with ``mlflow ui --backend-store-uri sqlite:///RUN/mlflow.db``); experiment
  ``$MLFLOW_EXPERIMENT_NAME`` (default ``tfgrpo``); the run ends FINISHED, or FAILED/KILLED
  when training raised or was interrupted.
"""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path
from typing import Any, Callable, Iterator

from tfgrpo.errors import UserError

REPORT_TO = ("tensorboard", "wandb", "mlflow")
PACKAGES = {"tensorboard": "tensorboardX", "wandb": "wandb", "mlflow": "mlflow"}

Log = Callable[[int, dict[str, float]], None]


def parse_report_to(value: str | None) -> list[str]:
    """``"tensorboard,wandb"`` -> the trackers; ``none`` or empty -> []."""
    kinds = [k.strip() for k in (value or "").split(",") if k.strip() and k.strip() != "none"]
    bad = [k for k in kinds if k not in REPORT_TO]
    if bad:
        raise ValueError(f"unknown tracker {', '.join(bad)} (choose from {', '.join(REPORT_TO)}, comma-separated)")
    return kinds


def step_metrics(record: Any) -> dict[str, float]:
    """The numbers of one training-free step record worth plotting over steps."""
    out = {
        k: float(getattr(record, k))
        for k in (
            "epoch",
            "mean_reward",
            "judged",
            "groups",
            "ops_applied",
            "ops_rejected",
            "ops_leaked",
            "library_size",
            "judge_failures",
            "rollout_failures",
            "wall_s",
        )
        if getattr(record, k, None) is not None
    }
    for role, u in (getattr(record, "usage", None) or {}).items():
        out[f"tokens/{role}"] = float((u.get("prompt_tokens") or 0) + (u.get("completion_tokens") or 0))
        if u.get("cost_usd") is not None:
            out[f"cost_usd/{role}"] = float(u["cost_usd"])
    return out


def _need(kind: str):
    import importlib

    try:
        return importlib.import_module(PACKAGES[kind])
    except ImportError:
        raise UserError(f"--report-to {kind} needs {PACKAGES[kind]}: pip install 'tfgrpo[{kind}]'") from None


Close = Callable[[BaseException | None], None]  # called with what ended the run (None: it finished)


@contextlib.contextmanager
def trackers(kinds: list[str], run_dir: Path, config: dict[str, Any]) -> Iterator[Log]:
    """One ``log(step, metrics)`` that writes to every tracker in ``kinds``; closed on exit."""
    logs: list[Log] = []
    closes: list[Close] = []
    ended: BaseException | None = None
    try:
        for kind in kinds:
            lib = _need(kind)
            try:
                log_one, close = {"tensorboard": _tensorboard, "wandb": _wandb, "mlflow": _mlflow}[kind](
                    lib, run_dir, config
                )
            except (ImportError, UserError):
                raise
            except (
                Exception
            ) as e:  # the tracker's own failure (no login, unreachable server): one line, not a traceback
                raise UserError(
                    f"--report-to {kind}: {str(e).splitlines()[0] if str(e) else type(e).__name__}"
                ) from None
            logs.append(log_one)
            closes.append(close)

        def log(step: int, metrics: dict[str, float]) -> None:
            for one in logs:
                one(step, metrics)

        yield log
    except BaseException as e:
        ended = e
        raise
    finally:
        for close in reversed(closes):
            close(ended)


def _tensorboard(lib: Any, run_dir: Path, config: dict[str, Any]) -> tuple[Log, Close]:
    writer = lib.SummaryWriter(logdir=str(run_dir / "tensorboard"))

    def log(step: int, metrics: dict[str, float]) -> None:
        for key, value in metrics.items():
            writer.add_scalar(f"train/{key}", value, step)
        writer.flush()

    return log, lambda ended: writer.close()


def _wandb(lib: Any, run_dir: Path, config: dict[str, Any]) -> tuple[Log, Close]:
    run_dir.mkdir(parents=True, exist_ok=True)
    run = lib.init(
        project=os.environ.get("WANDB_PROJECT") or "tfgrpo", name=run_dir.name, dir=str(run_dir), config=config
    )
    return (lambda step, metrics: run.log(metrics, step=step)), (
        lambda ended: run.finish(exit_code=0 if ended is None else 1)
    )


def _mlflow(lib: Any, run_dir: Path, config: dict[str, Any]) -> tuple[Log, Close]:
    from mlflow.entities import Metric, Param
    from mlflow.tracking import MlflowClient

    own_store = not os.environ.get("MLFLOW_TRACKING_URI")
    if own_store:
        try:
            import alembic  # noqa: F401  (MLflow's SQLite store needs both; mlflow-skinny alone has neither)
            import sqlalchemy  # noqa: F401
        except ImportError:
            raise UserError(
                "--report-to mlflow keeps its runs in RUN/mlflow.db, which needs sqlalchemy and alembic: "
                "pip install 'tfgrpo[mlflow]', or set MLFLOW_TRACKING_URI to your tracking server"
            ) from None
        run_dir.mkdir(parents=True, exist_ok=True)
    client = MlflowClient(tracking_uri=f"sqlite:///{(run_dir / 'mlflow.db').resolve()}" if own_store else None)
    experiment_id = os.environ.get("MLFLOW_EXPERIMENT_ID")
    if not experiment_id:
        name = os.environ.get("MLFLOW_EXPERIMENT_NAME") or "tfgrpo"
        found = client.get_experiment_by_name(name)
        experiment_id = (
            found.experiment_id
            if found
            else client.create_experiment(
                name, artifact_location=(run_dir / "mlartifacts").resolve().as_uri() if own_store else None
            )
        )
    run_id = client.create_run(experiment_id, run_name=run_dir.name).info.run_id
    params = [Param(k, v[:6000]) for k, v in _flat(config).items()]
    for i in range(0, len(params), 100):  # MLflow takes at most 100 params a batch
        client.log_batch(run_id, params=params[i : i + 100])

    def log(step: int, metrics: dict[str, float]) -> None:
        now = int(time.time() * 1000)
        client.log_batch(run_id, metrics=[Metric(k, v, now, step) for k, v in metrics.items()])

    def close(ended: BaseException | None) -> None:
        status = "FINISHED" if ended is None else "KILLED" if isinstance(ended, KeyboardInterrupt) else "FAILED"
        client.set_terminated(run_id, status=status)

    return log, close


def _flat(config: dict[str, Any], prefix: str = "") -> dict[str, str]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": "1"}`` (MLflow params are flat strings)."""
    out: dict[str, str] = {}
    for key, value in config.items():
        if isinstance(value, dict) and value:
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = str(value)
    return out
