"""The retrieval benchmark prints its JSON line; token counting follows the policy's tokenizer."""

import json
import subprocess
import sys
from pathlib import Path

from experience_store import estimate_tokens
from tfgrpo.training_free.rollout import token_counter

ROOT = Path(__file__).resolve().parent.parent


def test_retrieval_bench_prints_its_json_line():
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "retrieval.py"), "--n", "600", "--queries", "20", "--json"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["n"] == 600 and result["queries"] == 20
    assert 0 < result["p50_ms"] <= result["p95_ms"]
    assert result["embed_p50_ms"] < result["p50_ms"]
    assert 0 < result["tokens_retrieve"] <= 400 < result["tokens_all"]


def test_token_counter_uses_the_policy_tokenizer_where_known():
    text = "When adding fractions, rewrite both over a common denominator first."
    assert token_counter("sim")(text) == estimate_tokens(text)
    import litellm

    assert token_counter("openai/gpt-4o-mini")(text) == litellm.token_counter(model="openai/gpt-4o-mini", text=text)
    assert token_counter("no-such-provider/model-x")(text) > 0  # unknown: litellm's default or the estimate
