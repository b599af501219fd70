"""The prefix-sharing benchmark runs and prints its JSON line."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

ROOT = Path(__file__).resolve().parent.parent
KEYS = {"prompt_len", "response_len", "group_size", "naive_s", "shared_s", "speedup", "max_abs_logprob_diff",
        "peak_mem_naive_mb", "peak_mem_shared_mb"}


def bench(*args):
    cmd = [sys.executable, str(ROOT / "bench" / "prefix_sharing.py"), "--json", *args]
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=True, timeout=300)
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_benchmark_small_shape_prints_json():
    r = bench("--small", "--prompt-len", "256", "--response-len", "16", "--group-size", "8", "--repeats", "2")
    assert KEYS <= r.keys()
    assert (r["prompt_len"], r["response_len"], r["group_size"]) == (256, 16, 8)
    assert r["max_abs_logprob_diff"] < 1e-4
    assert r["naive_s"] > 0 and r["shared_s"] > 0  # timings at this toy size are overhead, not compute
    assert r["peak_mem_shared_mb"] < r["peak_mem_naive_mb"]


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_benchmark_cuda_default_shape():
    r = bench("--device", "cuda")
    assert r["speedup"] >= 3.0, r
