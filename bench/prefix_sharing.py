"""Benchmark: naive vs packed (shared-prefix) training forward (+ backward), and generation.

One process, one random-initialised Qwen2-architecture model, one micro-batch of ``--groups``
groups of G responses of R tokens after a P-token prompt, passed whole to the trainer's forward
(:func:`tfgrpo.params.prefix.group_logprobs`) as ``naive`` and as ``packed``. Both compute
per-token log-probs of the responses and back-propagate a loss through them; we time
``--repeats`` runs of each (after one warm-up each), alternating the two, and report each one's
best. ``path`` says which packed kernel ran (``flex`` block mask on CUDA, else ``sdpa`` dense
mask); ``auto`` is what ``--prefix-sharing auto`` picks for this micro-batch, and ``speedup``
is naive time over the time of that pick (1.0 where auto keeps the naive forward);
``packed_speedup`` is naive over packed whatever auto would pick.

Generation (skip with ``--no-generate``): G samples of R new tokens for each of the groups'
prompts, by the trainer's generator (each prompt prefilled once, its cache repeated G times)
and by a plain batched ``generate(num_return_sequences=G)`` of the same shapes; tokens/s of
each (every sequence runs R tokens: no EOS in a random model's sampling is forced).

Peak memory: on CUDA, ``torch.cuda.max_memory_allocated`` over one separate step of each
variant (reset before it). On CPU torch keeps no allocator statistics and the resident set
size does not shrink between variants (the allocator reuses freed pages), so we report what dominates the
peak of a training forward: the bytes of the distinct tensors saved for backward (activations,
attention inputs, logits), counted through ``torch.autograd.graph.saved_tensors_hooks`` over one
step. With ``--forward-only`` nothing is saved and the CPU figures are 0.

Progress (one line per phase, a bar on a terminal) goes to stderr; the last stdout line is one
JSON object: prompt_len, response_len, group_size, groups, path,
auto, naive_s, packed_s (also as shared_s), speedup, packed_speedup, token_bound,
max_abs_logprob_diff, peak_mem_naive_mb, peak_mem_shared_mb, gen_tokens_per_s_trainer,
gen_tokens_per_s_plain (and context).

    python bench/prefix_sharing.py --json                             # CPU default: P=1024 R=64 G=8
    python bench/prefix_sharing.py --device cuda --groups 4 --json    # 0.5B Qwen2 config in bf16
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402  (the benchmark is a torch program; tfgrpo itself imports it lazily)

from bench._progress import Progress  # noqa: E402
from tfgrpo.params.model import random_qwen2  # noqa: E402
from tfgrpo.params.generate import HFGenerator  # noqa: E402
from tfgrpo.params.prefix import GroupTokens, choose_mode, flex_available, group_logprobs, token_counts  # noqa: E402

# CPU: small enough to finish in about a minute on 2 cores, wide enough to be compute-bound.
CPU_MODEL = dict(
    hidden_size=512,
    intermediate_size=2048,
    num_hidden_layers=4,
    num_attention_heads=8,
    num_key_value_heads=2,
    vocab_size=2048,
)
# CUDA: the Qwen2.5-0.5B shape, random weights.
CUDA_MODEL = dict(
    hidden_size=896,
    intermediate_size=4864,
    num_hidden_layers=24,
    num_attention_heads=14,
    num_key_value_heads=2,
    vocab_size=151936,
)


def saved_for_backward_mb(model, batch, fn) -> float:
    """MB of distinct tensor storages autograd saves for backward over one training step."""
    seen: dict[int, int] = {}

    def pack(t):
        st = t.untyped_storage()
        seen[st.data_ptr()] = max(seen.get(st.data_ptr(), 0), st.nbytes())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        step(model, batch, fn, backward=True)
    return sum(seen.values()) / 2**20


def make_batch(groups: int, p: int, r: int, g: int, vocab: int, device, seed: int) -> list[GroupTokens]:
    gen = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(groups):
        prompt = torch.randint(0, vocab, (p,), generator=gen)
        responses = torch.randint(0, vocab, (g, r), generator=gen)
        mask = torch.ones(g, r, dtype=torch.long)
        out.append(GroupTokens(prompt.to(device), responses.to(device), mask.to(device)))
    return out


def step(model, batch, mode, backward: bool):
    """One training forward (+ backward) of the whole micro-batch, as the trainer runs it."""
    model.zero_grad(set_to_none=True)
    logps = group_logprobs(model, batch, mode=mode)
    if backward:
        sum((lp * g.mask).sum() / g.mask.sum() for lp, g in zip(logps, batch)).backward()
    return [lp.detach().float() for lp in logps]


def generation(model, batch, new_tokens: int, device: str, repeats: int, advance=lambda n=1: None) -> dict:
    """Generated tokens/s of the trainer's generator and of a plain batched generate
    (``advance`` after each of the 2 x (1 + repeats) generations)."""
    from types import SimpleNamespace

    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    tok = SimpleNamespace(pad_token_id=0, eos_token_id=None)  # no EOS: every sequence runs new_tokens
    prompts = [g.prompt.tolist() for g in batch]
    n = batch[0].responses.shape[0]
    out = {}
    for name, shared in (("trainer", True), ("plain", False)):
        gen = HFGenerator(model, tok, max_new_tokens=new_tokens, temperature=1.0, shared_prefill=shared)
        gen.sample(prompts, n)  # warm-up
        advance()
        best = float("inf")
        for _ in range(repeats):
            sync()
            t0 = time.perf_counter()
            gen.sample(prompts, n)
            sync()
            best = min(best, time.perf_counter() - t0)
            advance()
        out[f"gen_tokens_per_s_{name}"] = round(len(prompts) * n * new_tokens / best, 1)
    return out


def measure(model, batch, fns, *, backward: bool, repeats: int, device: str, advance=lambda n=1: None):
    """Best time of each forward mode in ``fns`` over ``repeats`` rounds. The modes alternate
    within each round, so a load change on a shared machine hits both alike. ``advance`` after
    each of the len(fns) x (2 + repeats) steps (warm-up, timed, memory)."""
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    for fn in fns:
        step(model, batch, fn, backward)  # warm-up
        advance()
    best = [float("inf")] * len(fns)
    logps = [None] * len(fns)
    for _ in range(repeats):
        for i, fn in enumerate(fns):
            sync()
            t0 = time.perf_counter()
            logps[i] = step(model, batch, fn, backward)
            sync()
            best[i] = min(best[i], time.perf_counter() - t0)
            advance()
    mems = []
    for fn in fns:
        if device == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
            step(model, batch, fn, backward)
            sync()
            mems.append(torch.cuda.max_memory_allocated() / 2**20)
        else:
            mems.append(saved_for_backward_mb(model, batch, fn) if backward else 0.0)
        advance()
    return best, mems, logps


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--prompt-len", type=int, default=1024)
    ap.add_argument("--response-len", type=int, default=64)
    ap.add_argument("--group-size", type=int, default=8)
    ap.add_argument("--groups", type=int, default=1, help="groups in the batch")
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--forward-only", action="store_true", help="time the no-grad forward only")
    ap.add_argument("--small", action="store_true", help="a much smaller model (for tests)")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    ap.add_argument("--no-generate", action="store_true", help="skip the generation timing")
    ap.add_argument("--json", action="store_true", help="print only the JSON line")
    args = ap.parse_args(argv)

    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("error: --device cuda asked but no CUDA GPU is visible")
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    shape = dict(CUDA_MODEL if args.device == "cuda" else CPU_MODEL)
    if args.small:
        shape.update(
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            vocab_size=256,
        )
    dtype = torch.bfloat16 if args.device == "cuda" else torch.float32
    progress = Progress("prefix_sharing")
    with progress.phase(f"random model and batch on {args.device}"):
        model = random_qwen2(max_positions=args.prompt_len + args.response_len + 8, **shape).to(args.device, dtype)
        model.train()
        batch = make_batch(
            args.groups, args.prompt_len, args.response_len, args.group_size, shape["vocab_size"], args.device, seed=1
        )
    backward = not args.forward_only
    ctx = torch.enable_grad() if backward else torch.no_grad()
    auto = choose_mode("auto", batch)
    label = f"training {'forward + backward' if backward else 'forward'}, naive and packed (warm-up, {args.repeats} timed, memory)"
    with ctx, progress.phase(label, total=2 * (2 + args.repeats)) as advance:
        (naive_s, packed_s), (naive_mb, packed_mb), (naive_lp, packed_lp) = measure(
            model,
            batch,
            ["naive", "packed"],
            backward=backward,
            repeats=args.repeats,
            device=args.device,
            advance=advance,
        )
    diff = max(float((a - b).abs().max()) for a, b in zip(naive_lp, packed_lp))
    auto_s = packed_s if auto == "packed" else naive_s
    n_naive, n_packed = token_counts(batch)
    result = {
        "prompt_len": args.prompt_len,
        "response_len": args.response_len,
        "group_size": args.group_size,
        "groups": args.groups,
        "device": args.device,
        "dtype": str(dtype).removeprefix("torch."),
        "params_m": round(sum(p.numel() for p in model.parameters()) / 1e6, 2),
        "threads": torch.get_num_threads(),
        "backward": backward,
        "path": "flex" if flex_available(model, batch[0].prompt.device) else "sdpa",
        "auto": auto,
        "naive_s": round(naive_s, 4),
        "packed_s": round(packed_s, 4),
        "shared_s": round(packed_s, 4),
        "speedup": round(naive_s / auto_s, 2),
        "packed_speedup": round(naive_s / packed_s, 2),
        "token_bound": round(n_naive / n_packed, 2),
        "max_abs_logprob_diff": diff,
        "peak_mem_naive_mb": round(naive_mb, 1),
        "peak_mem_shared_mb": round(packed_mb, 1),
    }
    if not args.no_generate:
        model.eval()
        with progress.phase(
            f"generation, trainer's and plain (warm-up, {args.repeats} timed)", total=2 * (1 + args.repeats)
        ) as advance:
            result.update(generation(model, batch, args.response_len, args.device, args.repeats, advance))
    if not args.json:
        for k, v in result.items():
            print(f"{k:>22}: {v}", file=sys.stderr)
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
