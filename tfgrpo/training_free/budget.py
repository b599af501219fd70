"""Run budgets: ``--budget-cost USD``, ``--budget-tokens N``, ``--budget-calls N``.

The trainer asks before every step whether the next step could pass a limit, judging the
next step by the largest step so far (the first step runs unless a limit is already spent).
A run that stops says why, writes ``status.json`` (``stopped_by_budget``) and resumes with a
higher limit: the totals count every step of the run, across resumes. Cache hits cost no
call, no token and no money. A step that has started always finishes, so a wrong guess
overshoots by at most one step.

Cost is litellm's price for the model; for a model without one (local vLLM, a provider's own server)
``--price-per-mtok IN,OUT`` sets USD per million prompt and completion tokens.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable

from tfgrpo.training_free.config import BudgetConfig
from tfgrpo.errors import UserError


def parse_price(text: str | None) -> tuple[float, float] | None:
    """``"0.15,0.60"`` -> (0.15, 0.60) USD per million prompt / completion tokens."""
    if not text:
        return None
    parts = text.split(",")
    try:
        price = tuple(float(p) for p in parts)
    except ValueError:
        price = ()
    if len(price) != 2 or any(p < 0 for p in price):
        raise UserError(f"--price-per-mtok {text!r}: give IN,OUT in USD per million tokens, e.g. 0.15,0.60")
    return price  # type: ignore[return-value]


@dataclass
class Spend:
    cost: float = 0.0
    tokens: int = 0
    calls: int = 0
    unpriced: tuple[str, ...] = ()  # roles that made calls without a known price

    @classmethod
    def of(cls, usage: dict[str, Any], price: tuple[float, float] | None = None) -> "Spend":
        """Spend of one usage dict (role -> RoleUsage fields), as a step records it; ``price``
        (``--price-per-mtok``) prices the calls recorded without a cost (e.g. before a resume
        that gave the price)."""
        s = cls()
        for role, u in usage.items():
            s.calls += int(u.get("calls") or 0)
            prompt, completion = int(u.get("prompt_tokens") or 0), int(u.get("completion_tokens") or 0)
            s.tokens += prompt + completion
            if u.get("cost_usd") is not None:
                s.cost += float(u["cost_usd"])
            elif price is not None:
                s.cost += (prompt * price[0] + completion * price[1]) / 1e6
            elif u.get("calls"):
                s.unpriced += (role,)
        return s

    def __add__(self, other: "Spend") -> "Spend":
        return Spend(
            self.cost + other.cost,
            self.tokens + other.tokens,
            self.calls + other.calls,
            tuple(dict.fromkeys(self.unpriced + other.unpriced)),
        )


def total_spend(usages: Iterable[dict[str, Any]], price: tuple[float, float] | None = None) -> Spend:
    out = Spend()
    for u in usages:
        out = out + Spend.of(u, price)
    return out


class Budget:
    def __init__(self, cfg: BudgetConfig):
        self.cfg = cfg

    @property
    def active(self) -> bool:
        return any(v is not None for v in (self.cfg.cost, self.cfg.tokens, self.cfg.calls))

    def stop_reason(self, step_usages: list[dict[str, Any]]) -> str | None:
        """Why the next step must not start, or None. ``step_usages``: every finished step's usage."""
        if not self.active:
            return None
        price = parse_price(self.cfg.price_per_mtok)
        spent = total_spend(step_usages, price)
        per_step = [Spend.of(u, price) for u in step_usages]
        if self.cfg.cost is not None and spent.unpriced:
            return (
                f"--budget-cost cannot be checked: no price is known for the {', '.join(spent.unpriced)} model; "
                "give one with --price-per-mtok IN,OUT"
            )
        checks = (
            ("budget-cost", self.cfg.cost, spent.cost, max((s.cost for s in per_step), default=0.0), "${:.4f}"),
            ("budget-tokens", self.cfg.tokens, spent.tokens, max((s.tokens for s in per_step), default=0), "{:,}"),
            ("budget-calls", self.cfg.calls, spent.calls, max((s.calls for s in per_step), default=0), "{:,}"),
        )
        for name, limit, used, next_step, fmt in checks:
            if limit is not None and (used >= limit or used + next_step > limit):
                return (
                    f"--{name} {fmt.format(limit)} would be passed: spent {fmt.format(used)}, "
                    f"a step takes up to {fmt.format(next_step)}"
                )
        return None
