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

A tracker is an observer. One that fails mid-run (a tracking server down, overloaded or silent, a
full disk under ``RUN/tensorboard/``) is logged once and dropped, and training goes on; one that
fails to close is logged, and never hides what ended the run; one that cannot start is a one-line
error before anything is paid for. A tracking server gets few retries (MLflow's own would wait
about 8.5 minutes for a dead one; its ``MLFLOW_HTTP_REQUEST_*`` variables still win when set) and
each call to it at most :data:`MLFLOW_CALL_S` seconds, so it cannot hold a run up for minutes.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterator, TypeVar

from tfgrpo.errors import UserError

REPORT_TO = ("tensorboard", "wandb", "mlflow")
PACKAGES = {"tensorboard": "tensorboardX", "wandb": "wandb", "mlflow": "mlflow"}

Log = Callable[[int, dict[str, float]], None]
T = TypeVar("T")

log = logging.getLogger(__name__)

# MLflow's defaults are 7 retries with exponential backoff and 120 s per request: minutes of
# waiting on a dead server, per call. Set when unset (only for a tracking server).
MLFLOW_HTTP = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "10",
}
MLFLOW_CALL_S = 20.0  # the longest one call to a tracking server may hold up a step (a Retry-After of an hour too)
MLFLOW_START_S = 60.0  # the same for starting the run there (several calls)


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


def _first_line(e: BaseException) -> str:
    return (str(e).splitlines() or [type(e).__name__])[0][:300]


def _start(kind: str, run_dir: Path, config: dict[str, Any]) -> tuple[Log, Close]:
    lib = _need(kind)
    try:
        return {"tensorboard": _tensorboard, "wandb": _wandb, "mlflow": _mlflow}[kind](lib, run_dir, config)
    except (ImportError, UserError):
        raise
    except Exception as e:  # the tracker's own failure (no login, unreachable server): one line, not a traceback
        raise UserError(f"--report-to {kind}: {_first_line(e)}") from None


@contextlib.contextmanager
def trackers(kinds: list[str], run_dir: Path, config: dict[str, Any]) -> Iterator[Log]:
    """One ``log(step, metrics)`` that writes to every tracker in ``kinds``; closed on exit. A
    tracker that fails to log is dropped with one warning (it is not called again, not even to
    close); one that fails to close is warned about. Neither stops training nor replaces the
    error that ended it."""
    live: dict[str, tuple[Log, Close]] = {}
    ended: BaseException | None = None
    try:
        for kind in kinds:
            live[kind] = _start(kind, run_dir, config)

        def log_all(step: int, metrics: dict[str, float]) -> None:
            for kind, (one, _) in list(live.items()):
                try:
                    one(step, metrics)
                except Exception as e:
                    del live[kind]
                    log.warning(
                        "--report-to %s failed at step %d (%s): it is dropped, training goes on without it",
                        kind,
                        step,
                        _first_line(e),
                    )

        yield log_all
    except BaseException as e:
        ended = e
        raise
    finally:
        for kind, (_, close) in reversed(list(live.items())):
            try:
                close(ended)
            except Exception as e:
                log.warning("--report-to %s failed to close (%s)", kind, _first_line(e))


def _bounded(seconds: float | None, call: Callable[[], T]) -> T:
    """``call()``, given at most ``seconds`` (None: no limit) in a daemon thread: a server that
    never answers, or asks to be retried in an hour, costs the run that long once and is left
    behind."""
    if seconds is None:
        return call()
    out: list[tuple[bool, Any]] = []
    done = threading.Event()

    def run() -> None:
        try:
            out.append((True, call()))
        except BaseException as e:
            out.append((False, e))
        finally:
            done.set()

    threading.Thread(target=run, name="tfgrpo-tracker", daemon=True).start()
    if not done.wait(seconds):
        raise TimeoutError(f"no answer within {seconds:g} s")
    ok, value = out[0]
    if not ok:
        raise value
    return value


class _EventFile:
    """A TensorBoard event file written and flushed in the caller's thread, one record per step,
    with tensorboardX's own record writer and protobufs: a full disk is an error of that step's
    call, after which the file is closed and nothing is left to retry (tensorboardX's
    SummaryWriter writes from a thread of its own and flushes a failed buffer again at exit,
    printing tracebacks)."""

    def __init__(self, directory: Path):
        from tensorboardX.proto.event_pb2 import Event
        from tensorboardX.proto.summary_pb2 import Summary
        from tensorboardX.record_writer import RecordWriter

        self._event, self._summary = Event, Summary
        directory.mkdir(parents=True, exist_ok=True)
        name = f"events.out.tfevents.{int(time.time())}.{socket.gethostname()}"  # the name TensorBoard looks for
        self._writer: Any = RecordWriter(str(directory / name))
        self._write(Event(wall_time=time.time(), file_version="brain.Event:2"))

    def log(self, step: int, metrics: dict[str, float]) -> None:
        values = [self._summary.Value(tag=f"train/{k}", simple_value=v) for k, v in metrics.items()]
        self._write(self._event(wall_time=time.time(), step=step, summary=self._summary(value=values)))

    def _write(self, event: Any) -> None:
        try:
            self._writer.write(event.SerializeToString())
            self._writer.flush()
        except BaseException:
            self.close()
            raise

    def close(self, ended: BaseException | None = None) -> None:
        if self._writer is not None:
            writer, self._writer = self._writer, None
            with contextlib.suppress(OSError):  # the bytes a full disk refused are not tried again
                writer.close()


def _tensorboard(lib: Any, run_dir: Path, config: dict[str, Any]) -> tuple[Log, Close]:
    events = _EventFile(run_dir / "tensorboard")
    return events.log, events.close


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
    else:
        for key, value in MLFLOW_HTTP.items():
            os.environ.setdefault(key, value)
    limit = None if own_store else MLFLOW_CALL_S

    def start() -> tuple[Any, str]:
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
        return client, run_id

    client, run_id = _bounded(None if own_store else MLFLOW_START_S, start)

    def log(step: int, metrics: dict[str, float]) -> None:
        now = int(time.time() * 1000)
        _bounded(limit, lambda: client.log_batch(run_id, metrics=[Metric(k, v, now, step) for k, v in metrics.items()]))

    def close(ended: BaseException | None) -> None:
        status = "FINISHED" if ended is None else "KILLED" if isinstance(ended, KeyboardInterrupt) else "FAILED"
        _bounded(limit, lambda: client.set_terminated(run_id, status=status))

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
