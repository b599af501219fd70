"""``python -m tfgrpo.params --task toy --model tiny --json`` (also under ``accelerate launch -m``):
the ``tfgrpo grpo`` command, with the same options."""

from tfgrpo.cli.grpo import standalone

standalone()
