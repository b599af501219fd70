"""Lesson, pack and user text is printed as written (never read as rich markup) with control
characters escaped (issue 14 item 10): a lesson holding ``[/INST]`` cannot crash ``library
show``, and ``\\x1b[2J`` or an OSC title sequence never reaches the terminal."""

import pytest

from cli_helpers import ENV, tfgrpo
from experience_store import Experience, ExperienceOp, Library, Pack

HOSTILE = "When [/INST] appears, [bold red]shout[/] \x1b[2J\x1b]0;pwned\x07 and \u202eflip\u2028 [link=http://x]y"
SHOWN = "When [/INST] appears, [bold red]shout[/] \\x1b[2J\\x1b]0;pwned\\x07 and \\u202eflip\\u2028 [link=http://x]y"
WIDE = {**ENV, "COLUMNS": "1000"}  # one table row per lesson, so the whole text is on one line


def printed(proc) -> str:
    return proc.stdout + proc.stderr


def assert_safe(out: str) -> None:
    assert "\x1b" not in out and "\x07" not in out and "\u202e" not in out and "\u2028" not in out


@pytest.fixture
def run(tmp_path):
    lib = Library(tmp_path / "run" / "library")
    lib.apply([ExperienceOp(op="ADD", text=HOSTILE)], step=1)
    lib.apply([ExperienceOp(op="UPDATE", id="E1", text=HOSTILE + " [/]")], step=2)
    return tmp_path / "run"


def test_library_show_prints_lessons_as_written(run):
    out = printed(tfgrpo("library", "show", "--retired", str(run), env=WIDE))
    assert_safe(out)
    assert SHOWN in out


def test_library_diff_prints_lessons_as_written(run):
    out = printed(tfgrpo("library", "diff", f"{run}@1", f"{run}@2", env=WIDE))
    assert_safe(out)
    assert SHOWN in out and SHOWN + " [/]" in out


@pytest.mark.slow
def test_pack_commands_print_pack_text_as_written(tmp_path):
    pack = tmp_path / "p"
    Pack.build([Experience(id="E1", text=HOSTILE)], name="[red]x[/] \x1b]8;;http://evil\x07", task="[/]").write(pack)
    other = tmp_path / "q"
    Pack.build([Experience(id="E1", text="When a, do b.")]).write(other)
    outs = [printed(tfgrpo("pack", "show", str(pack), env=WIDE)),
            printed(tfgrpo("pack", "show", str(pack), "--query", "INST", env=WIDE)),
            printed(tfgrpo("pack", "diff", str(other), str(pack), env=WIDE)),
            printed(tfgrpo("pack", "verify", str(pack), env=WIDE))]
    for out in outs:
        assert_safe(out)
    assert SHOWN in outs[0] and "[red]x[/] \\x1b]8;;http://evil\\x07" in outs[0] and SHOWN in outs[2]


def test_an_error_naming_hostile_input_is_one_plain_line(tmp_path):
    proc = tfgrpo("library", "show", str(tmp_path / "[/INST]\x1b[2J"), check=False, env=WIDE)
    assert proc.returncode == 2
    assert_safe(proc.stderr)
    assert proc.stderr.strip().startswith("error:") and "[/INST]\\x1b[2J" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_runs_lists_hostile_names_as_written_and_a_damaged_run_beside_the_others(tmp_path):
    for name in ("a-[red]x[not-a-tag", "b-damaged"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "config.yaml").write_text('task: "[bold]x[/] \\e[2J"\n')
    (tmp_path / "b-damaged" / "steps.jsonl").write_text('{"step": 1, "half\n{"step": 2}\n')
    out = printed(tfgrpo("runs", str(tmp_path), env=WIDE))
    assert_safe(out)
    assert "a-[red]x[not-a-tag" in out and "[bold]x[/] \\x1b[2J" in out
    assert "b-damaged" in out and "unreadable:" in out


@pytest.mark.parametrize("message, shown", [
    ("d.jsonl:1: invalid JSON: Exceeds the limit (4300 digits) for integer string conversion: value has 5000 digits; "
     "use sys.set_int_max_str_digits() to increase the limit", "d.jsonl:1: invalid JSON: a number of 5000 digits (at most 4300 allowed)"),
    ("x: invalid JSON: Exceeds the limit (4300 digits) for integer string conversion: value has 5000 di",
     "x: invalid JSON: a number of 5000 digits (at most 4300 allowed)"),
    ("m (Exceeds the limit (4300 digits) for integer string conversion)", "m (a number of more than 4300 digits (at most 4300 allowed))"),
])
def test_errors_about_huge_numbers_give_no_advice_a_user_cannot_take(message, shown, capsys):
    from tfgrpo.cli.console import fail

    assert fail(message).exit_code == 2
    assert capsys.readouterr().err.strip() == f"error: {shown}"


def test_a_huge_number_in_a_dataset_is_named_not_blamed_on_python(tmp_path):
    data = tmp_path / "d.jsonl"
    data.write_text('{"problem": "x", "answer": ' + "1" * 5000 + "}\n")
    proc = tfgrpo("train", "--task", "math", "--data", str(data), "--model", "sim", "--out", str(tmp_path / "r"), check=False)
    assert proc.returncode == 2 and "a number of 5000 digits (at most 4300 allowed)" in proc.stderr
    assert "set_int_max_str_digits" not in proc.stderr
