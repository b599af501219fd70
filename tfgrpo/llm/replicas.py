"""Several endpoints serving the same model (vLLM replicas, several ``transformers serve``
processes): each request goes to the least busy live replica; a replica that refuses
connections is taken out for ``cooldown`` seconds and then tried again. One that answers what no
retry mends (404: it does not serve the model; 401/403; a redirect) is retired for good, and
its requests go to the others: only when every replica is retired does the model fail.

litellm's Router spreads load the same way but never cools a deployment down on a connection
error (its cooldown handler skips ``APIConnectionError``), so a dead replica would keep getting
its share of requests; this keeps the few lines of bookkeeping that need.
"""

from __future__ import annotations

import logging
import random
import time
from dataclasses import dataclass

log = logging.getLogger(__name__)


def split_bases(api_base: str | list[str] | tuple[str, ...] | None) -> list[str]:
    """``"http://a/v1,http://b/v1"`` (or a list of them) as a list of distinct URLs, in order."""
    if not api_base:
        return []
    parts = [api_base] if isinstance(api_base, str) else list(api_base)
    urls = [u.strip().rstrip("/") for p in parts for u in str(p).split(",") if u.strip()]
    return list(dict.fromkeys(urls))


@dataclass
class Replica:
    url: str
    in_flight: int = 0
    down_until: float = 0.0
    answered: bool = False  # has answered at least once (the cold start is over)
    retired: str | None = None  # why it was taken out of rotation for good


class ReplicaSet:
    def __init__(self, urls: list[str], cooldown: float = 30.0) -> None:
        self.replicas = [Replica(u) for u in urls]
        self.cooldown = cooldown

    def __len__(self) -> int:
        return len(self.replicas)

    def pick(self, avoid: str | None = None) -> Replica:
        """The least busy live replica (ties at random), preferring one other than ``avoid``;
        when every replica is down, the one that comes back first."""
        now = time.monotonic()
        live = [r for r in self.replicas if r.down_until <= now]
        if not live:
            return min(self.replicas, key=lambda r: r.down_until)
        others = [r for r in live if r.url != avoid] or live
        least = min(r.in_flight for r in others)
        return random.choice([r for r in others if r.in_flight == least])

    def down(self, replica: Replica, reason: str) -> None:
        if replica.retired is not None:
            return
        if len(self.replicas) > 1 and replica.down_until <= time.monotonic():
            log.warning("replica %s taken out for %.0fs: %s", replica.url, self.cooldown, reason)
        replica.down_until = time.monotonic() + self.cooldown

    def any_live(self, besides: Replica) -> bool:
        now = time.monotonic()
        return any(r is not besides and r.down_until <= now for r in self.replicas)

    def retire(self, replica: Replica, reason: str) -> bool:
        """Take ``replica`` out of rotation for good; whether any replica remains in it."""
        if replica.retired is None:
            replica.retired, replica.down_until = reason, float("inf")
            if any(r.retired is None for r in self.replicas):
                log.warning("replica %s taken out of rotation: %s; its requests go to the others", replica.url, reason)
        return any(r.retired is None for r in self.replicas)

    def why_retired(self) -> str:
        """Each retired replica and why, for the error once none is left."""
        return "; ".join(f"{r.url}: {r.retired}" for r in self.replicas if r.retired is not None)
