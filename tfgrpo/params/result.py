"""What a parameter-mode run returns (:func:`tfgrpo.params.train_params`), the counterpart of the
training-free mode's ``TrainResult``: the run directory, the step rows, the status, and
``summary()``, the object ``tfgrpo grpo --json`` prints. Importing this module does not import torch."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tfgrpo.rundir import STEPS


@dataclass
class ParamsResult:
    run_dir: Path
    steps: list[dict[str, Any]]  # the run's steps.jsonl rows, a resumed run's earlier steps included
    status: str  # "finished" (as status.json says)
    wall_s: float
    steps_planned: int
    model: str
    loss: str
    device: str  # "cpu" or "cuda"
    processes: int  # 1, or the processes of a torchrun / accelerate launch
    params_changed: bool  # whether any trainable weight differs from the initial model
    final_model: Path  # final/: the model (or its LoRA adapters) in Hugging Face format
    final_checkpoint: Path | None = None  # the newest checkpoint this run wrote
    resumed_from: int = 0  # the step a resume continued after (0: a fresh start)

    @property
    def reward_by_step(self) -> list[float | None]:
        return [s.get("reward_mean") for s in self.steps]

    @property
    def metrics_path(self) -> Path:
        return self.run_dir / STEPS

    def summary(self) -> dict[str, Any]:
        """The JSON-ready summary (``tfgrpo grpo --json``'s last line)."""
        return {
            "steps": len(self.steps),
            "reward_by_step": self.reward_by_step,
            "run_dir": str(self.run_dir),
            "final_checkpoint": str(self.final_checkpoint) if self.final_checkpoint else None,
            "final_model": str(self.final_model),
            "params_changed": self.params_changed,
            "loss": self.loss,
            "model": self.model,
            "device": self.device,
            "processes": self.processes,
            "status": self.status,
            "resumed_from_step": self.resumed_from,
            "wall_s": round(self.wall_s, 2),
            "metrics": str(self.metrics_path),
        }
