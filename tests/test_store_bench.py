"""The retrieval benchmark prints its JSON line; token counting follows the policy's tokenizer."""

import io
import json
import re
import subprocess
import sys
from pathlib import Path

from experience_store import estimate_tokens
from tfgrpo.llm.client import LLMClient
from tfgrpo.llm.providers import Capabilities

ROOT = Path(__file__).resolve().parent.parent


def test_retrieval_bench_prints_its_json_line():
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "retrieval.py"), "--n", "600", "--queries", "20", "--json"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["n"] == 600 and result["queries"] == 20
    assert 0 < result["p50_ms"] <= result["p95_ms"]
    assert result["embed_p50_ms"] < result["p50_ms"]
    assert 0 < result["tokens_retrieve"] <= 400 < result["tokens_all"]
    # progress, one line per phase start and end, went to stderr (not a terminal here), and nothing
    # but the JSON object to stdout
    assert proc.stdout.strip().count("\n") == 0
    lines = proc.stderr.splitlines()
    for phase in ("index 600 lessons (lexical embedding)", "30 queries (10 warm-up)"):
        assert f"[retrieval] {phase} ..." in lines
        assert any(re.fullmatch(rf"\[retrieval\] {re.escape(phase)}: done in \d+\.\d s", line) for line in lines), lines


def test_bench_progress_counts_and_times_each_phase():
    sys.path.insert(0, str(ROOT))
    from bench._progress import Progress

    out = io.StringIO()
    progress = Progress("b", stream=out, every_s=0)  # every_s=0: a count line at every advance
    with progress.phase("load"):
        pass
    with progress.phase("items", total=3) as advance:
        advance()
        advance(2)
    progress.note("result 1.5")
    lines = [re.sub(r"\d+\.\d s|\(\d+ s\)", "T", line) for line in out.getvalue().splitlines()]
    assert lines == [
        "[b] load ...",
        "[b] load: done in T",
        "[b] items ...",
        "[b] items: 1/3 T",
        "[b] items: 3/3 T",
        "[b] items: done in T",
        "[b] result 1.5",
    ]


def test_token_counter_uses_the_policy_tokenizer_where_known():
    text = "When adding fractions, rewrite both over a common denominator first."
    assert LLMClient(model="openai/x", capabilities=Capabilities(tokenizer=False)).count_tokens(
        text
    ) == estimate_tokens(text)
    import litellm

    counted = LLMClient(model="openai/gpt-4o-mini").count_tokens(text)
    assert counted == litellm.token_counter(model="openai/gpt-4o-mini", text=text)
    assert (
        LLMClient(model="no-such-provider/model-x").count_tokens(text) > 0
    )  # unknown: litellm's default or the estimate
