"""bench/real_grpo.py end to end for a few steps: SmolLM2-135M-Instruct loaded from the
converted GGUF, prompted through its chat template, sampled, updated by GRPO, checkpointed,
exported and evaluated again. (The learning itself is the benchmark's, at its full length.)"""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_real_grpo_runs_a_few_steps(tmp_path):
    pytest.importorskip("torch")
    pytest.importorskip("gguf")
    from tfgrpo import model_files
    from tfgrpo.errors import UserError

    try:
        model_files.smollm2_dir()
    except UserError as e:
        pytest.skip(f"SmolLM2 package not available offline: {e}")
    run = tmp_path / "run"
    # the benchmark's own batch shape and seed: its first step has groups with differing rewards,
    # so the weights must move (a batch of all-equal groups would leave them, rightly, unchanged)
    cmd = [
        sys.executable,
        str(ROOT / "bench" / "real_grpo.py"),
        "--steps",
        "2",
        "--heldout",
        "4",
        "--eval-samples",
        "2",
        "--out",
        str(run),
        "--json",
    ]
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=1500)
    assert out.returncode == 0, out.stderr[-2000:]
    r = json.loads(out.stdout.strip().splitlines()[-1])
    assert {"reward_by_step", "heldout_before", "heldout_after", "ci95_diff", "tokens_per_s"} <= r.keys()
    assert len(r["reward_by_step"]) == 2 and all(x is None or 0 <= x <= 1 for x in r["reward_by_step"])
    assert 0 <= r["heldout_before"] <= 1 and 0 <= r["heldout_after"] <= 1
    lo, hi = r["ci95_diff"]
    assert lo <= r["heldout_after"] - r["heldout_before"] <= hi
    assert r["tokens_per_s"] > 0 and r["params_changed"]
    from tfgrpo.params.checkpoint import checkpoint_dir
    from tfgrpo.rundir import STEPS, RunDir

    assert (checkpoint_dir(run, 2) / "model.safetensors").is_file()
    final = RunDir(run).final_model_path
    assert (final / "config.json").is_file() and (final / "tokenizer.json").is_file()
    steps = RunDir(run).read(STEPS)
    assert [s["step"] for s in steps] == [1, 2] and all(s["gen_tokens"] > 0 for s in steps)


def test_digit_sums_task_scores_the_answer_line_and_holds_items_out():
    import asyncio

    from tfgrpo.rewards import score_group
    from tfgrpo.task_registry import load_task

    task = load_task("digit_sums")
    assert len(task.eval_dataset) == 200 and len(task.dataset) == 200
    assert not {s.id for s in task.dataset} & {s.id for s in task.eval_dataset}
    sample = next(s for s in task.eval_dataset if s.answer == 13)
    assert sample.messages[-1]["role"] == "user" and sample.messages[1]["content"] == "Answer: 8"
    texts = ["Answer: 13", "Answer:13.", "The answer is 13", "Answer: 12\nAnswer: 13", ""]
    rows = asyncio.run(score_group(task.rewards, sample, texts))
    assert [r[0] for r in rows] == [1.0, 1.0, 0.0, 0.0, 0.0]
