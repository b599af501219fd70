"""A run that cannot learn says so (issue: real models, honestly): every policy request failing
stops train and eval with one line and exit 2; a judge that writes no usable lesson is stopped
before it is paid; an endpoint that refuses response_format gets the request again without it;
groups of identical answers are named; the judge's op schema admits only valid ops."""

from __future__ import annotations

import asyncio
import json

import jsonschema
import pytest
from aiohttp import web

from cli_helpers import last_json, tfgrpo
from experience_store import Injection
from openai_stub import StubServer
from tfgrpo.llm.client import LLMClient, RetryPolicy
from tfgrpo.task_registry import Sample
from tfgrpo.training_free.config import JudgeConfig
from tfgrpo.training_free.distill import Consolidation
from tfgrpo.training_free.judge import Attempt, GroupComparison, Judge, JudgeContext
from tfgrpo.training_free.prompting import Prompts

REPLY = json.dumps({"reasoning": "The better attempt added the end post.",
                    "ops": [{"op": "ADD", "text": "When counting posts along a fence, add one for the end post.",
                             "reason": "the worse attempt forgot it"}]})  # fmt: skip


@pytest.mark.slow  # whole CLI runs
def test_a_wrong_model_name_stops_train_after_one_step_and_eval_at_once(tmp_path):
    out = tmp_path / "run"
    proc = tfgrpo("train", "--task", "demo", "--model", "smollm2", "--judge", "sim", "--epochs", "1", "--out", str(out),
                  "--max-retries", "0", "-q", check=False)  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "every policy request failed (40 of 40)" in lines[0] and "--model" in lines[0]
    assert not (out / "steps.jsonl").exists()  # nothing of the failed step kept

    good = tmp_path / "good"
    tfgrpo("train", "--task", "demo", "--model", "sim", "--epochs", "1", "--limit", "8", "--out", str(good), "-q")
    proc = tfgrpo("eval", "--library", str(good), "--model", "smollm2", "--max-retries", "0", "-q", check=False)
    assert proc.returncode == 2 and "every policy request of the baseline arm failed" in proc.stderr, proc.stderr
    assert not (good / "eval.json").exists()


class Prose(StubServer):
    """A judge that cannot do the job: prose to every request."""

    def __init__(self) -> None:
        super().__init__(answer=lambda messages, i: "Both attempts are interesting and show effort.")


@pytest.mark.slow  # whole CLI runs
def test_a_judge_that_writes_prose_is_stopped_before_anything_is_paid(tmp_path):
    with Prose() as judge:
        out = tmp_path / "run"
        proc = tfgrpo("train", "--task", "demo", "--model", "sim", "--judge", "openai/prose", "--judge-api-base",
                      judge.base_url, "--epochs", "1", "--out", str(out), "-q", check=False)  # fmt: skip
        assert proc.returncode == 2, proc.stderr
        assert "failed the check before step 1" in proc.stderr and "--judge" in proc.stderr
        assert judge.requests <= 4 and not (out / "steps.jsonl").exists()  # 2 groups, one repair each

        # without the check, step 1's judged groups all fail: the run stops there, before step 2
        proc = tfgrpo("train", "--task", "demo", "--model", "sim", "--judge", "openai/prose", "--judge-api-base",
                      judge.base_url, "--no-judge-check", "--epochs", "1", "--out", str(out), "-q", check=False)  # fmt: skip
        assert proc.returncode == 2 and "no usable reply for any of the" in proc.stderr, proc.stderr
        assert not (out / "steps.jsonl").exists()


class RefusesFormat(StubServer):
    """llama-cpp-python's server: HTTP 500 for a json_schema response_format."""

    def __init__(self) -> None:
        super().__init__(answer=lambda messages, i: REPLY)
        self.with_format = self.without_format = 0

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        if body.get("response_format"):
            self.with_format += 1
            return web.json_response(
                {"error": {"message": "Unsupported response_format type: json_schema"}}, status=500
            )
        self.without_format += 1
        return await super()._chat(request)


def test_an_endpoint_refusing_response_format_is_asked_again_without_it():
    sample = Sample(id="q", prompt="How many posts for a 10 m fence with a post every 2 m?", answer="6")
    attempts = [Attempt(1, "5 gaps + 1 = 6. Answer: 6", 1.0), Attempt(2, "10 / 2 = 5. Answer: 5", 0.0)]
    with RefusesFormat() as server:
        client = LLMClient(model="openai/llama-cpp", api_base=server.base_url, api_key="x", role="judge",
                           retry=RetryPolicy(max_retries=3, base_delay=0.01))  # fmt: skip
        judge = Judge(client, Prompts(), JudgeConfig(schema_in_prompt=None), JudgeContext(pass_threshold=1.0))
        empty = Injection(text="", ids=[], tokens=0, mode="all")
        first = asyncio.run(judge.judge_group(sample, attempts, empty))
        assert first.error is None and first.proposals[0].op == "ADD"
        assert (server.with_format, server.without_format) == (1, 1)  # not retried 3 times: the 500 names the format
        assert not client.takes_response_schema() and judge.schema_text(
            GroupComparison
        )  # the schema goes in the prompt
        asyncio.run(judge.judge_group(Sample(id="q2", prompt="other", answer="1"), attempts, empty))
        assert (server.with_format, server.without_format) == (1, 2)


@pytest.mark.parametrize(
    "op",
    [
        {"op": "ADD", "reason": "r"},  # no text
        {"op": "UPDATE", "text": "When x, y.", "reason": "r"},  # no id
        {"op": "UPDATE", "id": "E1", "reason": "r"},  # no text
        {"op": "DELETE", "reason": "r"},  # no id
        {"op": "ADD", "text": "When x, y.", "reason": "r", "extra": 1},  # a key no kind has
        {"op": "RENAME", "id": "E1", "reason": "r"},  # no such kind
        {"op": "ADD", "text": "When x, y."},  # no reason
    ],
)
def test_the_judge_schema_rejects_each_malformed_op(op):
    schema = GroupComparison.model_json_schema()
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"reasoning": "r", "ops": [op]}, schema)


def test_the_judge_schema_admits_each_valid_op_and_consolidation_may_merge():
    ops = [{"op": "ADD", "text": "When x, y.", "reason": "r"}, {"op": "UPDATE", "id": "E1", "text": "When x, z.", "reason": "r"},
           {"op": "DELETE", "id": "E2", "reason": "r"}, {"op": "NONE", "reason": "a slip"}]  # fmt: skip
    jsonschema.validate({"reasoning": "r", "ops": ops}, GroupComparison.model_json_schema())
    merge = {"op": "MERGE", "ids": ["E1", "E2"], "text": "When x, y or z.", "reason": "r"}
    jsonschema.validate({"ops": [*ops, merge]}, Consolidation.model_json_schema())
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"ops": [{**merge, "ids": ["E1"]}]}, Consolidation.model_json_schema())
    with pytest.raises(jsonschema.ValidationError):  # a group comparison cannot merge
        jsonschema.validate({"reasoning": "r", "ops": [merge]}, GroupComparison.model_json_schema())


def test_groups_of_identical_answers_are_named_and_the_summary_says_why_nothing_was_learned(tmp_path):
    with StubServer(answer=lambda messages, i: "I think it is 7.\nAnswer: 7") as policy:
        proc = tfgrpo("train", "--task", "demo", "--model", "openai/greedy", "--api-base", policy.base_url, "--judge",
                      "sim", "--epochs", "1", "--limit", "8", "--out", str(tmp_path / "run"), "--json", "-q")  # fmt: skip
    assert proc.stderr.count("every group's answers were identical at temperature 0.7") == 1, proc.stderr
    summary = last_json(proc)
    assert summary["library_size"] == 0 and "identical" in summary["learned_nothing"]
    runs = tfgrpo("runs", str(tmp_path), "--json")
    assert "learned nothing" in runs.stdout and "identical" in runs.stdout


class Recording(StubServer):
    """A policy that always gives the same answer, recording each request's max_tokens."""

    def __init__(self) -> None:
        super().__init__(answer=lambda messages, i: "Answer: 3")
        self.max_tokens: list[int | None] = []

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        self.max_tokens.append((await request.json()).get("max_tokens"))
        return await super()._chat(request)


@pytest.mark.slow  # whole CLI runs
def test_an_empty_library_is_named_on_export_and_eval_follows_the_runs_token_cap(tmp_path):
    run = tmp_path / "run"
    with Recording() as policy:
        tfgrpo("train", "--task", "demo", "--model", "openai/same", "--api-base", policy.base_url, "--judge", "sim",
               "--epochs", "1", "--limit", "8", "--max-tokens", "48", "--out", str(run), "-q")  # fmt: skip
        assert set(policy.max_tokens) == {48}
        proc = tfgrpo("pack", "export", str(run), "-o", str(tmp_path / "p.zip"))
        assert "holds no lessons" in proc.stderr
        policy.max_tokens.clear()
        proc = tfgrpo("eval", "--library", str(run), "--api-base", policy.base_url, "--placebo", "-k", "1", "--limit",
                      "4", "--json", "-q")  # fmt: skip
        assert "holds no lessons; all three arms (placebo too) will see the same prompt" in proc.stderr
        assert policy.max_tokens and set(policy.max_tokens) == {48}  # the run's cap, not the task's default


@pytest.mark.slow
def test_a_model_the_server_does_not_have_stops_train_and_eval_with_one_line(tmp_path):
    good = tmp_path / "good"
    tfgrpo("train", "--task", "demo", "--model", "sim", "--epochs", "1", "--limit", "8", "--out", str(good), "-q")
    with StubServer() as server:
        server.fail(404, body={"error": {"message": "The model `wrong` does not exist"}}, times=10_000)
        for args in (["train", "--task", "demo", "--epochs", "1", "--out", str(tmp_path / "run")],
                     ["eval", "--library", str(good)]):  # fmt: skip
            proc = tfgrpo(*args, "--model", "openai/wrong", "--api-base", server.base_url, "-q", check=False)
            errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
            assert proc.returncode == 2 and len(errors) == 1 and "The model `wrong` does not exist" in errors[0]
        assert server.requests <= 2 + 2 * 16  # stopped at the first refusals (16 at once), not after every problem
    assert not (tmp_path / "run").exists()
