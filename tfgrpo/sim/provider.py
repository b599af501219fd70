"""The simulator as a provider (entry point ``tfgrpo.providers: sim``): ``--model sim`` is seed 0,
``--model sim/7`` seed 7. One server per seed serves both roles; the seed is part of the model
name the client sends, so cached answers never cross seeds."""

from __future__ import annotations

import contextlib
from typing import Iterator, Sequence

from tfgrpo.errors import UserError
from tfgrpo.llm.providers import Capabilities

NAME = "sim"


def seed_of(model: str) -> int:
    _, _, tail = model.partition("/")
    if not tail:
        return 0
    try:
        return int(tail)
    except ValueError:
        raise UserError(f"--model {model}: the simulator's model names are sim and sim/SEED (an integer)") from None


class SimProvider:
    name = NAME
    capabilities = Capabilities(response_schema=True, tokenizer=False)
    api_key = "sim"

    @contextlib.contextmanager
    def serve(self, model: str) -> Iterator[str]:
        from tfgrpo.sim.server import start_sim_server

        with start_sim_server(seed=seed_of(model)) as server:
            yield server.base_url

    def client_model(self, model: str, role: str) -> str:
        return f"openai/sim-{role}-s{seed_of(model)}"

    def check(self, task: str, prompts: Sequence[str]) -> str | None:
        from tfgrpo.sim import KNOWN_TASKS, recognises

        if not any(recognises(p) for p in prompts[:200]):
            raise UserError(
                f"--model sim is the built-in SIMULATED model: it knows only the problems of the built-in "
                f"tasks {', '.join(KNOWN_TASKS)}, and none of task {task!r}; pass a real --model"
            )
        return (
            "SIMULATION: --model sim is a built-in simulator, not a language model; "
            "its numbers say nothing about a real model"
        )


provider = SimProvider()
