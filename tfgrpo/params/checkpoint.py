"""Checkpoints (trainable weights and optimiser state in safetensors, the rest in JSON) and
what a resume may change (:func:`check_resume`).

``<run>/checkpoints/step-000012/``: ``model.safetensors`` (trainable parameters by name; LoRA
adapters only with peft), ``optimizer.safetensors`` + ``optimizer.json`` (tensors of the
optimiser state, and its scalars and param groups), ``state.json`` (step, data cursor,
reward history). Nothing is pickled. A checkpoint is written under ``step-N.partial`` and
renamed into place, so a directory named ``step-N`` is always whole.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from tfgrpo.errors import UserError
from tfgrpo.rundir import CHECKPOINTS, CONFIG, RunDir

if TYPE_CHECKING:
    from tfgrpo.params.config import ParamsConfig

STATE_VERSION = 1
log = logging.getLogger(__name__)


# Settings a resumed run may change: how long it trains, how often it saves, where metrics go,
# and how the same computation is laid out on the hardware. Everything else would make the
# continuation another run (the optimiser's learning rate and weight decay come from the checkpoint).
RESUMABLE = frozenset(
    {
        "steps",
        "save_every",
        "report_to",
        "device",
        "micro_batch_groups",
        "gradient_checkpointing",
        "prefix_sharing",
        "generator",
    }
)


def run_directory(
    cfg: ParamsConfig, out: str | Path | None, resume: bool | str | Path | None
) -> tuple[Path, Path | None]:
    """Where a run goes and what it resumes from (None: a fresh start). Fresh: ``out``, else
    ``runs/grpo-<task>-<time>``, refused when it holds a run. ``resume=True`` continues ``out``;
    ``resume=PATH`` continues the run of PATH (a run directory or one of its checkpoints), in
    place: ``out``, if given, must name that run."""
    from tfgrpo.params.config import default_run_dir

    if resume is None or resume is False:
        path = Path(out).expanduser() if out is not None else default_run_dir(cfg.task)
        if RunDir(path).exists():
            raise UserError(
                f"{path} already holds a run: continue it with tfgrpo grpo --resume {path}, or choose another --out"
            )
        return path, None
    source = out if resume is True else resume
    if source is None:
        raise UserError("resume needs the run directory (out=...)")
    return check_resume(cfg, source, out), Path(source).expanduser()


def check_resume(cfg: ParamsConfig, resume: str | Path, out: str | Path | None = None) -> Path:
    """The run directory of ``resume`` (a run or one of its checkpoints), which a resume continues
    in place (``out``, if given, must name it), with the run's own settings but the
    :data:`RESUMABLE` ones."""
    from tfgrpo.config import load_yaml, setting_name
    from tfgrpo.params.config import ParamsConfig, without_out  # noqa: F811 (the class itself, at run time)

    run = run_of(resume)
    if not (run / CONFIG).is_file():
        raise UserError(f"--resume: {resume} is not a parameter-mode run directory or checkpoint (no {CONFIG})")
    if out is not None and Path(out).expanduser().resolve() != run.resolve():
        raise UserError(f"--resume continues {run} in place; --out {out} would write elsewhere (leave --out out)")
    saved = ParamsConfig.model_validate(without_out(load_yaml(run / CONFIG))[0])
    old = saved.model_dump(mode="json") | {"lr": saved.learning_rate}
    new = cfg.model_dump(mode="json") | {"lr": cfg.learning_rate}
    changed = sorted(k for k in old.keys() | new.keys() if k not in RESUMABLE and old.get(k) != new.get(k))
    if changed:
        flags = ", ".join(
            f"{setting_name(ParamsConfig, k)} ({old.get(k)!r} in the run, {new.get(k)!r} now)" for k in changed
        )
        raise UserError(f"a resumed run keeps its settings; cannot change {flags}: start a new run with another --out")
    return run


def checkpoint_dir(run_dir: str | Path, step: int) -> Path:
    return Path(run_dir) / CHECKPOINTS / f"step-{step:06d}"


def save_checkpoint(path: Path, model, optimizer, state: dict[str, Any]) -> Path:
    """Write the checkpoint beside ``path`` and move it into place whole: a kill while writing
    leaves the previous checkpoint (and any older one) as it was."""
    from safetensors.torch import save_file

    from tfgrpo.params.model import trainable_state

    tmp = path.with_name(path.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_file(trainable_state(model), str(tmp / "model.safetensors"))
    tensors, meta = _split_optimizer_state(optimizer.state_dict())
    save_file(tensors, str(tmp / "optimizer.safetensors"))
    (tmp / "optimizer.json").write_text(json.dumps(meta))
    (tmp / "state.json").write_text(json.dumps({"version": STATE_VERSION, **state}))
    for f in tmp.iterdir():
        with open(f, "rb") as fh:
            os.fsync(fh.fileno())
    if path.exists():  # the same step again (a resumed run redoing it): the old copy goes last
        old = path.with_name(path.name + ".old")
        shutil.rmtree(old, ignore_errors=True)
        path.rename(old)
        tmp.rename(path)
        shutil.rmtree(old, ignore_errors=True)
    else:
        tmp.rename(path)
    return path


def run_of(path: str | Path) -> Path:
    """The run directory of ``path``: itself, or the run a checkpoint directory belongs to."""
    p = Path(path).expanduser()
    return p.parent.parent if (p / "state.json").is_file() and p.parent.name == CHECKPOINTS else p


def latest_checkpoint(path: str | Path, warn: Callable[[str], None] = log.warning) -> Path | None:
    """``path`` itself when it is a checkpoint, else the newest readable one under
    ``path/checkpoints`` (one whose state.json does not read, a kill's leftover, is passed
    over with a warning to ``warn``), else None: the run stopped before its first checkpoint."""
    p = Path(path).expanduser()
    if (p / "state.json").is_file():
        _state(p)
        return p
    for found in sorted((p / CHECKPOINTS).glob("step-*/state.json"), reverse=True):
        try:
            _state(found.parent)
        except UserError as e:
            warn(f"{e}; trying the one before")
            continue
        return found.parent
    return None


def set_aside_after(run_dir: str | Path, step: int) -> list[Path]:
    """Move the checkpoints of steps after ``step`` (the branch a resume from an earlier
    checkpoint leaves) to ``checkpoints/abandoned-step-N-<date-time>``: kept, but never picked up
    again as the newest."""
    import time

    moved = []
    for d in sorted((Path(run_dir) / CHECKPOINTS).glob("step-*")):
        number = d.name.removeprefix("step-").split(".")[0]
        if number.isdigit() and int(number) > step:
            target = d.with_name(f"abandoned-{d.name}-{time.strftime('%Y%m%d-%H%M%S')}")
            n = 1
            while target.exists():  # set aside twice in one second
                n += 1
                target = d.with_name(f"abandoned-{d.name}-{time.strftime('%Y%m%d-%H%M%S')}-{n}")
            d.rename(target)
            moved.append(target)
    return moved


def _state(path: Path) -> dict[str, Any]:
    try:
        state = json.loads((path / "state.json").read_text())
        int(state["step"]), int(state["cursor"]), list(state["reward_by_step"])
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise UserError(f"--resume: checkpoint {path} is damaged (state.json: {type(e).__name__})") from None
    return state


def load_checkpoint(path: Path, model, optimizer) -> dict[str, Any]:
    """Load weights and optimiser state in place; returns the saved training state."""
    from safetensors.torch import load_file

    weights = load_file(str(path / "model.safetensors"))
    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    if set(weights) != set(params):
        raise UserError(f"--resume: checkpoint {path} was saved from a different model or LoRA setting")
    import torch

    with torch.no_grad():
        for name, value in weights.items():
            params[name].copy_(value)
    meta = json.loads((path / "optimizer.json").read_text())
    optimizer.load_state_dict(_join_optimizer_state(load_file(str(path / "optimizer.safetensors")), meta))
    return _state(path)


def _split_optimizer_state(sd: dict[str, Any]) -> tuple[dict, dict]:
    import torch

    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for pid, st in sd["state"].items():
        for key, value in st.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{pid}.{key}"] = value.detach().contiguous().cpu()
            else:
                scalars.setdefault(str(pid), {})[key] = value
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def _join_optimizer_state(tensors: dict, meta: dict) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    for name, value in tensors.items():
        pid, key = name.split(".", 1)
        state.setdefault(int(pid), {})[key] = value
    for pid, values in meta["scalars"].items():
        state.setdefault(int(pid), {}).update(values)
    return {"state": state, "param_groups": meta["param_groups"]}
