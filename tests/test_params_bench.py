"""The prefix-sharing benchmark runs and prints its JSON line."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

ROOT = Path(__file__).resolve().parent.parent
KEYS = {"prompt_len", "response_len", "group_size", "groups", "path", "auto", "naive_s", "packed_s", "speedup",
        "packed_speedup", "max_abs_logprob_diff", "peak_mem_naive_mb", "peak_mem_shared_mb",
        "gen_tokens_per_s_trainer", "gen_tokens_per_s_plain"}


def bench(*args):
    cmd = [sys.executable, str(ROOT / "bench" / "prefix_sharing.py"), "--json", *args]
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=True, timeout=300)
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_benchmark_small_shape_prints_json():
    r = bench("--small", "--prompt-len", "256", "--response-len", "16", "--group-size", "8", "--groups", "2",
              "--repeats", "2")
    assert KEYS <= r.keys()
    assert (r["prompt_len"], r["response_len"], r["group_size"], r["groups"]) == (256, 16, 8, 2)
    assert r["path"] == "sdpa" and r["auto"] == "packed"
    assert r["max_abs_logprob_diff"] < 1e-4
    assert r["naive_s"] > 0 and r["packed_s"] > 0  # timings at this toy size are overhead, not compute
    assert r["peak_mem_shared_mb"] < r["peak_mem_naive_mb"]
    assert r["gen_tokens_per_s_trainer"] > 0 and r["gen_tokens_per_s_plain"] > 0


def test_benchmark_short_prompts_keep_the_naive_forward():
    r = bench("--small", "--prompt-len", "4", "--response-len", "32", "--group-size", "4", "--repeats", "1",
              "--no-generate")
    assert r["auto"] == "naive" and r["speedup"] == 1.0 and r["max_abs_logprob_diff"] < 1e-4


CUDA = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


@pytest.mark.parametrize("args", [pytest.param(("--groups", "4"), marks=CUDA)])
def test_benchmark_cuda_four_groups_at_least_3x(args):
    r = bench("--device", "cuda", *args)
    assert r["path"] == "flex" and r["speedup"] >= 3.0, r


@pytest.mark.parametrize("args", [
    pytest.param(a, marks=CUDA) for a in [
        ("--groups", "1"),
        ("--groups", "4", "--group-size", "16"),
        ("--groups", "2", "--prompt-len", "2048", "--response-len", "512"),
        ("--groups", "4", "--prompt-len", "128", "--response-len", "256"),
        ("--groups", "4", "--prompt-len", "8", "--response-len", "256"),
    ]])
def test_benchmark_cuda_never_below_naive(args):
    """Whatever --prefix-sharing auto picks is never slower than the naive forward."""
    r = bench("--device", "cuda", "--no-generate", *args)
    assert r["speedup"] >= 1.0, r
