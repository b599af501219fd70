"""Each step's metrics to an experiment tracker: ``tfgrpo train --report-to tensorboard``
(also ``wandb``, ``mlflow``, or several, comma-separated), as TRL's ``report_to`` does.

Each tracker is an optional extra (``pip install 'tfgrpo[tensorboard]'``); TensorBoard event
files go to ``RUN/tensorboard/``, W&B and MLflow runs are named after the run directory and
follow their own environment settings (``WANDB_MODE=offline``, ``MLFLOW_TRACKING_URI``).
"""

from __future__ import annotations

import contextlib
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
    out = {k: float(getattr(record, k)) for k in ("mean_reward", "judged", "groups", "ops_applied", "ops_rejected",
                                                    "ops_leaked", "library_size", "judge_failures", "rollout_failures",
                                                    "wall_s") if getattr(record, k, None) is not None}
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


@contextlib.contextmanager
def trackers(kinds: list[str], run_dir: Path, config: dict[str, Any]) -> Iterator[Log]:
    """One ``log(step, metrics)`` that writes to every tracker in ``kinds``; closed on exit."""
    logs: list[Log] = []
    with contextlib.ExitStack() as stack:
        for kind in kinds:
            lib = _need(kind)
            if kind == "tensorboard":
                writer = lib.SummaryWriter(logdir=str(run_dir / "tensorboard"))
                stack.callback(writer.close)
                logs.append(_tensorboard(writer))
            elif kind == "wandb":
                wrun = lib.init(project="tfgrpo", name=run_dir.name, dir=str(run_dir), config=config)
                stack.callback(wrun.finish)
                logs.append(lambda step, m, r=wrun: r.log(m, step=step))
            else:  # mlflow
                lib.start_run(run_name=run_dir.name)
                stack.callback(lib.end_run)
                logs.append(lambda step, m, ml=lib: ml.log_metrics(m, step=step))

        def log(step: int, metrics: dict[str, float]) -> None:
            for one in logs:
                one(step, metrics)

        yield log


def _tensorboard(writer: Any) -> Log:
    def log(step: int, metrics: dict[str, float]) -> None:
        for key, value in metrics.items():
            writer.add_scalar(f"train/{key}", value, step)
        writer.flush()

    return log
