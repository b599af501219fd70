"""Benchmark: GRPO teaches a real model on a CPU.

SmolLM2-135M-Instruct (fetched and converted offline by :mod:`tfgrpo.model_files`) is trained
by parameter-mode GRPO (:func:`tfgrpo.params.train_params`, the same code as
``tfgrpo grpo``) on ``tasks/digit_sums.py``: the sum of two single digits answered on a line
``Answer: N`` after one worked example. The model starts in the middle of the reward range: it
often gets the sum or the format wrong.

Held-out accuracy is measured before and after training on the task's held-out items (never
trained on), as the policy being trained answers: ``--eval-samples`` samples per item at the
training temperature (1.0), the item's score their mean. The same items before and after, so
the measurements are paired; the 95 % interval of the gain is a bootstrap over the items'
paired differences. Tokens/s counts
generated plus trained tokens over the steps' generation and training time.

Progress (one line per phase, a bar on a terminal; reward by step; evaluations) goes to stderr; the last stdout line is one JSON object
with reward_by_step, heldout_before, heldout_after, ci95_diff, tokens_per_s, wall_s (and the
settings).

    python bench/real_grpo.py --json                      # measured: 35 min on a loaded 2-core machine
    python bench/real_grpo.py --steps 2 --heldout 8 --json  # a smoke run (the slow test)
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402  (the benchmark is a torch program)

from bench._progress import Progress  # noqa: E402
from tfgrpo.hooks import Hooks  # noqa: E402
from tfgrpo.model_files import smollm2_dir  # noqa: E402
from tfgrpo.params import train_params  # noqa: E402
from tfgrpo.params.config import make_config  # noqa: E402
from tfgrpo.params.generate import HFGenerator  # noqa: E402
from tfgrpo.params.metrics import format_step  # noqa: E402
from tfgrpo.params.model import load_policy  # noqa: E402
from tfgrpo.params.rollout import encode_prompt  # noqa: E402
from tfgrpo.rewards import combine, score_group  # noqa: E402
from tfgrpo.task_registry import load_task  # noqa: E402
from tfgrpo.training_free.stats import bootstrap_ci  # noqa: E402

TASK = f"{ROOT / 'tasks' / 'digit_sums.py'}:digit_sums"


def heldout_scores(
    model_path: str, task, n: int, *, samples: int, max_new_tokens: int, batch: int = 25, advance=lambda n=1: None
) -> list[float]:
    """Mean reward of ``samples`` responses (temperature 1) for each of the first ``n`` held-out
    items (``advance(k)`` after each chunk of k items)."""
    import asyncio

    model, tok = load_policy(model_path, dtype="float32")
    gen = HFGenerator(model, tok, max_new_tokens=max_new_tokens, temperature=1.0)
    items = task.eval_dataset[:n]
    scores: list[float] = []
    for s in range(0, len(items), batch):
        chunk = items[s : s + batch]
        out = gen.sample([encode_prompt(tok, task, x, 256) for x in chunk], samples)
        for item, responses in zip(chunk, out):
            texts = [tok.decode(r, skip_special_tokens=True) for r in responses]
            rows = asyncio.run(score_group(task.rewards, item, texts))
            scores.append(sum(combine(row, task.weights) or 0.0 for row in rows) / len(rows))
        advance(len(chunk))
    return scores


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--batch-size", type=int, default=4, help="prompts (groups) per step")
    ap.add_argument("--group-size", type=int, default=8)
    ap.add_argument("--lr", type=float, default=3e-5)
    ap.add_argument("--lora-r", type=int, default=0, help="0: train all weights")
    ap.add_argument("--loss", default="grpo")
    ap.add_argument("--max-new-tokens", type=int, default=8)
    ap.add_argument("--heldout", type=int, default=100, help="held-out items evaluated before and after")
    ap.add_argument("--eval-samples", type=int, default=4, help="samples per held-out item")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None, help="run directory (default: a temporary one)")
    ap.add_argument("--json", action="store_true", help="progress on stderr, the JSON line on stdout")
    args = ap.parse_args(argv)

    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    progress = Progress("real_grpo")
    with progress.phase("SmolLM2-135M-Instruct files (fetched and converted once)"):
        model_dir = str(smollm2_dir())
    task = load_task(TASK)
    n_heldout = min(args.heldout, len(task.eval_dataset))
    with progress.phase(
        f"held-out before: {n_heldout} items x {args.eval_samples} samples", total=n_heldout
    ) as advance:
        before = heldout_scores(
            model_dir,
            task,
            args.heldout,
            samples=args.eval_samples,
            max_new_tokens=args.max_new_tokens,
            advance=advance,
        )
    progress.note(f"held-out before: {sum(before) / len(before):.3f} ({len(before)} items)")

    with tempfile.TemporaryDirectory() as tmp:
        out = args.out or str(Path(tmp) / "run")
        cfg = make_config(
            task=TASK,
            model=model_dir,
            steps=args.steps,
            batch_size=args.batch_size,
            group_size=args.group_size,
            lr=args.lr,
            lora_r=args.lora_r,
            loss=args.loss,
            max_tokens=args.max_new_tokens,
            micro_batch_groups=args.batch_size,
            device="cpu",
            dtype="float32",
            generator="hf",
            seed=args.seed,
        )
        t_train = time.perf_counter()
        with progress.phase(f"GRPO training: {args.steps} steps (one line per step)"):
            trained = train_params(
                cfg, out=out, hooks=Hooks(on_step=lambda m: progress.note(format_step(m)), on_notice=progress.note)
            )
        train_s = time.perf_counter() - t_train
        steps = trained.steps
        with progress.phase(
            f"held-out after: {n_heldout} items x {args.eval_samples} samples", total=n_heldout
        ) as advance:
            after = heldout_scores(
                str(trained.final_model),
                task,
                args.heldout,
                samples=args.eval_samples,
                max_new_tokens=args.max_new_tokens,
                advance=advance,
            )
    progress.note(f"held-out after: {sum(after) / len(after):.3f}")

    diffs = [a - b for a, b in zip(after, before)]
    lo, hi = bootstrap_ci(diffs, seed=args.seed)
    tokens = sum(s["gen_tokens"] + s.get("train_tokens", 0) for s in steps)
    busy = sum(s["gen_s"] + s["train_s"] for s in steps)
    result = {
        "model": "SmolLM2-135M-Instruct",
        "task": "digit_sums",
        "steps": args.steps,
        "batch_size": args.batch_size,
        "group_size": args.group_size,
        "lr": args.lr,
        "lora_r": args.lora_r,
        "loss": args.loss,
        "threads": torch.get_num_threads(),
        "reward_by_step": [round(r, 4) if r is not None else None for r in trained.reward_by_step],
        "heldout_n": len(before),
        "eval_samples": args.eval_samples,
        "heldout_before": round(sum(before) / len(before), 4),
        "heldout_after": round(sum(after) / len(after), 4),
        "ci95_diff": [round(lo, 4), round(hi, 4)],
        "tokens_per_s": round(tokens / busy, 1) if busy else None,
        "gen_tokens_per_s": round(sum(s["gen_tokens"] for s in steps) / max(1e-9, sum(s["gen_s"] for s in steps)), 1),
        "params_changed": trained.params_changed,
        "train_s": round(train_s, 1),
        "wall_s": round(time.perf_counter() - t0, 1),
    }
    if not args.json:
        for k, v in result.items():
            print(f"{k:>18}: {v}", file=sys.stderr)
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
