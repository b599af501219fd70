"""The math reward (tfgrpo.answers): references read as math, and a check that cannot stall a run."""

from __future__ import annotations

import asyncio
import time
from types import SimpleNamespace

import pytest
from loop_watch import longest_stall

from tfgrpo import answers


@pytest.mark.parametrize("reference, right, wrong", [
    ("2\\sqrt{3}", "so \\boxed{2\\sqrt{3}}", "\\boxed{2}"),
    ("4\\pi", "\\boxed{4\\pi}", "\\boxed{4}"),
    ("2^{10}", "\\boxed{1024}", "\\boxed{2}"),
    ("x^2 - 7x + 12", "\\boxed{(x-3)(x-4)}", "\\boxed{12}"),
    ("3, 5, 7", "\\boxed{3, 5, 7}", "\\boxed{7}"),
    ("6 - 5i", "\\boxed{6-5i}", "\\boxed{5}"),
    ("(-\\infty, 3)", "\\boxed{(-\\infty, 3)}", "\\boxed{3}"),
    ("\\$18.90", "It costs \\boxed{18.90}", "\\boxed{18}"),
    ("72", "Answer: 72", "Answer: 27"),
    ("1,000", "\\boxed{1000}", "\\boxed{100}"),
    ("$\\frac{1}{2}$", "\\boxed{0.5}", "\\boxed{2}"),
])  # fmt: skip
def test_references_are_read_as_math(reference, right, wrong):
    """MATH-style references carry LaTeX without delimiters; read as plain text they gave one
    number of themselves (2\\sqrt{3} -> 2), so the right answer scored 0 and a wrong one 1."""
    assert answers.math_check(reference, right) == 1.0
    assert answers.math_check(reference, wrong) == 0.0


async def test_a_hostile_answer_is_cut_off_without_stalling_the_run(monkeypatch):
    """sympy holds the interpreter lock inside 9^(9^(9^9)): a thread could not be timed out and
    the event loop stalled. In a worker process it is killed at the limit; others go on."""
    monkeypatch.setattr(answers, "CHECK_TIMEOUT_S", 2.0)
    check = answers.math_verified.fn
    t0 = time.monotonic()
    (hostile, fine), stall = await longest_stall(
        asyncio.gather(
            check(SimpleNamespace(id="h", answer="1"), "\\boxed{9^{9^{9^{9}}}}"),
            check(SimpleNamespace(id="f", answer="4"), "\\boxed{4}"),
        )
    )
    took = time.monotonic() - t0
    assert (hostile, fine) == (0.0, 1.0) and took < 10
    assert stall < 1.0  # the loop kept running throughout
    assert await check(SimpleNamespace(id="next", answer="72"), "Answer: 72") == 1.0  # a new worker took over
