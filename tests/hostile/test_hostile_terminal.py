"""Area 10: lesson, pack and user text is printed as written (never read as rich markup) with
control characters escaped: a lesson holding ``[/INST]`` cannot crash ``library show``, and
``\\x1b[2J`` or an OSC title sequence never reaches the terminal. The commands run as a user
runs them (a subprocess), since what matters is what reaches the terminal."""

from __future__ import annotations

import pytest
from hostile_rows import Case, rows

from cli_helpers import ENV, tfgrpo
from experience_store import Experience, ExperienceOp, Library, Pack

HOSTILE = "When [/INST] appears, [bold red]shout[/] \x1b[2J\x1b]0;pwned\x07 and \u202eflip\u2028 [link=http://x]y"
SHOWN = "When [/INST] appears, [bold red]shout[/] \\x1b[2J\\x1b]0;pwned\\x07 and \\u202eflip\\u2028 [link=http://x]y"
WIDE = {**ENV, "COLUMNS": "1000"}  # one table row per lesson, so the whole text is on one line


def printed(*args: str) -> str:
    proc = tfgrpo(*args, env=WIDE, check=False)
    out = proc.stdout + proc.stderr
    assert "\x1b" not in out and "\x07" not in out and "\u202e" not in out and "\u2028" not in out, out
    assert "Traceback" not in out, out
    return out


def hostile_run(ctx):
    lib = Library(ctx.tmp / "run" / "library")
    lib.apply([ExperienceOp(op="ADD", text=HOSTILE)], step=1)
    lib.apply([ExperienceOp(op="UPDATE", id="E1", text=HOSTILE + " [/]")], step=2)
    return ctx.tmp / "run"


def library_show(ctx) -> None:
    assert SHOWN in printed("library", "show", "--retired", str(hostile_run(ctx)))


def library_diff(ctx) -> None:
    run = hostile_run(ctx)
    out = printed("library", "diff", f"{run}@1", f"{run}@2")
    assert SHOWN in out and SHOWN + " [/]" in out


def hostile_pack(ctx):
    pack = ctx.tmp / "p"
    Pack.build([Experience(id="E1", text=HOSTILE)], name="[red]x[/] \x1b]8;;http://evil\x07", task="[/]").write(pack)
    return pack


def pack_show(ctx, *extra: str) -> None:
    out = printed("pack", "show", str(hostile_pack(ctx)), *extra)
    assert SHOWN in out
    if not extra:
        assert "[red]x[/] \\x1b]8;;http://evil\\x07" in out


def pack_diff(ctx) -> None:
    other = ctx.tmp / "q"
    Pack.build([Experience(id="E1", text="When a, do b.")]).write(other)
    assert SHOWN in printed("pack", "diff", str(other), str(hostile_pack(ctx)))


def pack_verify(ctx) -> None:
    printed("pack", "verify", str(hostile_pack(ctx)))


def error_naming_hostile_input(ctx) -> None:
    proc = tfgrpo("library", "show", str(ctx.tmp / "[/INST]\x1b[2J"), check=False, env=WIDE)
    assert proc.returncode == 2
    assert "\x1b" not in proc.stderr and proc.stderr.strip().startswith("error:") and "[/INST]\\x1b[2J" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def runs_listing(ctx) -> None:
    for name in ("a-[red]x[not-a-tag", "b-damaged"):
        (ctx.tmp / name).mkdir()
        (ctx.tmp / name / "config.yaml").write_text('task: "[bold]x[/] \\e[2J"\n')
    (ctx.tmp / "b-damaged" / "steps.jsonl").write_text('{"step": 1, "half\n{"step": 2}\n')
    out = printed("runs", str(ctx.tmp))
    assert "a-[red]x[not-a-tag" in out and "[bold]x[/] \\x1b[2J" in out
    assert "b-damaged" in out and "unreadable:" in out


M, PRINTED = "10 terminal markup", "printed as written, escapes shown escaped"
CASES = [
    Case(M, "[/INST], rich tags, CSI, OSC, RLO, U+2028 in a lesson: library show", PRINTED, library_show),
    Case(M, "the same lesson: library diff", PRINTED, library_diff),
    Case(M, "the same lesson, markup and OSC 8 in the pack name: pack show", PRINTED, pack_show, slow=True),
    Case(M, "the same lesson: pack show --query", PRINTED, pack_show, ("--query", "INST"), slow=True),
    Case(M, "the same lesson: pack diff", PRINTED, pack_diff, slow=True),
    Case(M, "the same lesson: pack verify", PRINTED, pack_verify, slow=True),
    Case(M, "[/INST] and CSI in a path named in an error", "one plain error line", error_naming_hostile_input),
    Case(
        M,
        "markup in run names and configs, a damaged run: runs",
        "listed as written, the damaged run beside the others",
        runs_listing,
    ),
]


@pytest.mark.parametrize("case", rows(CASES))
def test_hostile_terminal(case, ctx):
    case.run(ctx)
