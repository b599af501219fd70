"""The user's own agent as the policy (tfgrpo.training_free.external): agent programs written with
the openai SDK, litellm, curl, or as a Python callable, reach the model only through their
rollout's recording, injecting endpoint; what tfgrpo records is what they did; bad agents fail
their own rollout with a reason and leave nothing running. Upstream is the simulator."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from pathlib import Path

import pytest

from tfgrpo.llm.client import LLMClient, RetryPolicy
from tfgrpo.sim import start_sim_server
from tfgrpo.sim.skills import TOOL_SKILLS_BY_TASK
from tfgrpo.task_registry import load_task
from tfgrpo.training_free.config import AgentConfig, SamplingConfig
from tfgrpo.training_free.external import agent_policy

AGENTS = Path(__file__).parent / "agents"
PY = sys.executable
TOOLS_AGENT = f"{PY} {AGENTS / 'openai_tools_agent.py'}"
LESSON = f"[E1] {TOOL_SKILLS_BY_TASK['math-tools'].lesson}"


@pytest.fixture(scope="module")
def sim():
    with start_sim_server(seed=0) as server:
        yield server


def client_for(sim) -> LLMClient:
    return LLMClient(
        model="openai/sim-policy-s0",
        api_base=sim.base_url,
        api_key="sim",
        retry=RetryPolicy(max_retries=1, base_delay=0.01),
    )


def group(sim, agent, *, g: int = 4, task: str = "math-tools", experiences: str = LESSON, **limits):
    """One group of ``g`` rollouts of ``agent`` on the task's first problem."""
    sampling = SamplingConfig(group_size=g, temperature=0.7, agent=AgentConfig(**limits))
    sample = load_task(task).dataset[0]

    async def run():
        async with agent_policy(agent, client_for(sim), sampling) as policy:
            out = await policy.sample_group(sample, experiences, 11)
            return out, policy.gateway

    return asyncio.run(run())


def log_lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


@pytest.mark.parametrize("stream", ["0", "1"])
def test_openai_sdk_agent_runs_tools_over_several_calls_and_every_call_is_recorded(sim, tmp_path, monkeypatch, stream):
    log = tmp_path / "calls.jsonl"
    monkeypatch.setenv("AGENT_LOG", str(log))
    monkeypatch.setenv("AGENT_STREAM", stream)
    out, _ = group(sim, TOOLS_AGENT, g=6)
    assert all(c.ok for c in out.completions), [c.error for c in out.completions]
    made = log_lines(log)
    turns = [t for traj in out.trajectories for t in traj.turns]
    assert len(turns) == len(made)  # every call the agents made, and no other
    assert sorted(t.content or "" for t in turns) == sorted(m["content"] or "" for m in made)
    multi = [traj for traj in out.trajectories if len(traj.turns) >= 2]
    assert multi, "the lesson should make some rollouts use the python tool"
    traj = multi[0]
    assert traj.turns[0].tool_calls and traj.turns[0].tool_calls[0].name == "python"
    assert traj.turns[0].tool_calls[0].result != "(no result sent back)"  # the agent's own tool output
    assert traj.messages[0]["content"].startswith("Solve the problem")  # as the agent sent it, lessons not shown
    assert (
        "the agent called python(" in traj.render() and traj.final == out.completions[out.trajectories.index(traj)].text
    )


def test_the_arm_decides_what_is_injected(sim):
    seen = []

    async def agent(sample, llm):
        r = await llm.client.chat.completions.create(model="m", messages=[{"role": "user", "content": sample.prompt}])
        seen.append(r.choices[0].message.content)
        return r.choices[0].message.content

    base, _ = group(sim, agent, g=2, experiences="")
    lib, _ = group(sim, agent, g=2)
    assert all(c.ok for c in base.completions + lib.completions)
    # the simulator cites the lessons it was shown: only the library arm's answers can
    assert not any("[E1]" in (c.text or "") for c in base.completions)


def test_callable_agent_gets_its_endpoint_and_a_ready_client(sim):
    async def agent(sample, llm):
        assert llm.base_url.startswith("http://127.0.0.1:") and llm.api_key != "sim"  # a rollout token, no provider key
        messages = [{"role": "system", "content": "Use python."}, {"role": "user", "content": sample.prompt}]
        tools = [
            {"type": "function", "function": {"name": "python", "parameters": {"type": "object", "properties": {}}}}
        ]
        for _ in range(4):
            msg = (
                (await llm.client.chat.completions.create(model="m", messages=messages, tools=tools)).choices[0].message
            )
            if not msg.tool_calls:
                return msg.content
            messages.append(msg.model_dump(exclude_none=True))
            messages += [{"role": "tool", "tool_call_id": tc.id, "content": "42"} for tc in msg.tool_calls]
        return "Answer: 0"

    out, _ = group(sim, agent, g=4)
    assert all(c.ok for c in out.completions)
    assert sum(len(t.turns) for t in out.trajectories) >= 4
    results = [tc.result for t in out.trajectories for turn in t.turns for tc in turn.tool_calls]
    assert all(r == "42" for r in results)


@pytest.mark.slow  # litellm's import in each agent process
def test_litellm_agent(sim):
    code = (
        "import json, os, sys, litellm; s = json.load(sys.stdin); "
        "r = litellm.completion(model='openai/policy', api_base=os.environ['OPENAI_BASE_URL'], "
        "api_key=os.environ['OPENAI_API_KEY'], messages=[{'role': 'user', 'content': s['prompt']}]); "
        "print(r.choices[0].message.content)"
    )
    out, _ = group(sim, f'LITELLM_LOCAL_MODEL_COST_MAP=True {PY} -c "{code}"', g=2, task="demo", experiences="")
    assert all(c.ok and c.text for c in out.completions), [c.error for c in out.completions]
    assert [len(t.turns) for t in out.trajectories] == [1, 1]


def test_shell_script_agent_with_curl(sim, tmp_path):
    script = tmp_path / "agent.sh"
    script.write_text(f"""#!/bin/sh
set -e
prompt=$(printf '%s' "$TFGRPO_SAMPLE" | {PY} -c 'import json,sys; print(json.dumps(json.load(sys.stdin)["prompt"]))')
curl -sf "$OPENAI_BASE_URL/chat/completions" -H "Authorization: Bearer $OPENAI_API_KEY" \\
  -H 'Content-Type: application/json' -d "{{\\"model\\": \\"p\\", \\"messages\\": [{{\\"role\\": \\"user\\", \\"content\\": $prompt}}]}}" \\
  | {PY} -c 'import json,sys; print(json.load(sys.stdin)["choices"][0]["message"]["content"])'
""")
    script.chmod(0o755)
    out, _ = group(sim, str(script), g=2, task="demo", experiences="")
    assert all(c.ok and c.text for c in out.completions), [c.error for c in out.completions]
    assert out.trajectories[0].turns[0].content == out.completions[0].text


def test_answer_from_tfgrpo_output_file_beside_logs_on_stdout(sim):
    code = (
        "import json, os, sys; from openai import OpenAI; s = json.load(sys.stdin); print('log: starting'); "
        "r = OpenAI().chat.completions.create(model='p', messages=[{'role': 'user', 'content': s['prompt']}]); "
        "json.dump({'answer': r.choices[0].message.content}, open(os.environ['TFGRPO_OUTPUT'], 'w'))"
    )
    out, _ = group(sim, f'{PY} -c "{code}"', g=2, task="demo", experiences="")
    assert all(c.ok and "log: starting" not in c.text for c in out.completions)
    assert out.completions[0].text == out.trajectories[0].turns[0].content


def _first_is(bad: str, good: str) -> str:
    """A command whose first rollout (of the group) runs ``bad`` and the others ``good``."""
    return f'if mkdir "$MARK" 2>/dev/null; then {bad}; else {good}; fi'


PLAIN = (
    f'{PY} -c "import json, sys; from openai import OpenAI; s = json.load(sys.stdin); '
    "print(OpenAI().chat.completions.create(model='p', messages=[{'role': 'user', 'content': s['prompt']}])"
    '.choices[0].message.content)"'
)


def _left_running(marker: str) -> list[int]:
    pids = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                if marker in (proc / "cmdline").read_bytes().decode(errors="replace"):
                    pids.append(int(proc.name))
            except OSError:
                continue
    return pids


HOSTILE = [
    ("hangs", "sleep 30", {"wall_s": 3.0}, "timed out after 3 s"),
    ("exits 1", "echo broken >&2; exit 1", {}, "exited with status 1: broken"),
    ("never calls the model", "echo 'Answer: 4'", {}, "never called the model"),
    (
        "prints gigabytes",
        f"{PY} -c \"import sys; [sys.stdout.write('x' * 65536) for _ in range(2 ** 14)]\"",
        {},
        "printed more than",
    ),
    (
        "another rollout's URL",
        f"OPENAI_BASE_URL=$(echo $OPENAI_BASE_URL | sed 's#/r/[^/]*/#/r/stolen/#') {PLAIN}",
        {},
        "exited with status 1",
    ),
    ("killed", "kill -9 $$", {}, "killed by signal 9"),
]


@pytest.mark.parametrize("name,bad,limits,reason", HOSTILE, ids=[h[0] for h in HOSTILE])
def test_a_bad_agent_fails_its_rollout_with_a_reason_and_the_group_goes_on(
    sim, tmp_path, monkeypatch, name, bad, limits, reason
):
    monkeypatch.setenv("MARK", str(tmp_path / "first"))
    started = time.monotonic()
    out, gateway = group(sim, _first_is(bad, PLAIN), g=3, task="demo", experiences="", **limits)
    failed = [c for c in out.completions if not c.ok]
    assert len(failed) == 1 and reason in failed[0].error, [c.error for c in out.completions]
    assert sum(c.ok for c in out.completions) == 2
    assert time.monotonic() - started < 25
    if name == "another rollout's URL":
        assert gateway.late_calls == 1  # refused: that URL is no live rollout's


def test_children_an_agent_leaves_behind_are_killed_with_it(sim, tmp_path, monkeypatch):
    marker = f"{time.time_ns() % 10**6 + 0.123}"
    out, _ = group(sim, f"sleep {marker} & {PLAIN}", g=2, task="demo", experiences="")
    assert all(c.ok for c in out.completions)
    assert _left_running(f"sleep\0{marker}") == []


def test_garbage_bodies_and_calls_over_the_limit_are_refused_and_counted(sim):
    async def agent(sample, llm):
        import aiohttp

        async with aiohttp.ClientSession() as http:
            for body in (b"not json", b"[1, 2]", b'{"messages": "hi"}', b"[" * 100000):
                async with http.post(f"{llm.base_url}/chat/completions", data=body) as r:
                    assert r.status == 400
        answers = []
        for _ in range(3):  # the third is over max_turns=2
            try:
                r = await llm.client.chat.completions.create(
                    model="m", messages=[{"role": "user", "content": sample.prompt}]
                )
                answers.append(r.choices[0].message.content)
            except Exception as e:  # noqa: BLE001
                answers.append(type(e).__name__)
        return answers[0] + "\n" + answers[-1]

    out, _ = group(sim, agent, g=2, task="demo", experiences="", max_turns=2)
    assert all(c.ok for c in out.completions)
    assert all(t.refused_calls == 5 and len(t.turns) == 2 for t in out.trajectories)
    assert all(c.text.endswith("RateLimitError") for c in out.completions)


def test_calls_after_the_rollout_ended_are_refused(sim):
    leftovers = []

    async def agent(sample, llm):
        async def later():  # its rollout's URL, used after the rollout returned
            import aiohttp

            await asyncio.sleep(0.3)
            body = {"model": "m", "messages": [{"role": "user", "content": "late"}]}
            async with aiohttp.ClientSession() as http, http.post(f"{llm.base_url}/chat/completions", json=body) as r:
                leftovers.append(r.status)

        r = await llm.client.chat.completions.create(model="m", messages=[{"role": "user", "content": sample.prompt}])
        asyncio.get_running_loop().create_task(later())
        return r.choices[0].message.content

    sampling = SamplingConfig(group_size=2)
    sample = load_task("demo").dataset[0]

    async def run():
        async with agent_policy(agent, client_for(sim), sampling) as policy:
            out = await policy.sample_group(sample, "", 3)
            await asyncio.sleep(0.8)
            return out, policy.gateway.late_calls

    out, late = asyncio.run(run())
    assert all(c.ok for c in out.completions) and late == 2 and leftovers == [404, 404]
    assert [len(t.turns) for t in out.trajectories] == [1, 1]


def test_a_raising_or_silent_callable_fails_its_rollout(sim):
    async def raises(sample, llm):
        await llm.client.chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}])
        raise RuntimeError("tool crashed")

    out, _ = group(sim, raises, g=2, task="demo", experiences="")
    assert all(not c.ok and "raised RuntimeError: tool crashed" in c.error for c in out.completions)
    assert all(len(t.turns) == 1 and t.agent_error for t in out.trajectories)

    async def returns_none(sample, llm):
        await llm.client.chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}])

    out, _ = group(sim, returns_none, g=1, task="demo", experiences="")
    assert "returned NoneType" in out.completions[0].error


def test_the_agent_never_sees_the_reference_answer_or_a_provider_key(sim, tmp_path, monkeypatch):
    monkeypatch.setenv("ANTHROPIC_API_KEY", "secret-provider-key")
    dump = tmp_path / "env"
    code = (
        "import json, os, sys; from openai import OpenAI; s = sys.stdin.read(); "
        f"open({str(dump)!r}, 'w').write(json.dumps({{'stdin': s, 'env': dict(os.environ)}})); "
        "q = json.loads(s); print(OpenAI().chat.completions.create(model='p', "
        "messages=[{'role': 'user', 'content': q['prompt']}]).choices[0].message.content)"
    )
    out, _ = group(sim, f'{PY} -c "{code}"', g=1, task="demo", experiences="")
    assert out.completions[0].ok
    seen = json.loads(dump.read_text())
    assert "answer" not in json.loads(seen["stdin"]) and seen["stdin"] == seen["env"]["TFGRPO_SAMPLE"]
    assert "ANTHROPIC_API_KEY" not in seen["env"] and seen["env"]["OPENAI_API_KEY"] != "sim"
    assert seen["env"]["OPENAI_BASE_URL"].startswith("http://127.0.0.1:")
    assert os.environ["ANTHROPIC_API_KEY"] == "secret-provider-key"


def test_a_task_files_agent_function_trains_without_the_flag(tmp_path):
    import tfgrpo

    tasks = tmp_path / "mine.py"
    tasks.write_text("""
from tfgrpo import load_task, task


async def agent(sample, llm):
    r = await llm.client.chat.completions.create(model="m", messages=[{"role": "user", "content": sample.prompt}])
    return r.choices[0].message.content


@task
def demo_with_my_agent():
    t = load_task("demo")
    t.agent = agent
    return t
""")
    result = tfgrpo.train(
        tfgrpo.RunConfig(
            task=f"{tasks}:demo_with_my_agent",
            epochs=1,
            limit=4,
            batch_size=4,
            sampling={"group_size": 2},
            policy={"model": "sim"},
        ),
        out=tmp_path / "run",
    )
    assert result.steps[0].rollout_failures == 0
    rows = [json.loads(line) for line in (tmp_path / "run" / "rollouts.jsonl").read_text().splitlines()]
    assert len(rows) == 8 and all(len(r["trajectory"]["turns"]) == 1 for r in rows)


def test_a_missing_or_empty_agent_command_is_one_line(tmp_path):
    from cli_helpers import tfgrpo

    proc = tfgrpo("train", "--agent", " ", "--model", "sim", "--out", str(tmp_path / "a"), check=False)
    assert proc.returncode == 2 and "give the command that runs your agent" in proc.stderr
    proc = tfgrpo("train", "--agent", str(tmp_path / "no-such-agent"), "--model", "sim", "--epochs", "1", "--limit",
                  "4", "--batch-size", "4", "--out", str(tmp_path / "b"), "-q", check=False)  # fmt: skip
    assert proc.returncode == 2 and "every rollout of the agent failed (20 of 20)" in proc.stderr, proc.stderr
    assert "not found" in proc.stderr and not (tmp_path / "b").exists()
