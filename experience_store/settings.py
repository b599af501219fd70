"""How a library's experiences enter a prompt: the one declaration of the injection settings.

The training toolkit embeds this model in its run config (its CLI makes a flag of every field
carrying ``json_schema_extra={"flag": ...}``), packs record it in their manifest, and the proxy
takes its options from it, so the modes and their defaults are declared here only.
"""

from __future__ import annotations

import typing
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

Mode = Literal["all", "retrieve", "auto"]
MODES: tuple[str, ...] = typing.get_args(Mode)


class InjectionSettings(BaseModel):
    """Mode, token budget and top-k of the injected experiences."""

    model_config = ConfigDict(extra="forbid")
    mode: Mode = Field(
        "all",
        description="How experiences enter the prompt: 'all' injects the whole library "
        "(paper-faithful), 'retrieve' the top-k most similar to the query within the token budget, "
        "'auto' all while it fits the budget and retrieve beyond",
        json_schema_extra={"flag": "injection"},
    )
    budget_tokens: int = Field(
        2000,
        gt=0,
        description="Token budget of the injected experiences in retrieve and auto "
        "modes (counted with the policy's tokenizer where known)",
        json_schema_extra={"flag": "inject-budget"},
    )
    top_k: int = Field(
        8,
        gt=0,
        description="Experiences retrieved per query in retrieve and auto modes",
        json_schema_extra={"flag": "top-k"},
    )
