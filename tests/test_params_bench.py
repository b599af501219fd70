"""The prefix-sharing benchmark runs and prints its JSON line, whose numbers agree with each
other as the code guarantees (no timed thresholds: timings only enter through their ratios)."""

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

ROOT = Path(__file__).resolve().parent.parent
KEYS = {
    "prompt_len",
    "response_len",
    "group_size",
    "groups",
    "path",
    "auto",
    "naive_s",
    "packed_s",
    "speedup",
    "packed_speedup",
    "max_abs_logprob_diff",
    "peak_mem_naive_mb",
    "peak_mem_shared_mb",
    "gen_tokens_per_s_trainer",
    "gen_tokens_per_s_plain",
}


def bench(*args, stderr: list[str] | None = None):
    cmd = [sys.executable, str(ROOT / "bench" / "prefix_sharing.py"), "--json", *args]
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=True, timeout=300)
    if stderr is not None:
        stderr.extend(out.stderr.splitlines())
    return json.loads(out.stdout.strip().splitlines()[-1])


def check_consistent(r: dict) -> None:
    """What the benchmark's numbers must satisfy whatever the machine's speed."""
    p, resp, g, n = r["prompt_len"], r["response_len"], r["group_size"], r["groups"]
    # tokens each forward pushes through the model: G copies of prompt + response, or the prompt once
    assert r["token_bound"] == round(n * g * (p + resp) / (n * (p + g * resp)), 2)
    # both arms computed the same log-probs of the same tokens
    assert r["max_abs_logprob_diff"] < 1e-4
    # the ratios are the printed times' ratios (up to the times' rounding to 4 decimals)
    exact = r["naive_s"] / r["packed_s"]
    assert abs(r["packed_speedup"] - exact) <= 0.005 + exact * 5e-5 * (1 / r["naive_s"] + 1 / r["packed_s"]) + 1e-9
    assert r["speedup"] == (1.0 if r["auto"] == "naive" else r["packed_speedup"])
    assert r["shared_s"] == r["packed_s"]


@pytest.mark.slow
def test_benchmark_small_shape_prints_json():
    r = bench(
        "--small", "--prompt-len", "256", "--response-len", "16", "--group-size", "8", "--groups", "2", "--repeats", "2"
    )
    assert KEYS <= r.keys()
    assert (r["prompt_len"], r["response_len"], r["group_size"], r["groups"]) == (256, 16, 8, 2)
    assert r["path"] == "sdpa" and r["auto"] == "packed"
    check_consistent(r)
    assert r["peak_mem_shared_mb"] < r["peak_mem_naive_mb"]
    assert r["gen_tokens_per_s_trainer"] > 0 and r["gen_tokens_per_s_plain"] > 0


def test_benchmark_short_prompts_keep_the_naive_forward():
    stderr: list[str] = []
    r = bench(
        "--small",
        "--prompt-len",
        "4",
        "--response-len",
        "32",
        "--group-size",
        "4",
        "--repeats",
        "1",
        "--no-generate",
        stderr=stderr,
    )
    assert r["auto"] == "naive" and r["speedup"] == 1.0
    check_consistent(r)
    assert r["token_bound"] == 1.09  # 4 x 36 tokens naive, 4 + 4 x 32 packed
    assert "gen_tokens_per_s_trainer" not in r  # --no-generate
    # progress on stderr: each phase's end with its time, generation skipped
    done = [m.group(1) for line in stderr if (m := re.fullmatch(r"\[prefix_sharing\] (.+): done in \d+\.\d s", line))]
    assert done == [
        "random model and batch on cpu",
        "training forward + backward, naive and packed (warm-up, 1 timed, memory)",
    ], stderr


CUDA = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


@pytest.mark.parametrize("args", [pytest.param(("--groups", "4"), marks=CUDA)])
def test_benchmark_cuda_four_groups_at_least_3x(args):
    r = bench("--device", "cuda", *args)
    assert r["path"] == "flex" and r["speedup"] >= 3.0, r
    check_consistent(r)


@pytest.mark.parametrize(
    "args",
    [
        pytest.param(a, marks=CUDA)
        for a in [
            ("--groups", "1"),
            ("--groups", "4", "--group-size", "16"),
            ("--groups", "2", "--prompt-len", "2048", "--response-len", "512"),
            ("--groups", "4", "--prompt-len", "128", "--response-len", "256"),
            ("--groups", "4", "--prompt-len", "8", "--response-len", "256"),
        ]
    ],
)
def test_benchmark_cuda_never_below_naive(args):
    """Whatever --prefix-sharing auto picks is never slower than the naive forward."""
    r = bench("--device", "cuda", "--no-generate", *args)
    assert r["speedup"] >= 1.0, r
    check_consistent(r)
