"""Issue 23, items 7 and 11 beyond the first fixes: a notice (a warning line that may quote a
server) is printed with its escape sequences escaped; a Chroma server on this machine is reached
without the environment's proxy (this held already: chromadb's client does not send loopback
through it)."""

from __future__ import annotations

import io

import pytest
from hostile_rows import Case, rows
from rich.console import Console

from cli_helpers import ENV, tfgrpo
from tfgrpo.cli import console

ESCAPES = "\x1b]0;pwned\x07\x1b[2J\x1bc"


def notice_escaped(ctx) -> None:
    out = io.StringIO()
    ctx.monkeypatch.setattr(console, "err_console", Console(file=out, force_terminal=True, width=200))
    console.notice(f"warning: the server said {ESCAPES}")
    with console.progress_hooks(True) as hooks:
        hooks.on_notice(f"warning: again {ESCAPES}")
    text = out.getvalue()
    assert "\x1b]0;" not in text and "\x1b[2J" not in text and "\x1bc" not in text, repr(text)
    assert "\\x1b]0;pwned\\x07" in text


def store_without_proxy(ctx) -> None:
    store = ctx.request.getfixturevalue("chroma_server")
    env = {
        **ENV,
        "HTTP_PROXY": "http://127.0.0.1:9",
        "http_proxy": "http://127.0.0.1:9",
        "ALL_PROXY": "http://127.0.0.1:9",
    }
    env.pop("NO_PROXY", None), env.pop("no_proxy", None)
    proc = tfgrpo("train", "--task", "demo", "--model", "sim", "--epochs", "1", "--limit", "2", "--batch-size", "2",
                  "--store", store, "--out", str(ctx.tmp / "run"), "-q", check=False, env=env)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]


CASES = [
    Case("r3 11 server text", "a notice quoting escape sequences (title, clear screen, reset)",
         "printed escaped, as error lines are", notice_escaped),
    Case("r3 07 loopback", "--store on 127.0.0.1 with HTTP_PROXY/ALL_PROXY at a dead port",
         "the run reaches its Chroma server", store_without_proxy, slow=True),
]  # fmt: skip


@pytest.mark.parametrize("case", rows(CASES))
def test_hostile_outside_text(case, ctx):
    case.run(ctx)
