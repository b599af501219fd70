"""Benchmark: external-agent rollouts through the recording, injecting endpoint (the gateway).

A local OpenAI-compatible stub server (``tests/openai_stub.py``, its own process) answers each
request after a fixed ``--latency`` and computes at most ``--concurrency`` at once. Three
measurements, side by side in one run:

1. ``overhead_ms``: what the gateway adds to one model call. A zero-latency stub; the same
   ``--calls`` sequential calls sent by a bare HTTP client (aiohttp) once through a rollout's
   gateway URL (gateway, injection, tfgrpo's client, recording) and once straight to the stub
   through tfgrpo's client alone; the difference per call. Both in this process.
2. ``ratio``: rollouts per second against the bound. ``--rollouts`` rollouts of a Python-callable
   agent that makes one call each, at most ``--concurrency`` at once (``--agent-processes``),
   against a stub of ``--latency`` s and as many slots: the bound is ``concurrency / latency``.
3. ``process_start_ms``: the cost of an agent *program*: the same single-call agent as a
   command (``python -c`` with urllib), ``--commands`` rollouts one at a time, minus the
   measured time of its call. Reported apart, since it is the agent's own start-up.

The last stdout line is one JSON object: overhead_ms, gateway_call_ms, direct_call_ms,
bound_rps, achieved_rps, ratio, rollouts, rollouts_ok, process_start_ms, command_rollout_ms,
latency_s, concurrency. Progress goes to stderr.

    python bench/agent_rollouts.py --json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

from bench._progress import Progress  # noqa: E402
from bench.rollouts import start_server  # noqa: E402  (the same stub process as the rollouts benchmark)
from tfgrpo.llm import LLMClient, RetryPolicy  # noqa: E402
from tfgrpo.task_registry import Sample  # noqa: E402
from tfgrpo.training_free.config import AgentConfig, SamplingConfig  # noqa: E402
from tfgrpo.training_free.external import agent_policy  # noqa: E402
from tfgrpo.training_free.gateway import Gateway  # noqa: E402

MESSAGES = [{"role": "user", "content": "What is 2 + 2?"}]
COMMAND_AGENT = (
    "import json, os, sys, urllib.request; sys.stdin.read(); "
    "body = json.dumps({'model': 'p', 'messages': [{'role': 'user', 'content': 'What is 2 + 2?'}]}).encode(); "
    "req = urllib.request.Request(os.environ['OPENAI_BASE_URL'] + '/chat/completions', body, "
    "{'Content-Type': 'application/json'}); "
    "print(json.load(urllib.request.urlopen(req))['choices'][0]['message']['content'])"
)


def client(url: str, concurrency: int) -> LLMClient:
    return LLMClient(model="openai/stub", api_base=url, api_key="x", concurrency=concurrency, timeout=30,
                     retry=RetryPolicy(max_retries=0), supports_n=True)  # fmt: skip


async def overhead(url: str, calls: int) -> dict[str, float]:
    import aiohttp

    llm = client(url, 4)
    sampling = SamplingConfig(group_size=1, temperature=0.0, agent=AgentConfig(max_turns=10 * calls + 10))
    gateway = Gateway(llm, sampling)
    await gateway.start()
    try:
        session = gateway.open("[E1] When adding, carry the tens.", 0, sampling.agent)
        body = {"model": "p", "messages": MESSAGES, "temperature": 0.0}
        async with aiohttp.ClientSession() as http:

            async def through_gateway(i: int) -> None:
                body["messages"] = [{"role": "user", "content": f"What is {i} + 2?"}]
                async with http.post(f"{session.base_url}/chat/completions", json=body) as r:
                    await r.read()

            for i in range(20):  # warm up both paths
                await through_gateway(-i - 1)
                await llm.sample([{"role": "user", "content": f"warm {i}"}], temperature=0.0)
            t0 = time.perf_counter()
            for i in range(calls):
                await through_gateway(i)
            gateway_s = (time.perf_counter() - t0) / calls
            t0 = time.perf_counter()
            for i in range(calls):
                await llm.sample([{"role": "user", "content": f"What is {i} + 2? direct"}], temperature=0.0)
            direct_s = (time.perf_counter() - t0) / calls
        assert len(session.calls) == calls + 20
    finally:
        await gateway.close()
    return {"gateway_call_ms": round(1000 * gateway_s, 3), "direct_call_ms": round(1000 * direct_s, 3),
            "overhead_ms": round(1000 * (gateway_s - direct_s), 3)}  # fmt: skip


async def throughput(url: str, rollouts: int, concurrency: int, advance) -> tuple[int, float]:
    async def agent(sample: Sample, llm) -> str:
        r = await llm.client.chat.completions.create(model="p", messages=[{"role": "user", "content": sample.prompt}])
        advance()
        return r.choices[0].message.content

    sampling = SamplingConfig(group_size=1, agent=AgentConfig(processes=concurrency))
    async with agent_policy(agent, client(url, concurrency), sampling) as policy:
        await policy.sample_group(Sample(id="warm", prompt="warm"), "", 0)
        t0 = time.perf_counter()
        groups = await asyncio.gather(*(policy.sample_group(Sample(id=str(k), prompt=f"q{k}"), "[E1] x", k)
                                        for k in range(rollouts)))  # fmt: skip
        wall = time.perf_counter() - t0
    return sum(c.ok for g in groups for c in g.completions), wall


async def commands(url: str, n: int, advance) -> float:
    sampling = SamplingConfig(group_size=1, agent=AgentConfig(processes=1))
    async with agent_policy(f'{sys.executable} -c "{COMMAND_AGENT}"', client(url, 1), sampling) as policy:
        await policy.sample_group(Sample(id="warm", prompt="warm"), "", 0)
        t0 = time.perf_counter()
        for k in range(n):
            out = await policy.sample_group(Sample(id=str(k), prompt="q"), "", k)
            assert out.completions[0].ok, out.completions[0].error
            advance()
        return (time.perf_counter() - t0) / n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--latency", type=float, default=0.2, help="stub seconds per request (throughput run)")
    parser.add_argument("--concurrency", type=int, default=16, help="agents at once = stub slots")
    parser.add_argument("--rollouts", type=int, default=800)
    parser.add_argument("--calls", type=int, default=300, help="sequential calls of the overhead run")
    parser.add_argument("--commands", type=int, default=20, help="command-agent rollouts of the start-up run")
    parser.add_argument("--json", action="store_true", help="only the JSON line")
    args = parser.parse_args()
    progress = Progress("agent rollouts")
    fast, fast_url = start_server(0.0, 64, ignore_n=False)
    slow, slow_url = start_server(args.latency, args.concurrency, ignore_n=False)
    try:
        with progress.phase(f"[1/3] gateway overhead, {args.calls} sequential calls each way"):
            result = asyncio.run(overhead(fast_url, args.calls))
        progress.note(
            f"{result['overhead_ms']} ms per call ({result['gateway_call_ms']} vs {result['direct_call_ms']})"
        )
        with progress.phase(f"[2/3] {args.rollouts} callable-agent rollouts, {args.concurrency} at once",
                            total=args.rollouts) as advance:  # fmt: skip
            ok, wall = asyncio.run(throughput(slow_url, args.rollouts, args.concurrency, advance))
        bound = args.concurrency / args.latency
        result.update(bound_rps=round(bound, 1), achieved_rps=round(args.rollouts / wall, 1),
                      ratio=round(args.rollouts / wall / bound, 3), rollouts=args.rollouts, rollouts_ok=ok)  # fmt: skip
        progress.note(f"{result['achieved_rps']} rollouts/s ({result['ratio']:.0%} of {result['bound_rps']})")
        with progress.phase(f"[3/3] {args.commands} command-agent rollouts, one at a time", total=args.commands) as adv:
            per = asyncio.run(commands(fast_url, args.commands, adv))
        result.update(command_rollout_ms=round(1000 * per, 1),
                      process_start_ms=round(1000 * per - result["gateway_call_ms"], 1),
                      latency_s=args.latency, concurrency=args.concurrency)  # fmt: skip
    finally:
        for proc in (fast, slow):
            proc.terminate()
            proc.wait(10)
    if not args.json:
        print(f"gateway overhead {result['overhead_ms']} ms per call; {result['achieved_rps']} rollouts/s of a bound of "
              f"{result['bound_rps']} ({result['ratio']:.0%}); an agent process costs {result['process_start_ms']} ms "
              "to start")  # fmt: skip
    print(json.dumps(result))


if __name__ == "__main__":
    main()
