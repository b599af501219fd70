"""Calls, tokens and cost per role (policy, judge), as the run's summary reports them."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class RoleUsage:
    calls: int = 0
    cache_hits: int = 0
    failures: int = 0
    retries: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    cost_usd: float | None = None

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def add_cost(self, cost: float | None) -> None:
        if cost is None:
            return
        self.cost_usd = (self.cost_usd or 0.0) + cost


@dataclass
class Usage:
    """Usage by role. ``calls`` counts requests actually sent; cache hits are counted apart."""

    roles: dict[str, RoleUsage] = field(default_factory=dict)

    def role(self, name: str) -> RoleUsage:
        return self.roles.setdefault(name, RoleUsage())

    def to_dict(self) -> dict[str, Any]:
        return {name: {**asdict(r), "total_tokens": r.total_tokens} for name, r in sorted(self.roles.items())}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Usage":
        u = cls()
        for name, vals in data.items():
            vals = {k: v for k, v in vals.items() if k != "total_tokens"}
            u.roles[name] = RoleUsage(**vals)
        return u

    def merged(self, other: "Usage") -> "Usage":
        out = Usage.from_dict(self.to_dict())
        for name, r in other.roles.items():
            mine = out.role(name)
            for k in ("calls", "cache_hits", "failures", "retries", "prompt_tokens", "completion_tokens", "cached_tokens"):
                setattr(mine, k, getattr(mine, k) + getattr(r, k))
            mine.add_cost(r.cost_usd)
        return out
