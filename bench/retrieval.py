"""Benchmark: top-k retrieval over a large experience library, and the tokens it saves.

A library of ``--n`` (10,000) synthetic lessons "When <condition>, <strategy>." built from a
vocabulary of problem kinds, conditions and strategies, indexed in Chroma with the offline
lexical embedding (or ``--embedding``, e.g. ``e5``). ``--queries`` problem statements are answered with
``retrieve`` injection (top ``--k`` within ``--budget`` tokens), through the same
``experience_store.Pack.inject`` an agent uses. We time each retrieval end to end (query
embedding + vector search + budget fitting and rendering) and report the query embedding
apart; tokens are counted with experience_store's estimate (about 4 characters a token).

Progress (one line per phase, a bar on a terminal) goes to stderr; the last stdout line is one
JSON object: n, k, p50_ms, p95_ms (end to end), embed_p50_ms,
search_p50_ms (without the embedding), tokens_all (the whole library rendered, as ``all``
mode would inject it), tokens_retrieve (mean injected in retrieve mode), saving, index_s.

    python bench/retrieval.py --json
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._progress import Progress  # noqa: E402
from experience_store import Experience, InjectionSettings, Pack, estimate_tokens, parse_spec  # noqa: E402

KINDS = [
    "fraction",
    "percentage",
    "triangle",
    "circle",
    "probability",
    "sequence",
    "modular",
    "polynomial",
    "inequality",
    "combinatorics",
    "logarithm",
    "matrix",
    "vector",
    "integral",
    "derivative",
    "graph",
    "prime",
    "divisor",
    "exponent",
    "ratio",
    "average",
    "speed",
    "interest",
    "angle",
    "area",
    "volume",
    "coordinate",
    "parabola",
    "recursion",
    "string",
    "array",
    "sorting",
    "database",
    "regex",
    "unit",
]
CONDITIONS = [
    "the numbers are large",
    "two quantities change together",
    "the answer must be an integer",
    "a quantity repeats",
    "the question asks for the smallest value",
    "there are several cases",
    "the input can be empty",
    "units are mixed",
    "the terms alternate in sign",
    "a figure is symmetric",
    "the problem gives a remainder",
    "the order does not matter",
    "values are given as percentages",
]
STRATEGIES = [
    "reduce to the simplest equivalent form first",
    "write the general term and check two values",
    "split into cases and add the results",
    "convert everything to one unit before computing",
    "use the complement and subtract from one",
    "look for an invariant that stays fixed",
    "estimate the magnitude to check the final answer",
    "draw the figure and label every length",
    "work modulo a small number to test candidates",
    "set up one equation per unknown",
]


def synthetic_library(n: int, seed: int = 0) -> list[Experience]:
    rng = random.Random(seed)
    seen: set[str] = set()
    out = []
    while len(out) < n:
        text = (
            f"When a {rng.choice(KINDS)} problem says {rng.choice(CONDITIONS)} and mentions "
            f"{rng.choice(KINDS)} {rng.randint(1, 10**6)}, {rng.choice(STRATEGIES)}."
        )
        if text not in seen:
            seen.add(text)
            out.append(Experience(id=f"E{len(out) + 1}", text=text))
    return out


def queries(count: int, seed: int = 1) -> list[str]:
    rng = random.Random(seed)
    return [
        f"A {rng.choice(KINDS)} question where {rng.choice(CONDITIONS)}: find the value for "
        f"{rng.choice(KINDS)} {rng.randint(1, 500)}."
        for _ in range(count)
    ]


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def _time_query(
    pack: Pack,
    index,
    q: str,
    args: argparse.Namespace,
    *,
    warm_up: bool,
    out: tuple[list[float], list[float], list[float], list[int]],
) -> None:
    """Time one query: embedding, search, and inject end to end; appended to ``out`` unless warming up."""
    total, embed, search, injected = out
    t = time.perf_counter()
    vec = index.embed([q], query=True)
    e = time.perf_counter()
    index.search_vectors(vec, args.k)
    s = time.perf_counter()
    inj = pack.inject(q, InjectionSettings(mode="retrieve", top_k=args.k, budget_tokens=args.budget))
    end = time.perf_counter()
    if warm_up:
        return
    embed.append((e - t) * 1000)
    search.append((s - e) * 1000)
    total.append((end - s) * 1000)  # inject: embed + search + fit + render, as an agent calls it
    injected.append(inj.tokens)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=10_000, help="lessons in the library")
    ap.add_argument("--queries", type=int, default=200, help="timed queries (after 10 warm-up)")
    ap.add_argument("--k", type=int, default=8, help="top-k")
    ap.add_argument("--budget", type=int, default=400, help="token budget of the injected block")
    ap.add_argument(
        "--embedding", default="lexical", help="embedding spec (lexical, e5, chroma-default, st:MODEL, litellm:MODEL)"
    )
    ap.add_argument("--json", action="store_true", help="last stdout line: one JSON object")
    args = ap.parse_args()

    progress = Progress("retrieval")
    with progress.phase(f"index {args.n} lessons ({args.embedding} embedding)"):
        t0 = time.perf_counter()
        pack = Pack.build(synthetic_library(args.n), [], name="bench", embedding=parse_spec(args.embedding))
        index = pack.index()
        index_s = time.perf_counter() - t0
        tokens_all = estimate_tokens(pack.render(settings=InjectionSettings(mode="all")))

    qs = queries(args.queries + 10)
    total, embed, search, injected = [], [], [], []
    with progress.phase(f"{len(qs)} queries (10 warm-up)", total=len(qs)) as advance:
        for i, q in enumerate(qs):
            _time_query(pack, index, q, args, warm_up=i < 10, out=(total, embed, search, injected))
            advance()

    result = {
        "n": args.n,
        "k": args.k,
        "budget": args.budget,
        "embedding": args.embedding,
        "queries": len(total),
        "p50_ms": round(pct(total, 0.5), 3),
        "p95_ms": round(pct(total, 0.95), 3),
        "embed_p50_ms": round(pct(embed, 0.5), 3),
        "search_p50_ms": round(pct(search, 0.5), 3),
        "search_p95_ms": round(pct(search, 0.95), 3),
        "tokens_all": tokens_all,
        "tokens_retrieve": round(statistics.mean(injected), 1),
        "saving": round(1 - statistics.mean(injected) / tokens_all, 4),
        "index_s": round(index_s, 2),
    }
    if not args.json:
        for key, value in result.items():
            print(f"{key:>16}: {value}", file=sys.stderr)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
