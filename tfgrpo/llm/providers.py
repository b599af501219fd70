"""Providers that serve a model name themselves: a plugin starts its own OpenAI-compatible server
for the names it owns (``NAME`` or ``NAME/...``) and says what that server can do.

A provider is an object registered under the entry-point group ``tfgrpo.providers`` (see
pyproject.toml); nothing in tfgrpo names one. Every other model name goes to litellm or straight
to its OpenAI-compatible ``api_base`` (:mod:`tfgrpo.llm.client`).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any, ContextManager, Protocol, Sequence

GROUP = "tfgrpo.providers"


@dataclass(frozen=True)
class Capabilities:
    """What an endpoint can do, asked of its client (never of the model's name).

    ``response_schema``: it honours a ``response_format`` JSON schema (None: ask litellm's model
    info). ``tokenizer``: litellm can count its tokens (False: the library's estimate is used)."""

    response_schema: bool | None = None
    tokenizer: bool = True


class Provider(Protocol):
    name: str  # the model names it owns: NAME and NAME/...
    capabilities: Capabilities
    api_key: str  # what its own server is sent

    def serve(self, model: str) -> ContextManager[str]:
        """Start the server for ``model``; yields its base URL; stops it on exit."""

    def client_model(self, model: str, role: str) -> str:
        """The name the client sends for ``model`` in ``role`` (policy or judge)."""

    def check(self, task: str, prompts: Sequence[str]) -> str | None:
        """Before a run on these prompts: a line the user must see (or None); raises UserError
        when the provider cannot answer them at all."""


@functools.lru_cache(maxsize=1)
def _registered() -> dict[str, Any]:
    return {ep.name: ep for ep in entry_points(group=GROUP)}


def provider_for(model: str | None) -> Provider | None:
    """The registered provider that owns ``model`` (``NAME`` or ``NAME/...``), else None."""
    if not model:
        return None
    ep = _registered().get(model.split("/", 1)[0])
    return ep.load() if ep is not None else None
