"""The built-in SIMULATED model: an OpenAI-compatible HTTP server for demos and tests.

It is not a language model. Its policy answers the ``demo`` task's problems, right with a
probability set by the ADVICE of the lessons in its context (right advice raises it, harmful
advice lowers it, unrelated lessons cost a little; some skills stay hard); its judge reads the
attempts it is shown and derives lessons from what the better ones did and the worse did not.
Deterministic for a seed.
"""

from tfgrpo.sim.agent_replies import DATA as _AGENT_DATA
from tfgrpo.sim.agent_replies import find_tool_row
from tfgrpo.sim.policy_replies import BASE_P, HARD_SKILLED_P, SKILLED_P, expected_accuracy
from tfgrpo.sim.server import FAULT_KINDS, SimServer, SimStats, parse_faults, start_sim_server
from tfgrpo.sim.skills import find_row

KNOWN_TASKS = ("demo", *_AGENT_DATA)  # the built-in tasks whose problems the simulator answers


def recognises(text: str) -> bool:
    """Whether the simulator knows the problem in ``text`` (else it answers at random)."""
    return find_row(text) is not None or find_tool_row(text) is not None


__all__ = [
    "BASE_P",
    "FAULT_KINDS",
    "HARD_SKILLED_P",
    "KNOWN_TASKS",
    "recognises",
    "SKILLED_P",
    "SimServer",
    "SimStats",
    "expected_accuracy",
    "parse_faults",
    "start_sim_server",
]
