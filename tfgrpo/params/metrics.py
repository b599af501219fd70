"""Per-step metrics of parameter mode: token-weighted means over micro-batches, and the log line."""

from __future__ import annotations

import math
from typing import Any


class StepStats:
    """Token-weighted means of the per-step metrics over all micro-batches."""

    def __init__(self):
        self.loss = 0.0
        self.tokens = 0.0
        self.entropy = self.kl = self.clip = 0.0
        self.have_kl = False

    def add(self, logp, old_lp, ref_lp, entropy, t, mask, eps_low, eps_high, sequence_level):
        from tfgrpo.params import losses

        n = float(mask.sum())
        self.tokens += n
        self.entropy += float((entropy * mask).sum())
        self.clip += n * losses.clip_fraction(
            logp.detach(), old_lp, t.advantages, mask, eps_low=eps_low, eps_high=eps_high, sequence_level=sequence_level
        )
        if ref_lp is not None:
            self.have_kl = True
            self.kl += float((losses.k3_kl(logp.detach(), ref_lp) * mask).sum())

    def summary(self, passes: int) -> dict[str, Any]:
        n = max(self.tokens, 1.0)
        return {
            "loss": round(self.loss / passes, 6),
            "kl": round(self.kl / n, 6) if self.have_kl else None,
            "clip_fraction": round(self.clip / n, 4),
            "entropy": round(self.entropy / n, 4),
            "train_tokens": int(self.tokens),
        }


def mean(xs: list[float]) -> float | None:
    return round(sum(xs) / len(xs), 4) if xs else None


def std(xs: list[float]) -> float | None:
    if not xs:
        return None
    m = sum(xs) / len(xs)
    return round(math.sqrt(sum((x - m) ** 2 for x in xs) / len(xs)), 4)


def format_step(m: dict[str, Any]) -> str:
    def f(k, fmt="{:.3f}"):
        v = m.get(k)
        return "-" if v is None else fmt.format(v)

    fwd = f"  [{m['forward']}]" if m.get("forward") else ""
    return (
        f"step {m['step']:>4}  reward {f('reward_mean')} ± {f('reward_std')}  loss {f('loss', '{:.4f}')}  "
        f"kl {f('kl', '{:.4f}')}  clip {f('clip_fraction')}  entropy {f('entropy')}  "
        f"groups {m['groups_trained']}/{m['groups_sampled']}  {f('tokens_per_s', '{:.0f}')} tok/s{fwd}"
    )
