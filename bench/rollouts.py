"""Benchmark: rollout throughput of the client against a server of known speed.

A local OpenAI-compatible stub server (``tests/openai_stub.py``, its own process) answers every
request after a fixed ``--latency`` (200 ms) and computes at most ``--concurrency`` requests at
once; the client runs with the same concurrency. The server alone then bounds throughput at
``concurrency * group_size / latency`` rollouts per second (one request carries a group's G
choices). We run ``--groups`` groups of the ``demo`` task the way a training step does: the
policy's G answers (``PromptPolicy.sample_group``, then ``Scorer.score``), then each rollout recorded as a
``RolloutRecord`` line in ``rollouts.jsonl``, and report what fraction of the bound we reach.

``overhead_ms`` is the client's own CPU time per rollout (request building, litellm, response
parsing, reward, record), measured with ``time.process_time`` in the client process; the
server runs in another process, so none of its work is counted. ``--ignore-n`` makes the server
answer one choice per request (as ``transformers serve`` does); the bound is then
``concurrency / latency``.

The client sends OpenAI-compatible requests straight over HTTP (``tfgrpo.llm.direct``), as it
does for ``hosted_vllm/`` models and ``openai/`` ones on a local ``api_base``. For comparison, in the
same run, the same groups go through litellm (``transport="litellm"``, the path of every other
provider: ``litellm_ratio``, ``litellm_overhead_ms``), and the same requests are sent by a bare
HTTP client (httpx: no tfgrpo, no litellm) at the same concurrency: ``bare_client_rps`` is what
this machine and server allow any client, so ``ratio`` well below ``bare_client_ratio`` is the
client's own cost, not the server's.

The last stdout line is one JSON object: bound_rps, achieved_rps, ratio, overhead_ms,
rollouts, rollouts_ok, requests, wall_s, latency_s, concurrency, group_size,
litellm_achieved_rps, litellm_ratio, litellm_overhead_ms, bare_client_rps, bare_client_ratio.
Progress goes to stderr.

    python bench/rollouts.py --json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

from bench._progress import Progress  # noqa: E402
from tfgrpo.llm import LLMClient, RetryPolicy  # noqa: E402
from tfgrpo.records import RolloutRecord  # noqa: E402
from tfgrpo.rundir import ROLLOUTS, RunDir  # noqa: E402
from tfgrpo.task_registry import load_task  # noqa: E402
from tfgrpo.training_free.config import SamplingConfig  # noqa: E402
from tfgrpo.training_free.prompting import Prompts  # noqa: E402
from tfgrpo.training_free.policy import PromptPolicy  # noqa: E402
from tfgrpo.training_free.rollout import Scorer, stable_seed  # noqa: E402


def start_server(latency: float, slots: int, ignore_n: bool) -> tuple[subprocess.Popen[str], str]:
    cmd = [sys.executable, str(ROOT / "tests" / "openai_stub.py"), "--latency", str(latency), "--slots", str(slots)]
    proc = subprocess.Popen(cmd + (["--ignore-n"] if ignore_n else []), stdout=subprocess.PIPE, text=True)
    url = (proc.stdout.readline() if proc.stdout else "").strip()
    if not url.startswith("http://127.0.0.1:"):
        proc.kill()
        raise SystemExit(f"stub server did not start: {url!r}")
    return proc, url


async def run(
    args: argparse.Namespace, url: str, out_dir: Path, transport: str = "auto", advance=None
) -> dict[str, float]:
    task = load_task("demo")
    prompts = Prompts()
    client = LLMClient(model="openai/stub", api_base=url, api_key="x", concurrency=args.concurrency, timeout=30,
                       retry=RetryPolicy(max_retries=2, base_delay=0.05), supports_n=True, transport=transport)  # fmt: skip
    run_dir = RunDir(out_dir)
    sampling = SamplingConfig(group_size=args.group_size, temperature=0.7, max_tokens=64)
    samples = [task.dataset[i % len(task.dataset)] for i in range(args.groups + 1)]
    policy, scorer = PromptPolicy(client, task, prompts, sampling), Scorer(task)

    async def one(k: int) -> int:
        sample = samples[k]
        g = await scorer.score(await policy.sample_group(sample, "", stable_seed("bench", k)))
        if advance is not None and k:
            advance()
        run_dir.append(ROLLOUTS, [
            RolloutRecord(step=1, epoch=1, rollout_id=f"s1-{sample.id}-{k}-{j}", sample_id=sample.id, index=j,
                          text=c.text, error=c.error, finish_reason=c.finish_reason, cached=c.cached,
                          rewards=g.rewards[j], reward=g.combined[j], advantage=0.0)
            for j, c in enumerate(g.completions)
        ])  # fmt: skip
        return sum(1 for c in g.completions if c.ok)

    await one(0)  # warm-up: imports, the first connection; not timed
    calls0 = client.usage.roles["policy"].calls
    cpu0, t0 = time.process_time(), time.perf_counter()
    ok = sum(await asyncio.gather(*(one(k) for k in range(1, args.groups + 1))))
    wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    rollouts = args.groups * args.group_size
    per_request = 1 if args.ignore_n else args.group_size
    bound = args.concurrency * per_request / args.latency
    achieved = rollouts / wall
    return {
        "bound_rps": round(bound, 1), "achieved_rps": round(achieved, 1), "ratio": round(achieved / bound, 3),
        "overhead_ms": round(1000 * cpu / rollouts, 3), "rollouts": rollouts, "rollouts_ok": ok,
        "requests": client.usage.roles["policy"].calls - calls0, "wall_s": round(wall, 2),
        "latency_s": args.latency, "concurrency": args.concurrency, "group_size": args.group_size,
    }  # fmt: skip


async def bare(args: argparse.Namespace, url: str) -> float:
    """Rollouts per second of a bare HTTP client (httpx, no tfgrpo, no litellm) sending the same
    requests at the same concurrency: what this machine and server allow any client."""
    import httpx

    per_request = 1 if args.ignore_n else args.group_size
    limit = asyncio.Semaphore(args.concurrency)
    async with httpx.AsyncClient(timeout=30, limits=httpx.Limits(max_connections=args.concurrency)) as http:

        async def one(k: int) -> int:
            async with limit:
                body = {"model": "stub", "messages": [{"role": "user", "content": f"q{k}"}], "n": per_request}
                return len((await http.post(url + "/chat/completions", json=body)).json()["choices"])

        await one(0)
        t0 = time.perf_counter()
        got = sum(await asyncio.gather(*(one(k) for k in range(1, args.groups * args.group_size // per_request + 1))))
        return got / (time.perf_counter() - t0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--latency", type=float, default=0.2, help="server seconds per request")
    parser.add_argument(
        "--concurrency", type=int, default=16, help="requests the server computes at once = client concurrency"
    )
    parser.add_argument("--group-size", type=int, default=4)
    parser.add_argument("--groups", type=int, default=400)
    parser.add_argument("--ignore-n", action="store_true", help="the server answers one choice per request")
    parser.add_argument("--json", action="store_true", help="only the JSON line")
    args = parser.parse_args()
    proc, url = start_server(args.latency, args.concurrency, args.ignore_n)
    progress = Progress("rollouts")
    progress.note(
        f"{args.groups} groups of {args.group_size}, {args.concurrency} at once, {args.latency:g}s per request"
    )
    try:
        with progress.phase("[1/3] tfgrpo client, straight HTTP", total=args.groups) as advance, \
                tempfile.TemporaryDirectory() as tmp:  # fmt: skip
            result = asyncio.run(run(args, url, Path(tmp), advance=advance))
        progress.note(f"{result['achieved_rps']} rollouts/s ({result['ratio']:.0%} of the bound)")
        with (
            progress.phase("[2/3] tfgrpo client through litellm", total=args.groups) as advance,
            tempfile.TemporaryDirectory() as tmp,
        ):
            via = asyncio.run(run(args, url, Path(tmp), transport="litellm", advance=advance))
        progress.note(f"{via['achieved_rps']} rollouts/s ({via['ratio']:.0%} of the bound)")
        result.update(
            litellm_achieved_rps=via["achieved_rps"], litellm_ratio=via["ratio"], litellm_overhead_ms=via["overhead_ms"]
        )
        with progress.phase("[3/3] bare HTTP client (httpx), the same requests"):
            bare_rps = asyncio.run(bare(args, url))
        result["bare_client_rps"] = round(bare_rps, 1)
        result["bare_client_ratio"] = round(bare_rps / result["bound_rps"], 3)
    finally:
        proc.terminate()
        proc.wait(10)
    if not args.json:
        print(f"{result['achieved_rps']} rollouts/s of a bound of {result['bound_rps']} ({result['ratio']:.0%}); "
              f"client CPU {result['overhead_ms']} ms per rollout; through litellm {result['litellm_achieved_rps']} "
              f"({result['litellm_ratio']:.0%}, {result['litellm_overhead_ms']} ms); a bare HTTP client reaches "
              f"{result['bare_client_rps']} ({result['bare_client_ratio']:.0%})")  # fmt: skip
    print(json.dumps(result))


if __name__ == "__main__":
    main()
