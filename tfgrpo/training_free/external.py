"""The user's own agent as the policy: a command run once per rollout, or an async callable.

``ExternalPolicy`` answers a query G times by running the agent G times concurrently (at most
``sampling.agent.processes`` at once over the run), each against a base URL of its own on the
run's :class:`~tfgrpo.training_free.gateway.Gateway`, which injects the arm's lessons, calls the
model through tfgrpo's client and records every call. The recorded calls become the rollout's
trajectory, shown to the judge as built-in trajectories are.

A command gets the sample (id, prompt or messages, metadata; never the reference answer) as JSON
on stdin and in ``TFGRPO_SAMPLE``, the endpoint in ``OPENAI_BASE_URL`` / ``OPENAI_API_KEY`` (a
token of this rollout, not a provider key), and a file path in ``TFGRPO_OUTPUT``: its answer is
that file's content when it wrote one (a JSON object's ``answer``, a JSON string, or the text),
else its stdout. It runs in a process group of its own, killed whole when the rollout ends, or by
the run's reaper (``agent_reaper``) if tfgrpo dies first, even by ``kill -9``.
A callable is ``async def agent(sample, llm) -> str`` with ``llm.base_url``, ``llm.api_key``
and ``llm.client`` (an ``openai.AsyncOpenAI``).

A rollout fails (no answer, left out of its group like a failed request, never a reward of 0)
when the agent exits non-zero, is killed, outlives ``sampling.agent.wall_s``, raises, or never
called the model.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, AsyncIterator, Awaitable, Callable, Union

from tfgrpo.llm import direct
from tfgrpo.llm.client import Completion, LLMClient
from tfgrpo.task_registry import Sample
from tfgrpo.training_free import agent_reaper
from tfgrpo.training_free.agent import ToolCallRecord, Trajectory, TurnRecord
from tfgrpo.training_free.config import SamplingConfig
from tfgrpo.training_free.gateway import Gateway, Session
from tfgrpo.training_free.policy import Rollouts

MAX_OUTPUT = 1024 * 1024  # bytes of an agent's answer (stdout or TFGRPO_OUTPUT) kept
STDERR_TAIL = 4000  # characters of an agent's stderr kept with its trajectory
AgentFn = Callable[[Sample, "AgentLLM"], Awaitable[Any]]
Agent = Union[str, AgentFn]  # a shell command, or an async callable


@dataclass
class AgentLLM:
    """What a callable agent gets: its rollout's endpoint and a ready client for it."""

    base_url: str
    api_key: str
    client: Any  # openai.AsyncOpenAI


@dataclass
class Outcome:
    answer: str | None
    error: str | None = None
    stderr: str = ""


def sample_json(sample: Sample) -> str:
    """What an agent is given of a sample: never its reference answer."""
    return json.dumps(
        {"id": sample.id, "prompt": sample.prompt, "messages": sample.messages, "metadata": sample.metadata},
        ensure_ascii=False,
    )


def describe(agent: Agent) -> str:
    return agent if isinstance(agent, str) else getattr(agent, "__qualname__", repr(agent))


@contextlib.asynccontextmanager
async def agent_policy(
    agent: Agent | None, client: LLMClient, sampling: SamplingConfig
) -> AsyncIterator[ExternalPolicy | None]:
    """The external agent's policy, its gateway running while the context is open (None: no agent)."""
    if agent is None:
        yield None
        return
    async with ExternalPolicy(agent, Gateway(client, sampling), sampling) as policy:
        yield policy


class ExternalPolicy:
    """The :class:`~tfgrpo.training_free.policy.Policy` of an external agent (enter it with
    ``async with`` so its gateway runs)."""

    def __init__(
        self, agent: Agent, gateway: Gateway, sampling: SamplingConfig, slots: asyncio.Semaphore | None = None
    ) -> None:
        self.agent, self.gateway, self.sampling = agent, gateway, sampling
        self.slots = slots or asyncio.Semaphore(sampling.agent.processes)
        self.http: Any = None  # one connection pool for every callable agent's openai client

    def with_sampling(self, sampling: SamplingConfig) -> "ExternalPolicy":
        twin = ExternalPolicy(self.agent, self.gateway, sampling, self.slots)
        twin.http = self.http
        return twin

    async def __aenter__(self) -> "ExternalPolicy":
        await self.gateway.start()
        if not isinstance(self.agent, str):
            import openai

            self.http = openai.DefaultAsyncHttpxClient(trust_env=False)  # loopback only: no proxy
        return self

    async def __aexit__(self, *exc: Any) -> None:
        if self.http is not None:
            await self.http.aclose()
        await self.gateway.close()

    async def sample_group(self, sample: Sample, experiences: str, seed: int) -> Rollouts:
        runs = await asyncio.gather(
            *(self._rollout(sample, experiences, seed + i, i) for i in range(self.sampling.group_size))
        )
        return Rollouts(sample, [c for c, _ in runs], [t for _, t in runs])

    async def _rollout(self, sample: Sample, experiences: str, seed: int, index: int) -> tuple[Completion, Trajectory]:
        async with self.slots:
            session = self.gateway.open(experiences, seed, self.sampling.agent)
            try:
                if isinstance(self.agent, str):
                    out = await run_command(self.agent, sample, session, self.sampling.agent.wall_s)
                else:
                    out = await run_callable(self.agent, sample, session, self.sampling.agent.wall_s, self.http)
            finally:
                self.gateway.end(session)
        if out.error is None and not session.calls:
            out.error = "the agent never called the model (its answer cannot reflect the lessons)"
        traj = trajectory(session, out)
        if out.error is not None:
            return Completion(text=None, index=index, error=f"agent: {out.error}"), traj
        calls = session.calls
        return Completion(
            text=out.answer,
            index=index,
            finish_reason="stop",
            cached=all(c.cached for c in calls),
            prompt_tokens=sum(c.prompt_tokens for c in calls),
            completion_tokens=sum(c.completion_tokens for c in calls),
        ), traj


async def run_callable(fn: AgentFn, sample: Sample, session: Session, timeout: float, http: Any = None) -> Outcome:
    import openai

    client = openai.AsyncOpenAI(base_url=session.base_url, api_key=session.token, max_retries=0, http_client=http)
    try:
        answer = await asyncio.wait_for(fn(sample, AgentLLM(session.base_url, session.token, client)), timeout)
    except asyncio.TimeoutError:
        return Outcome(None, f"timed out after {timeout:g} s")
    except Exception as e:  # noqa: BLE001 - the user's agent: any error is its rollout's failure
        return Outcome(None, f"raised {type(e).__name__}: {str(e)[:300]}")
    finally:
        if http is None:
            await client.close()
    if not isinstance(answer, str):
        return Outcome(None, f"returned {type(answer).__name__}, not the answer text")
    return Outcome(answer)


async def run_command(cmd: str, sample: Sample, session: Session, timeout: float) -> Outcome:
    """Run ``cmd`` (a shell command) for one rollout; its whole process group is killed when it
    ends, however it ends."""
    data = sample_json(sample)
    with tempfile.TemporaryDirectory(prefix="tfgrpo-agent-") as tmp:
        output = Path(tmp) / "output"
        env = {
            **os.environ,
            "OPENAI_BASE_URL": session.base_url,
            "OPENAI_API_KEY": session.token,
            "OPENAI_API_BASE": session.base_url,
            "TFGRPO_SAMPLE": data,
            "TFGRPO_OUTPUT": str(output),
        }
        for provider_key in (
            "ANTHROPIC_API_KEY",
            "GEMINI_API_KEY",
            "MISTRAL_API_KEY",
            "GROQ_API_KEY",
            "TOGETHER_API_KEY",
            "HOSTED_VLLM_API_KEY",
            "AZURE_API_KEY",
        ):
            env.pop(provider_key, None)  # the agent reaches the model through its rollout's endpoint only
        direct.bypass_env_proxy([session.base_url], env)  # a loopback endpoint: never through a proxy
        try:
            proc = await asyncio.create_subprocess_shell(
                cmd,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                env=env,
                cwd=os.getcwd(),
                start_new_session=True,
            )
        except OSError as e:
            return Outcome(None, f"cannot start {cmd!r}: {e.strerror or e}")
        agent_reaper.watch(proc.pid)  # its group (start_new_session: the group's id is its pid)
        stdout, stderr = _Bounded(MAX_OUTPUT, keep="head"), _Bounded(STDERR_TAIL, keep="tail")
        readers = [asyncio.create_task(stdout.drain(proc.stdout)), asyncio.create_task(stderr.drain(proc.stderr))]
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            assert proc.stdin is not None
            proc.stdin.write(data.encode())
            await proc.stdin.drain()
            proc.stdin.close()
        error = None
        try:
            code = await _exit_code(proc, timeout)
            if code is None:
                error = f"timed out after {timeout:g} s (killed)"
            elif code != 0:
                error = f"killed by signal {-code}" if code < 0 else f"exited with status {code}"
        finally:
            _kill_group(proc.pid)  # children it left behind too (they may hold its output open)
            agent_reaper.forget(proc.pid)
        await asyncio.wait(readers, timeout=5)
        with contextlib.suppress(ProcessLookupError):
            await asyncio.wait_for(proc.wait(), 5)
        for r in readers:
            r.cancel()
        tail = stderr.text()
        if error is not None:
            last = tail.strip().splitlines()[-1][:200] if tail.strip() else ""
            return Outcome(None, error + (f": {last}" if last else ""), tail)
        answer = _read_output(output) if output.exists() else stdout.text()
        if answer is None:
            return Outcome(
                None, f"its {'TFGRPO_OUTPUT file' if output.exists() else 'output'} is over {MAX_OUTPUT} bytes", tail
            )
        if stdout.over and not output.exists():
            return Outcome(None, f"printed more than {MAX_OUTPUT} bytes (write the answer to TFGRPO_OUTPUT)", tail)
        return Outcome(answer.strip(), None, tail)


async def _exit_code(proc: asyncio.subprocess.Process, timeout: float) -> int | None:
    """The agent's exit status, or None after ``timeout`` s. Its own exit counts, not its output
    closing (``proc.wait()`` also waits for children that hold the pipes)."""
    deadline = asyncio.get_running_loop().time() + timeout
    delay = 0.005
    while proc.returncode is None:
        left = deadline - asyncio.get_running_loop().time()
        if left <= 0:
            return None
        await asyncio.sleep(min(delay, left))
        delay = min(delay * 2, 0.05)
    return proc.returncode


def _kill_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


def _read_output(path: Path) -> str | None:
    with path.open("rb") as f:
        raw = f.read(MAX_OUTPUT + 1)
    if len(raw) > MAX_OUTPUT:
        return None
    text = raw.decode("utf-8", errors="replace")
    try:
        value = json.loads(text)
    except ValueError:
        return text
    if isinstance(value, dict) and isinstance(value.get("answer"), str):
        return value["answer"]
    return value if isinstance(value, str) else text


class _Bounded:
    """A stream read to its end, keeping at most ``limit`` bytes (its head or its tail)."""

    def __init__(self, limit: int, keep: str) -> None:
        self.limit, self.keep, self.data, self.over = limit, keep, bytearray(), False

    async def drain(self, stream: asyncio.StreamReader | None) -> None:
        if stream is None:
            return
        while chunk := await stream.read(65536):
            if self.keep == "head":
                room = self.limit - len(self.data)
                self.data += chunk[: max(room, 0)]
                self.over = self.over or len(chunk) > room
            else:
                self.data = (self.data + chunk)[-self.limit :]

    def text(self) -> str:
        return self.data.decode("utf-8", errors="replace")


def trajectory(session: Session, out: Outcome) -> Trajectory:
    """The recorded calls as a trajectory: one turn per model call, each tool call with the
    result the agent sent back in a later call."""
    calls = session.calls
    results = {
        str(m.get("tool_call_id")): str(m.get("content", ""))
        for c in calls
        for m in c.messages
        if m.get("role") == "tool"
    }
    turns = []
    for i, c in enumerate(calls):
        tool_calls = [
            ToolCallRecord(
                id=str(tc.get("id", "")),
                name=str((tc.get("function") or {}).get("name", "")),
                arguments=str((tc.get("function") or {}).get("arguments", "")),
                result=results.get(str(tc.get("id")), "(no result sent back)"),
            )
            for tc in c.tool_calls or []
        ]
        turns.append(
            TurnRecord(
                index=i,
                started_s=c.started_s,
                elapsed_s=c.elapsed_s,
                prompt_tokens=c.prompt_tokens,
                completion_tokens=c.completion_tokens,
                finish_reason=c.finish_reason,
                cached=c.cached,
                content=c.content,
                tool_calls=tool_calls,
                error=c.error,
            )
        )
    return Trajectory(
        messages=calls[0].messages if calls else [],
        turns=turns,
        final=out.answer,
        stopped_by="error" if out.error else None,
        tool_calls=sum(len(t.tool_calls) for t in turns),
        prompt_tokens=sum(c.prompt_tokens for c in calls),
        completion_tokens=sum(c.completion_tokens for c in calls),
        agent_error=out.error,
        stderr_tail=out.stderr[-STDERR_TAIL:] or None,
        refused_calls=session.refused,
    )
