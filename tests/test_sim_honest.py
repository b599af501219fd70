"""The honest simulator (issue 11, defect 11): the policy's accuracy follows the ADVICE of the
lessons in its context, and the judge derives lessons only from what its prompt shows."""

from __future__ import annotations

import asyncio
from collections import Counter

import pytest

from test_sim import GroupComparison, client, judge, user
from tfgrpo.sim import start_sim_server
from tfgrpo.sim.policy_replies import HARD_SKILLED_P, SKILLED_P, expected_accuracy
from tfgrpo.sim.skills import (
    ALL_SKILLS,
    SKILLS,
    SKILLS_BY_NAME,
    VAGUE_LESSON,
    advice,
    demo_rows,
    lesson_lines,
    skill_in_text,
)
from tfgrpo.task_registry import load_task

ROWS = demo_rows()


@pytest.fixture(scope="module")
def sim():
    with start_sim_server(seed=0) as server:
        yield server


async def accuracy(server, system: str, rows, n: int = 20) -> float:
    demo = load_task("demo")
    samples = {s.prompt: s for s in demo.dataset + demo.eval_samples()}
    messages = lambda q: ([{"role": "system", "content": system}] if system else []) + user(q)  # noqa: E731
    c = client(server)
    answers = await asyncio.gather(
        *(c.chat.completions.create(model="sim-policy", messages=messages(r["question"]), n=n) for r in rows)
    )
    scores = []
    for r, resp in zip(rows, answers):
        scores += await demo.rewards[0].score(samples[r["question"]], [ch.message.content for ch in resp.choices])
    return sum(scores) / len(scores)


def block(lessons: list[str]) -> str:
    return "<experiences>\n" + "\n".join(f"[E{i}] {t}" for i, t in enumerate(lessons, 1)) + "\n</experiences>"


def test_every_skill_has_right_and_harmful_advice_and_names_only_itself():
    for skill in ALL_SKILLS:
        for text in (skill.lesson, *skill.rewordings):
            assert advice(text, skill) == "right", text
        assert advice(skill.harmful, skill) == "harmful", skill.harmful
        for other in ALL_SKILLS:
            if other is not skill:
                assert advice(skill.lesson, other) is None and advice(skill.harmful, other) is None
        assert skill_in_text(skill.approach) is None and skill_in_text(skill.mistake) is None
    assert any(s.hard for s in SKILLS) and not all(s.hard for s in SKILLS)


def test_lesson_lines_read_ids_in_any_case_and_plain_block_lines():
    text = "Intro\n[E1] When a, b.\n - [e2] When c, d.\n<experiences>\nWhen e, f.\n</experiences>"
    assert lesson_lines(text) == [("E1", "When a, b."), ("E2", "When c, d."), (None, "When e, f.")]


@pytest.mark.parametrize("skill_name", ["percentage", "clock"])
async def test_accuracy_depends_on_the_advice_not_on_the_keyword(sim, skill_name):
    """Right advice raises accuracy, harmful advice (naming the same keyword) lowers it, other
    lessons cost a little; a hard skill stays near HARD_SKILLED_P even with the right lesson."""
    skill = SKILLS_BY_NAME[skill_name]
    rows = [r for r in ROWS if r["skill"] == skill_name]
    others = [s.lesson for s in SKILLS if s is not skill]
    arms = {
        "none": [],
        "right": [skill.lesson],
        "harmful": [skill.harmful],
        "others": others,
        "right+others": [skill.lesson, *others],
    }
    got = {name: await accuracy(sim, block(lessons), rows) for name, lessons in arms.items()}
    for name, lessons in arms.items():
        assert abs(got[name] - expected_accuracy(skill, lessons)) < 0.09, (name, got)
    assert got["harmful"] < got["none"] < got["right"]
    assert expected_accuracy(skill, others) < expected_accuracy(skill, [])
    assert expected_accuracy(skill, [skill.lesson]) <= (HARD_SKILLED_P if skill.hard else SKILLED_P)


async def test_policy_cites_the_lessons_it_followed(sim):
    skill = SKILLS_BY_NAME["remainder"]
    row = next(r for r in ROWS if r["skill"] == "remainder")
    system = block([SKILLS_BY_NAME["rounding"].lesson, skill.lesson])
    r = await client(sim).chat.completions.create(
        model="sim-policy", messages=[{"role": "system", "content": system}, *user(row["question"])], n=40
    )
    texts = [c.message.content for c in r.choices]
    cited = sum("[E2]" in t for t in texts)
    assert 24 <= cited <= 39  # each answer follows (and cites) the relevant lesson with p 0.8
    assert sum("[E1]" in t for t in texts) <= 8  # the unrelated one only now and then


# ---------------------------------------------------------------------------------- judge


def attempts_prompt(
    attempts: list[tuple[str | None, str]], library: list[str] = (), reference: str | None = None
) -> str:
    lib = "\n".join(f"[E{i}] {t}" for i, t in enumerate(library, 1))
    shown = "\n".join(
        f'<attempt index="{i}"' + (f' reward="{r}"' if r is not None else "") + f">\n{t}\n</attempt>"
        for i, (r, t) in enumerate(attempts, 1)
    )
    ref = f"<reference_answer>{reference}</reference_answer>\n" if reference else ""
    return f"<problem>\nSome problem.\n</problem>\n{ref}{shown}\n<library>\n{lib}\n</library>"


def right(skill, answer="10"):
    return f"The key step is to {skill.approach}. Working through it carefully gives {answer}.\nAnswer: {answer}"


def wrong(skill, answer="11"):
    return f"{skill.mistake}. That gives {answer}.\nAnswer: {answer}"


async def ops_over_seeds(sim, prompt: str, seeds: int = 30) -> list[dict]:
    c = client(sim)
    outs = await asyncio.gather(*(judge(c, "group_comparison", GroupComparison, prompt, seed=s) for s in range(seeds)))
    return [op for o in outs for op in o["ops"]]


async def test_judge_learns_the_difference_between_better_and_worse(sim):
    skill = SKILLS_BY_NAME["fence_post"]
    prompt = attempts_prompt([("1.0", right(skill)), ("0.0", wrong(skill)), ("0.0", wrong(skill, "9"))], [VAGUE_LESSON])
    ops = await ops_over_seeds(sim, prompt)
    adds = [op for op in ops if op["op"] == "ADD" and advice(op["text"], skill) == "right"]
    assert len(adds) >= 22 and all(op["text"] in (skill.lesson, *skill.rewordings, VAGUE_LESSON) for op in ops)


async def test_judge_without_usable_difference_says_none(sim):
    """No attempts, one attempt, equal rewards, or attempts that differ only by a slip: NONE
    (the oracle judge wrote the problem's lesson in every one of these cases)."""
    skill = SKILLS_BY_NAME["percentage"]
    slip = f"First I {skill.approach}, but I slip in the arithmetic. That gives 3.\nAnswer: 3"
    for attempts in (
        [],
        [("0.0", wrong(skill))],
        [("1.0", right(skill)), ("1.0", right(skill))],
        [("1.0", right(skill)), ("0.0", slip)],
    ):
        ops = await ops_over_seeds(sim, attempts_prompt(attempts), seeds=10)
        assert {op["op"] for op in ops} == {"NONE"}, attempts


async def test_judge_keeps_or_rewords_a_lesson_the_library_has(sim):
    skill = SKILLS_BY_NAME["average"]
    prompt = attempts_prompt([("1.0", right(skill)), ("0.0", wrong(skill))], ["When tired, rest.", skill.lesson])
    kinds = Counter(op["op"] for op in await ops_over_seeds(sim, prompt, seeds=60))
    assert kinds["UPDATE"] >= 8 and kinds["NONE"] >= 25 and kinds["ADD"] <= 15


async def test_blind_judge_votes_and_can_be_misled(sim):
    """Without rewards or reference the judge trusts the majority answer: when the majority is
    wrong it learns the mistake, a harmful lesson (what the ground truth is for)."""
    skill = SKILLS_BY_NAME["remainder"]
    majority_wrong = attempts_prompt([(None, right(skill, "4")), (None, wrong(skill, "7")), (None, wrong(skill, "7"))])
    ops = [
        op
        for op in await ops_over_seeds(sim, majority_wrong, seeds=10)
        if op["op"] == "ADD" and op["text"] != VAGUE_LESSON
    ]
    assert ops and all(advice(op["text"], skill) == "harmful" for op in ops)
    with_reference = attempts_prompt(
        [(None, right(skill, "4")), (None, wrong(skill, "7")), (None, wrong(skill, "7"))], reference="4"
    )
    ops = [
        op
        for op in await ops_over_seeds(sim, with_reference, seeds=10)
        if op["op"] == "ADD" and op["text"] != VAGUE_LESSON
    ]
    assert ops and all(advice(op["text"], skill) == "right" for op in ops)
