"""The leak guard catches lessons that carry a training problem, and only those."""

from experience_store import ExperienceOp
from tfgrpo.training_free.leak import LeakGuard
from tfgrpo.sim.skills import SKILLS
from tfgrpo.task_registry import load_task

PROMPTS = [
    "Maria buys 148 sweets and shares them equally among 12 children. How many sweets are left over?",
    "A runner covers 5 kilometers on a track whose lap is 250 meters. How many laps does she run?",
]


def test_copied_problem_text_is_caught():
    g = LeakGuard(PROMPTS)
    why = g.check("When a runner covers 5 kilometers on a track whose lap is short, count laps.")
    assert why and why.startswith("copies training problem text")


def test_numbers_and_names_of_one_problem_are_caught():
    g = LeakGuard(PROMPTS)
    assert "148" in g.check("When Maria shares 148 things, take the remainder.")
    assert g.check("When 148 items are shared among 12 people, take the remainder.")


def test_general_lessons_pass():
    g = LeakGuard(PROMPTS)
    assert g.check("When things are shared equally, the answer is the remainder of the division.") is None
    assert g.check("When units differ, convert first (1 km = 1000 m, 1 m = 100 cm).") is None  # general constants
    assert g.check("When a track lap is 250 meters, divide the distance by it.") is None  # one detail is not a copy
    # No lesson the simulated judge writes trips the guard on the demo's training problems.
    demo = LeakGuard(s.user_text() for s in load_task("demo").dataset)
    assert all(demo.check(t) is None for s in SKILLS for t in (s.lesson, *s.rewordings))


def test_screen_rejects_by_default_and_flags_on_request():
    g = LeakGuard(PROMPTS)
    ops = [
        ExperienceOp(op="ADD", text="When Maria has 148 sweets for 12 children, answer 4."),
        ExperienceOp(op="ADD", text="When sharing equally, report the remainder."),
        ExperienceOp(op="DELETE", id="E1"),
    ]
    keep, records = g.screen(ops, step=3, mode="reject")
    assert [o.text for o in keep] == [ops[1].text, ""] and len(records) == 1
    assert records[0].status == "rejected" and records[0].error.startswith("leak:") and records[0].step == 3
    keep, records = g.screen(ops, step=3, mode="flag")
    assert keep == ops and records[0].error.startswith("leak flagged (kept)")
    assert g.screen(ops, step=3, mode="off") == (ops, [])
