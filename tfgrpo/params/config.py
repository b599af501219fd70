"""Configuration of a parameter-mode run. Every field carries its help text; the ones with
``flag(...)`` become command-line options. Importing this module does not import torch."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator

from tfgrpo.config import ConfigModel, build, flag
from tfgrpo.params.losses import LOSSES

# Defaults per loss for (epsilon_low, epsilon_high), from the papers (docs/params.md, Losses).
CLIP_DEFAULTS: dict[str, tuple[float, float]] = {
    "grpo": (0.2, 0.2),
    "dr_grpo": (0.2, 0.2),
    "dapo": (0.2, 0.28),
    "gspo": (3e-4, 4e-4),
}


class ParamsConfig(ConfigModel):
    """GRPO weight training on local hardware (parameter mode)."""

    # -- shared with the training-free loop
    task: str = Field("toy", description="Task name or file.py:name.", json_schema_extra=flag("task"))
    data: str | None = Field(
        None,
        description="Optional local data file for the task (JSONL, JSON or Parquet).",
        json_schema_extra=flag("data"),
    )
    model: str = Field(
        "tiny",
        description="Policy: a Hugging Face id, a local directory, or 'tiny' (random CPU model).",
        json_schema_extra=flag("model"),
    )
    group_size: int = Field(
        8, ge=2, description="Responses sampled per prompt (G).", json_schema_extra=flag("group-size")
    )
    seed: int = Field(0, description="Random seed.", json_schema_extra=flag("seed"))
    steps: int = Field(80, ge=1, description="Optimiser steps to run.", json_schema_extra=flag("steps"))
    device: Literal["auto", "cpu", "cuda"] = Field(
        "auto", description="auto, cpu or cuda.", json_schema_extra=flag("device")
    )

    # -- loss
    loss: str = Field("dapo", description=f"Policy loss: {', '.join(LOSSES)}.", json_schema_extra=flag("loss"))
    advantage: Literal["auto", "grpo", "dr_grpo", "gdpo"] = Field(
        "auto",
        description="Advantage normalisation (auto: dr_grpo for the dr_grpo loss, else grpo; gdpo for "
        "several rewards normalised separately).",
        json_schema_extra=flag("advantage"),
    )
    beta: float = Field(
        0.0,
        ge=0,
        description="Coefficient of the k3 KL to the initial (reference) model; 0 = off.",
        json_schema_extra=flag("beta"),
    )
    epsilon_low: float | None = Field(
        None, gt=0, description="Lower clip range (default per loss).", json_schema_extra=flag("epsilon-low")
    )
    epsilon_high: float | None = Field(
        None, gt=0, description="Upper clip range (default per loss).", json_schema_extra=flag("epsilon-high")
    )
    token_level: bool | None = Field(
        None,
        description="Token-level mean over the batch (default: on for dapo only; not possible with gspo).",
        json_schema_extra=flag("token-level"),
    )
    dynamic_sampling: bool | None = Field(
        None,
        description="Drop groups whose rewards are all equal and refill the batch (default: on for dapo).",
        json_schema_extra=flag("dynamic-sampling"),
    )
    overlong_buffer: int | None = Field(
        None,
        ge=0,
        description="DAPO overlong shaping buffer in tokens (default: max_tokens/4 for dapo, else 0 = off).",
        json_schema_extra=flag("overlong-buffer"),
    )
    updates_per_batch: int = Field(
        1,
        ge=1,
        description="Optimiser passes over each sampled batch (mu).",
        json_schema_extra=flag("updates-per-batch"),
    )

    # -- optimisation
    lr: float = Field(
        1e-6, gt=0, description="AdamW learning rate ('tiny' uses 3e-3 unless set).", json_schema_extra=flag("lr")
    )
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay.", json_schema_extra=flag("weight-decay"))
    max_grad_norm: float = Field(
        1.0, gt=0, description="Gradient clipping norm.", json_schema_extra=flag("max-grad-norm")
    )
    lora_r: int = Field(0, ge=0, description="LoRA rank; 0 trains all weights.", json_schema_extra=flag("lora-r"))
    lora_alpha: int | None = Field(
        None, gt=0, description="LoRA alpha (default 2*r).", json_schema_extra=flag("lora-alpha")
    )
    gradient_checkpointing: bool = Field(
        False,
        description="Recompute activations in backward to save memory.",
        json_schema_extra=flag("gradient-checkpointing"),
    )
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto", description="Weights dtype for real models.", json_schema_extra=flag("dtype")
    )

    # -- batch shape
    batch_size: int = Field(
        8, ge=1, description="Groups (prompts) per optimiser step.", json_schema_extra=flag("batch-size")
    )
    micro_batch_groups: int = Field(
        2,
        ge=1,
        description="Groups per forward/backward micro-batch (never split).",
        json_schema_extra=flag("micro-batch-groups"),
    )
    max_prompt_len: int = Field(
        512,
        ge=1,
        description="Prompts longer than this are cut from the left.",
        json_schema_extra=flag("max-prompt-len"),
    )
    max_tokens: int = Field(
        256, ge=1, description="Maximum new tokens per response.", json_schema_extra=flag("max-tokens")
    )
    temperature: float = Field(1.0, gt=0, description="Sampling temperature.", json_schema_extra=flag("temperature"))
    prefix_sharing: Literal["auto", "packed", "naive"] = Field(
        "auto",
        description="Training forward: packed (each group's prompt once), naive (prompt repeated per "
        "response), or auto (packed when it saves enough tokens; the choice is logged).",
        json_schema_extra=flag("prefix-sharing"),
    )
    generator: Literal["auto", "hf", "vllm"] = Field(
        "auto",
        description="Generation backend (auto: vLLM on a GPU when installed, else HF generate).",
        json_schema_extra=flag("generator"),
    )

    # -- bookkeeping
    save_every: int = Field(
        0, ge=0, description="Checkpoint every N steps (0: only at the end).", json_schema_extra=flag("save-every")
    )
    report_to: str | None = Field(
        None,
        description="Log each step's metrics to tensorboard, wandb or mlflow "
        "(comma-separated; each an optional extra).",
        json_schema_extra=flag("report-to"),
    )

    # ---------------------------------------------------------------------------------------

    @model_validator(mode="before")
    @classmethod
    def _no_out(cls, data: Any) -> Any:
        """The run directory is where a run goes, not one of its settings (as in the training-free
        mode): ``train_params(cfg, out=...)`` or ``--out``."""
        if isinstance(data, dict) and "out" in data:
            raise ValueError(
                "out is the run directory, not a setting: pass it as train_params(cfg, out=...) "
                "(on the command line, --out)"
            )
        return data

    @model_validator(mode="after")
    def _compatible(self) -> "ParamsConfig":
        """Reject unknown or incompatible options (before any model loads); ``build`` turns the
        ValueError into a one-line UserError."""
        from tfgrpo.tracking import parse_report_to

        parse_report_to(self.report_to)
        if self.loss not in LOSSES:
            raise ValueError(f"unknown loss '{self.loss}' (choose from {', '.join(LOSSES)})")
        if self.loss == "gspo" and self.token_level:
            raise ValueError("--loss gspo uses a sequence-level ratio: it cannot take --token-level")
        if self.loss == "dapo" and self.token_level is False:
            raise ValueError("--loss dapo is token-level by definition: for a per-sequence mean use --loss grpo")
        if self.loss == "dr_grpo" and self.token_level:
            raise ValueError("--loss dr_grpo divides by a constant: it cannot take --token-level")
        if self.loss == "gspo" and self.overlong_buffer:
            raise ValueError("--overlong-buffer shapes token-level rewards for dapo; not with --loss gspo")
        if self.loss == "dr_grpo" and self.advantage in ("grpo", "gdpo"):
            raise ValueError("--loss dr_grpo uses unscaled advantages (r - mean): drop --advantage or use dr_grpo")
        if self.overlong_buffer and self.overlong_buffer >= self.max_tokens:
            raise ValueError("--overlong-buffer must be smaller than --max-tokens")
        lo, hi = self.clip_range
        if lo >= 1:
            raise ValueError("--epsilon-low must be below 1")
        if self.beta < 0 or hi <= 0:
            raise ValueError("--beta and --epsilon-high must be positive")
        return self

    # -- resolved values (defaults that depend on the loss)

    @property
    def clip_range(self) -> tuple[float, float]:
        lo, hi = CLIP_DEFAULTS.get(self.loss, (0.2, 0.2))
        return (
            self.epsilon_low if self.epsilon_low is not None else lo,
            self.epsilon_high if self.epsilon_high is not None else hi,
        )

    @property
    def advantage_mode(self) -> str:
        if self.advantage != "auto":
            return self.advantage
        return "dr_grpo" if self.loss == "dr_grpo" else "grpo"

    @property
    def use_dynamic_sampling(self) -> bool:
        return self.dynamic_sampling if self.dynamic_sampling is not None else self.loss == "dapo"

    @property
    def overlong(self) -> int:
        if self.overlong_buffer is not None:
            return self.overlong_buffer
        return self.max_tokens // 4 if self.loss == "dapo" else 0

    @property
    def learning_rate(self) -> float:
        if "lr" not in self.model_fields_set and self.model == "tiny":
            return 3e-3
        return self.lr

    @property
    def effective_loss(self) -> str:
        """``token_level`` switches grpo to dapo's aggregation (token mean over the batch)."""
        if self.token_level and self.loss == "grpo":
            return "dapo"
        return self.loss


def make_config(**values) -> ParamsConfig:
    """Build and check a config from keyword values; a bad one is a one-line UserError."""
    return build(ParamsConfig, values)


def default_run_dir(task: str) -> Path:
    """Where a run goes when no ``out`` is given: ``runs/grpo-<task>-<time>``, new per run."""
    return Path("runs") / f"grpo-{task.replace(':', '-').replace('/', '-')}-{time.strftime('%Y%m%d-%H%M%S')}"


def without_out(data: dict[str, Any]) -> tuple[dict[str, Any], str | None]:
    """A config mapping read from a file, and the run directory it names as ``out`` (config.yaml
    of runs before ``out`` became an argument records it; it is not a setting)."""
    data = dict(data)
    out = data.pop("out", None)
    return data, str(out) if out is not None else None
