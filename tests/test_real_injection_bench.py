"""bench/real_injection.py on a tiny scale against a stub server whose answers depend on the lessons
in the system prompt: progress on stderr, one JSON line on stdout whose numbers agree with each
other and with what the stub was told to do. The real model's numbers come from running the script."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from cli_helpers import ENV
from openai_stub import StubServer

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.real_injection import LESSONS  # noqa: E402

PROBLEMS, K = 8, 2


def answer(messages, index):
    """The right sum on an ``Answer:`` line when the system prompt holds the lesson (index 0 always,
    index 1 for even sums); without it only sums divisible by 3 get the line; otherwise prose."""
    system = next((m["content"] for m in messages if m["role"] == "system"), "")
    a, b = (int(x) for x in re.findall(r"\d", messages[-1]["content"])[:2])
    taught = LESSONS[0] in system
    if (taught and (index == 0 or (a + b) % 2 == 0)) or (a + b) % 3 == 0:
        return f"Answer: {a + b}"
    return f"The sum is {a + b}."


def expected(taught: bool) -> float:
    from tfgrpo.task_registry import load_task

    held = load_task("digit_sums").eval_samples()[:PROBLEMS]
    right = 0
    for s in held:
        for index in range(K):
            a, b = (int(x) for x in re.findall(r"\d", s.messages[-1]["content"])[:2])
            right += (taught and (index == 0 or (a + b) % 2 == 0)) or (a + b) % 3 == 0
    return right / (PROBLEMS * K)


@pytest.mark.slow  # a subprocess and a Chroma-backed library; CI runs it
def test_real_injection_bench_json_agrees_with_itself():
    with StubServer(answer=answer) as stub:
        cmd = [sys.executable, str(ROOT / "bench" / "real_injection.py"), "--api-base", stub.base_url,
               "--problems", str(PROBLEMS), "-k", str(K), "--temperature", "1.0", "--json"]  # fmt: skip
        proc = subprocess.run(cmd, capture_output=True, text=True, env=ENV, timeout=300)
        requests = stub.requests
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 1, proc.stdout  # --json: only the JSON line; progress went to stderr
    assert "[real_injection]" in proc.stderr and "done in" in proc.stderr
    out = json.loads(lines[0])

    base, lib, pla = out["baseline"], out["library"], out["placebo"]
    assert out["n_problems"] == PROBLEMS and out["k"] == out["n"] == K and out["temperature"] == 1.0
    assert requests >= 3 * PROBLEMS  # three arms, every problem asked
    for arm in (base, lib, pla):
        assert arm["problems"] == PROBLEMS and arm["samples"] == PROBLEMS * K and arm["failures"] == 0
        low, high = arm["ci95"]
        assert low <= arm["mean_at_k"] <= high
        assert 0 <= arm["answer_line_rate"] <= 1 and len(arm["examples"]) == 3
    # The stub writes the format only for the lesson: the library arm gains, the placebo does not.
    assert lib["mean_at_k"] == pytest.approx(expected(True), abs=1e-6)
    assert base["mean_at_k"] == pla["mean_at_k"] == pytest.approx(expected(False), abs=1e-6)
    assert lib["answer_line_rate"] == pytest.approx(lib["mean_at_k"])  # every line the stub writes is right
    # Paired differences are library - baseline and library - placebo.
    assert out["diff"]["mean"] == pytest.approx(lib["mean_at_k"] - base["mean_at_k"], abs=1e-5)
    assert pla["diff"]["mean"] == pytest.approx(lib["mean_at_k"] - pla["mean_at_k"], abs=1e-5)
    for diff in (out["diff"], pla["diff"]):
        low, high = diff["ci95"]
        assert low <= diff["mean"] <= high and 0 <= diff["p_value"] <= 1
        assert diff["mean"] > 0
    # The placebo block: the library's shape with the lessons' words gone, of about their length.
    blocks = out["blocks"]
    assert all(text in blocks["library"] for text in LESSONS)
    assert not any(text in blocks["placebo"] for text in LESSONS) and "[E" in blocks["placebo"]
    assert abs(blocks["library_tokens"] - blocks["placebo_tokens"]) <= 2 * len(LESSONS)
    assert out["lessons"] == list(LESSONS) and out["wall_s"] > 0
