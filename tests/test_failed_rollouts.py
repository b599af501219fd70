"""A rollout whose request failed is no answer: it never becomes training signal.

The flaky endpoint is a proxy in front of the simulator that, like ``transformers serve``,
answers one choice per request (so the client asks for each sample separately), and refuses a
fixed share of the policy's requests with HTTP 400 (not retried: it fails that rollout only).
Which requests fail depends only on the request, so the run is reproducible.
"""

import asyncio
import hashlib
import json
import threading
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tfgrpo.llm.endpoints import open_models
from tfgrpo.rundir import GROUPS, ROLLOUTS, RunDir
from tfgrpo.sim import start_sim_server
from tfgrpo.sim.skills import skill_in_text
from tfgrpo.task_registry import load_task
from tfgrpo.training_free.config import RunConfig
from tfgrpo.training_free.loop import train_loop
from tfgrpo.training_free.prompting import Prompts


class FlakyProxy:
    """Forwards chat requests to ``upstream`` with n=1; refuses policy requests whose body
    hashes into the first ``fail_per_mille`` of 1000; keeps the judge's request bodies."""

    def __init__(self, upstream: str, fail_per_mille: int) -> None:
        self.upstream, self.fail_per_mille = upstream, fail_per_mille
        self.refused, self.judge_bodies = 0, []
        lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                judge = "response_format" in body
                digest = int(hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest(), 16)
                with lock:
                    if judge:
                        proxy.judge_bodies.append(body)
                    elif digest % 1000 < proxy.fail_per_mille:
                        proxy.refused += 1
                        return self._send(
                            400,
                            {"error": {"message": "flaky endpoint: request refused", "type": "invalid_request_error"}},
                        )
                body["n"] = 1  # it ignores n, as transformers serve does
                req = urllib.request.Request(
                    proxy.upstream + "/chat/completions",
                    data=json.dumps(body).encode(),
                    headers={"Content-Type": "application/json", "Authorization": "Bearer sim"},
                )
                try:
                    with urllib.request.urlopen(req, timeout=30) as resp:
                        return self._send(resp.status, json.loads(resp.read()))
                except urllib.error.HTTPError as e:
                    return self._send(e.code, json.loads(e.read() or b"{}"))

            def _send(self, code, payload):
                data = json.dumps(payload).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base_url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _train(tmp_path, name: str, fail_per_mille: int):
    with start_sim_server(seed=0) as sim:
        proxy = FlakyProxy(sim.base_url, fail_per_mille)
        try:
            cfg = RunConfig(task="demo", epochs=2, batch_size=8, sampling={"group_size": 4}, cache=False)
            cfg.policy.model, cfg.policy.api_base = "openai/sim-policy-s0", proxy.base_url
            cfg.judge.model, cfg.judge.api_base = "openai/sim-judge-s0", proxy.base_url
            rd = RunDir(tmp_path / name)
            with open_models(cfg.policy, cfg.judge) as models:
                result = asyncio.run(train_loop(cfg, load_task("demo"), models, rd, prompts=Prompts()))
        finally:
            proxy.close()
    state = json.loads(sorted((rd.path / "library" / "versions").glob("*.json"))[-1].read_text())
    # The simulated judge words a skill's lesson in several ways: a lesson is the skill it teaches.
    lessons = {getattr(skill_in_text(e["text"]), "name", e["text"]) for e in state["experiences"]}
    return result, rd, proxy, lessons


@pytest.mark.slow  # two 2-epoch runs
def test_a_flaky_endpoint_learns_the_same_lessons_as_a_clean_one(tmp_path):
    clean, _, _, clean_lessons = _train(tmp_path, "clean", 0)
    flaky, rd, proxy, flaky_lessons = _train(tmp_path, "flaky", 150)
    summary = flaky.summary()
    assert clean.summary()["rollout_failures"] == 0 and clean_lessons
    failed = [r for r in rd.read(ROLLOUTS) if r["text"] is None]
    # A refused request fails its rollouts (all G of the first request, sent with n=G; one after that).
    assert proxy.refused > 0 and summary["rollout_failures"] == len(failed) == sum(
        s.rollout_failures for s in flaky.steps
    )
    assert all("request refused" in r["error"] for r in failed)
    # The honest simulator's judge learns from the contrasts a group shows, and failed requests
    # remove some answers, so the flaky run may learn fewer skills; it invents none of its own
    # and never learns from a failure.
    from tfgrpo.sim.skills import ALL_SKILLS

    skills = {name for name in clean_lessons if " " not in name}
    known = {s.name for s in ALL_SKILLS}
    assert {n for n in flaky_lessons if " " not in n} <= known and len(flaky_lessons & skills) >= len(skills) / 2
    assert not any(w in n.lower() for n in flaky_lessons for w in ("fail", "refused", "no answer", "request"))

    # No score, no advantage: a failure is not a wrong answer.
    assert all(r["reward"] is None and r["rewards"] == [None] and r["advantage"] == 0.0 for r in failed)
    # The judge only ever saw answers.
    assert proxy.judge_bodies and not any(
        "request failed" in json.dumps(b) or "no answer" in json.dumps(b) for b in proxy.judge_bodies
    )
    groups = rd.read(GROUPS)
    by_group: dict[tuple[int, str], int] = {}
    for r in failed:
        by_group[(r["step"], r["sample_id"])] = by_group.get((r["step"], r["sample_id"]), 0) + 1
    for g in groups:
        lost = by_group.get((g["step"], g["sample_id"]), 0)
        if lost > 2:  # fewer than two answers left: skipped, with the reason
            assert not g["judged"] and g["skip_reason"] == f"only {4 - lost} of 4 answers ({lost} requests failed)"
        if not g["judged"]:
            assert g["skip_reason"]
    assert any(lost for lost in by_group.values() if 0 < lost <= 2)  # some judged groups had failures
