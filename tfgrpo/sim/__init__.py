"""The built-in SIMULATED model: an OpenAI-compatible HTTP server for demos and tests.

It is not a language model. Its policy answers the ``demo`` task's problems, right with
probability ``BASE_P``, or ``SKILLED_P`` when the context names the problem's hidden skill;
its judge fills the JSON schema it is sent. Deterministic for a seed.
"""

from tfgrpo.sim.policy_replies import BASE_P, SKILLED_P, expected_accuracy
from tfgrpo.sim.server import FAULT_KINDS, SimServer, SimStats, parse_faults, start_sim_server

__all__ = ["BASE_P", "FAULT_KINDS", "SKILLED_P", "SimServer", "SimStats", "expected_accuracy", "parse_faults", "start_sim_server"]
