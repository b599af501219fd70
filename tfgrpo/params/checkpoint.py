"""Checkpoints: trainable weights and optimiser state in safetensors, the rest in JSON.

``<run>/checkpoints/step-000012/``: ``model.safetensors`` (trainable parameters by name; LoRA
adapters only with peft), ``optimizer.safetensors`` + ``optimizer.json`` (tensors of the
optimiser state, and its scalars and param groups), ``state.json`` (step, data cursor,
reward history). Nothing is pickled.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tfgrpo.errors import UserError
from tfgrpo.rundir import CHECKPOINTS

STATE_VERSION = 1


def checkpoint_dir(run_dir: str | Path, step: int) -> Path:
    return Path(run_dir) / CHECKPOINTS / f"step-{step:06d}"


def save_checkpoint(path: Path, model, optimizer, state: dict[str, Any]) -> Path:
    from safetensors.torch import save_file

    from tfgrpo.params.model import trainable_state

    path.mkdir(parents=True, exist_ok=True)
    save_file(trainable_state(model), str(path / "model.safetensors"))
    tensors, meta = _split_optimizer_state(optimizer.state_dict())
    save_file(tensors, str(path / "optimizer.safetensors"))
    (path / "optimizer.json").write_text(json.dumps(meta))
    (path / "state.json").write_text(json.dumps({"version": STATE_VERSION, **state}))
    return path


def latest_checkpoint(path: str | Path) -> Path:
    """``path`` itself when it is a checkpoint, else the newest one under ``path/checkpoints``."""
    p = Path(path).expanduser()
    if (p / "state.json").is_file():
        return p
    found = sorted((p / CHECKPOINTS).glob("step-*/state.json"))
    if not found:
        raise UserError(f"--resume: no checkpoint in {p}")
    return found[-1].parent


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
    return json.loads((path / "state.json").read_text())


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
