"""``tfgrpo report`` and ``tfgrpo runs`` on real runs of the simulated model; the HTML is
opened in a real headless Chromium (slow mark)."""

import base64
import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from cli_helpers import tfgrpo

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    tfgrpo("train", "--model", "sim", "--epochs", "2", "--out", str(root / "done"), "--price-per-mtok", "0.5,1.5", "-q")
    tfgrpo("eval", "--library", str(root / "done"), "-k", "2", "-n", "4", "-q")
    tfgrpo("train", "--model", "sim", "--epochs", "2", "--out", str(root / "budget"), "--budget-calls", "40", "-q")
    crashed = root / "crashed"
    shutil.copytree(root / "budget", crashed)
    status = json.loads((crashed / "status.json").read_text())
    (crashed / "status.json").write_text(json.dumps({**status, "status": "running", "reason": None, "pid": 2**22 + 17}))
    return root


@pytest.mark.slow  # its fixture trains three runs (~18 s); CI runs it
def test_report_writes_plots_and_a_self_contained_page(runs):
    proc = tfgrpo("report", str(runs / "done"), "--out", str(runs / "rep"))
    page = Path(proc.stdout.strip().splitlines()[-1])
    assert page == runs / "rep" / "report.html"
    for name in ("reward", "library", "usage", "eval"):
        assert (runs / "rep" / f"{name}.png").read_bytes().startswith(PNG)
    text = page.read_text()
    images = text.count('src="data:image/png;base64,')
    assert images == 4 and 'src="http' not in text and "<script" not in text
    b64 = text.split('src="data:image/png;base64,', 1)[1].split('"', 1)[0]
    assert base64.b64decode(b64).startswith(PNG)
    state = json.loads(sorted((runs / "done" / "library" / "versions").glob("*.json"))[-1].read_text())
    for e in state["experiences"]:
        assert e["id"] in text
    for needle in ("Most helpful", "Run config", "group_size", "Evaluations", "test-k2-n4-step8", "finished"):
        assert needle in text


@pytest.mark.slow  # its fixture trains three runs (~18 s); CI runs it
def test_report_on_a_damaged_run_renders_what_exists_and_lists_the_rest(runs, tmp_path):
    damaged = tmp_path / "damaged"
    shutil.copytree(runs / "done", damaged)
    (damaged / "steps.jsonl").unlink()
    shutil.rmtree(damaged / "library")
    proc = tfgrpo("report", str(damaged))
    assert "missing from the run" in proc.stderr and "steps.jsonl" in proc.stderr
    text = (damaged / "report" / "report.html").read_text()
    assert "Missing from this run directory" in text and "library/versions" in text and "steps.jsonl" in text
    assert text.count("data:image/png") == 1  # only the eval plot has its data
    assert tfgrpo("report", str(tmp_path / "nothing"), check=False).returncode == 2


@pytest.mark.slow  # its fixture trains three runs (~18 s); CI runs it
def test_runs_lists_status_cost_and_best_eval(runs):
    out = tfgrpo("runs", str(runs)).stdout
    rows = {line.split("│")[1].strip(): line for line in out.splitlines() if line.startswith("│")}
    assert "finished" in rows["done"] and "$0.0" in rows["done"] and "vs" in rows["done"]
    assert "stopped by budget" in rows["budget"]
    assert "interrupted" in rows["crashed"]  # status.json says running, its process is gone
    assert "8/8" in rows["done"]


# ---------------------------------------------------------------------------- real browser

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    return None


class DevTools:
    """Just enough of the Chrome DevTools protocol: send commands, collect events."""

    def __init__(self, ws_url: str):
        import websocket

        self.ws = websocket.create_connection(ws_url, timeout=30, suppress_origin=True)
        self.events: list[dict] = []
        self._id = 0

    def call(self, method: str, **params):
        self._id += 1
        self.ws.send(json.dumps({"id": self._id, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv())
            if msg.get("id") == self._id:
                if "error" in msg:
                    raise RuntimeError(msg["error"])
                return msg.get("result", {})
            self.events.append(msg)

    def wait_for(self, method: str, timeout: float = 30):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(e.get("method") == method for e in self.events):
                return
            self.events.append(json.loads(self.ws.recv()))
        raise TimeoutError(method)


@pytest.mark.slow
def test_report_loads_in_headless_chromium_without_errors_and_shows_its_plots(runs, tmp_path):
    websocket = pytest.importorskip("websocket", reason="websocket-client is needed to drive Chromium")
    assert websocket
    exe = _chromium()
    if exe is None:
        pytest.skip("no chromium on this machine (.ci/run installs Debian's chromium when it can)")
    page = Path(tfgrpo("report", str(runs / "done"), "--out", str(tmp_path / "rep")).stdout.strip().splitlines()[-1])
    profile = tempfile.mkdtemp(prefix="chromium-profile-")
    proc = subprocess.Popen(
        [
            exe,
            *CHROMIUM_FLAGS,
            f"--user-data-dir={profile}",
            "--remote-debugging-port=0",
            "--remote-allow-origins=*",
            "about:blank",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        port_file = Path(profile) / "DevToolsActivePort"
        deadline = time.monotonic() + 60
        while not (port_file.is_file() and port_file.read_text().count("\n") >= 1):
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.skip(f"chromium did not start (exit {proc.poll()})")
            time.sleep(0.2)
        port = port_file.read_text().splitlines()[0]
        import urllib.request

        targets = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10).read())
        ws_url = next(t["webSocketDebuggerUrl"] for t in targets if t.get("type") == "page")
        cdp = DevTools(ws_url)
        for domain in ("Page", "Runtime", "Log"):
            cdp.call(f"{domain}.enable")
        cdp.call("Page.navigate", url=page.as_uri())
        cdp.wait_for("Page.loadEventFired")
        check = cdp.call(
            "Runtime.evaluate",
            returnByValue=True,
            expression="""
            [...document.images].map(i => {
              const r = i.getBoundingClientRect(), s = getComputedStyle(i);
              return {ok: i.complete && i.naturalWidth > 0, w: r.width, h: r.height,
                      shown: s.display !== 'none' && s.visibility !== 'hidden' && s.opacity !== '0'};
            })""",
        )["result"]["value"]
        title = cdp.call("Runtime.evaluate", expression="document.title", returnByValue=True)["result"]["value"]
        errors = [
            e
            for e in cdp.events
            if e.get("method") == "Runtime.exceptionThrown"
            or (e.get("method") == "Runtime.consoleAPICalled" and e["params"].get("type") == "error")
            or (e.get("method") == "Log.entryAdded" and e["params"]["entry"].get("level") == "error")
        ]
        cdp.ws.close()
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
        shutil.rmtree(profile, ignore_errors=True)
    assert errors == []
    assert title.startswith("tfgrpo run")
    assert len(check) == 4
    for img in check:
        assert img["ok"] and img["shown"] and img["w"] > 100 and img["h"] > 100, img


def test_most_helpful_and_harmful_lessons_are_ranked_by_credit(tmp_path):
    from tfgrpo.report import write_report

    versions = tmp_path / "library" / "versions"
    versions.mkdir(parents=True)
    exps = [
        {
            "id": f"E{i}",
            "text": f"When case {i}, do thing {i}.",
            "status": "active",
            "created_step": 1,
            "updated_step": 1,
            "provenance": {"step": 1, "epoch": 1, "query_ids": ["q1"]},
            "stats": {"retrieved": 5, "cited": h + b, "helpful": h, "harmful": b},
        }
        for i, (h, b) in enumerate([(0, 4), (6, 0), (1, 1)], start=1)
    ]
    (versions / "000001.json").write_text(json.dumps({"version": 1, "step": 1, "experiences": exps}))
    text = write_report(tmp_path).html.read_text()
    helpful, harmful = text.split("Most helpful lessons", 1)[1].split("Most harmful lessons", 1)
    # only net-helpful lessons are "most helpful", only net-harmful ones "most harmful" (E3 is neither)
    assert "E2" in helpful and "E1" not in helpful and "E3" not in helpful
    harmful = harmful.split("</table>", 1)[0]
    assert "E1" in harmful and "E2" not in harmful and "E3" not in harmful
    assert "config.yaml" in text and "steps.jsonl" in text  # listed as missing


def test_parameter_mode_runs_are_listed_and_reported_as_such(tmp_path):
    pytest.importorskip("torch")
    from cli_helpers import tfgrpo

    from tfgrpo.report import load_run, run_status

    tfgrpo("grpo", "--task", "toy", "--model", "tiny", "--steps", "2", "--out", str(tmp_path / "p"), "--json")
    run = load_run(tmp_path / "p")
    assert run_status(run) == "finished" and run.models == ("tiny", None)
    assert run.missing == []  # no library or ops to miss in parameter mode
    listing = tfgrpo("runs", str(tmp_path)).stdout
    assert "tiny / -" in listing and "finished" in listing
