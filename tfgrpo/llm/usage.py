"""Calls, tokens and cost per role (policy, judge), as the run's summary reports them, and the
one sanitiser for every number a server sends (``Retry-After``, token counts, cost)."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

MAX_TOKENS_PER_REPLY = 10**8  # more than any context window; a bigger count is a lie
MAX_COST_PER_REPLY = 1e4  # USD


def server_number(value: Any, *, upper: float, default: float | None = 0.0) -> float | None:
    """A number from a server, made safe: finite and in [0, upper] (larger values are capped at
    ``upper``); ``default`` for anything else (nan, inf, negative, bool, unparseable text)."""
    if value is None or isinstance(value, bool):
        return default
    if isinstance(value, int) and value > upper:
        return float(upper)  # also ints too large for a float
    try:
        number = float(value.strip() if isinstance(value, (str, bytes)) else value)
    except (TypeError, ValueError, OverflowError):
        return default
    if not math.isfinite(number) or number < 0:
        return default
    return min(number, upper)


def token_count(value: Any) -> int:
    """A token count from a server's ``usage``: a non-negative int, 0 when absent or invalid."""
    return int(server_number(value, upper=MAX_TOKENS_PER_REPLY) or 0)


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
    replicas: dict[str, int] = field(default_factory=dict)  # requests sent to each endpoint, when several

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
        out = {name: {**asdict(r), "total_tokens": r.total_tokens} for name, r in sorted(self.roles.items())}
        for vals in out.values():
            if not vals["replicas"]:
                del vals["replicas"]  # one endpoint: nothing to split
        return out

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
            for k in (
                "calls",
                "cache_hits",
                "failures",
                "retries",
                "prompt_tokens",
                "completion_tokens",
                "cached_tokens",
            ):
                setattr(mine, k, getattr(mine, k) + getattr(r, k))
            mine.add_cost(r.cost_usd)
            for url, count in r.replicas.items():
                mine.replicas[url] = mine.replicas.get(url, 0) + count
        return out
