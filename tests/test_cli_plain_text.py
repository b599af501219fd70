"""Error lines give no advice a user cannot take: Python's own wording about huge numbers is
rewritten. (Lesson, pack and user text printed as written, with control characters escaped, is
the terminal-markup area of the hostile-input table, tests/hostile/test_hostile_terminal.py.)"""

import pytest


@pytest.mark.parametrize(
    "message, shown",
    [
        (
            "d.jsonl:1: invalid JSON: Exceeds the limit (4300 digits) for integer string conversion: value has 5000 digits; "
            "use sys.set_int_max_str_digits() to increase the limit",
            "d.jsonl:1: invalid JSON: a number of 5000 digits (at most 4300 allowed)",
        ),
        (
            "x: invalid JSON: Exceeds the limit (4300 digits) for integer string conversion: value has 5000 di",
            "x: invalid JSON: a number of 5000 digits (at most 4300 allowed)",
        ),
        (
            "m (Exceeds the limit (4300 digits) for integer string conversion)",
            "m (a number of more than 4300 digits (at most 4300 allowed))",
        ),
    ],
)
def test_errors_about_huge_numbers_give_no_advice_a_user_cannot_take(message, shown, capsys):
    from tfgrpo.cli.console import fail

    assert fail(message).exit_code == 2
    assert capsys.readouterr().err.strip() == f"error: {shown}"
