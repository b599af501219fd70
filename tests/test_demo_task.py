"""The built-in demo task: data, skills table, reward."""

from __future__ import annotations

import importlib.util
import json
from collections import Counter
from pathlib import Path

import pytest

from tfgrpo.sim.skills import SKILLS, SKILLS_BY_NAME, VAGUE_LESSON, demo_rows, find_row, skill_in_text
from tfgrpo.task_registry import load_task

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def demo():
    return load_task("demo")


def test_splits_and_skills(demo):
    assert len(demo.dataset) == 32 and len(demo.eval_samples()) == 32
    for samples in (demo.dataset, demo.eval_samples()):
        assert Counter(s.metadata["skill"] for s in samples) == {s.name: 4 for s in SKILLS}
    ids = [s.id for s in demo.dataset + demo.eval_samples()]
    assert len(set(ids)) == 64
    assert not {s.prompt for s in demo.dataset} & {s.prompt for s in demo.eval_samples()}


def test_data_file_is_what_the_generator_makes():
    spec = importlib.util.spec_from_file_location("make_demo", REPO / "tasks" / "data" / "make_demo.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    committed = [json.loads(line) for line in (REPO / "tasks" / "data" / "demo.jsonl").read_text().splitlines()]
    assert mod.build() == committed
    assert list(demo_rows()) == committed


def test_no_question_or_instruction_names_a_skill(demo):
    """Only an injected experience may tell the simulated policy the skill."""
    for s in demo.dataset + demo.eval_samples():
        assert skill_in_text(s.prompt) is None, s.prompt
    assert skill_in_text(demo.instructions) is None
    assert "Answer: <value>" in demo.instructions


def test_every_lesson_names_its_own_skill_only():
    for skill in SKILLS:
        for text in (skill.lesson, *skill.rewordings):
            assert text.startswith("When ") and "," in text
            assert skill.keyword in text.lower()
            assert [s.name for s in SKILLS if s.keyword in text.lower()] == [skill.name], text
        assert skill_in_text(skill.approach) is None
    assert skill_in_text(VAGUE_LESSON) is None
    assert set(SKILLS_BY_NAME) == {r["skill"] for r in demo_rows()}


def test_find_row_exact_and_wrapped():
    row = demo_rows()[5]
    assert find_row("  " + row["question"] + "\n") == row
    assert find_row(f"Problem:\n{row['question']}\nThink step by step.") == row
    assert find_row("What is the capital of France?") is None


@pytest.mark.parametrize(
    "completion,score",
    [
        ("It is 20.\nAnswer: 20", 1.0),
        ("Answer: 20.0", 1.0),
        ("**Answer:** 20 laps", 1.0),
        ("Answer: 19\nOn reflection...\nAnswer: 20", 1.0),
        ("Answer: 20\nWait, no.\nAnswer: 21", 0.0),
        ("The answer is 20.", 0.0),
        ("Answer: twenty", 0.0),
        ("", 0.0),
    ],
)
async def test_exact_answer_reward(demo, completion, score):
    sample = next(s for s in demo.dataset if s.answer == "20")
    assert await demo.rewards[0].score(sample, [completion]) == [score]


async def test_reward_tolerates_number_formatting(demo):
    big = next(s for s in demo.eval_samples() if s.answer == "2750")
    assert await demo.rewards[0].score(big, ["Answer: 2,750", "Answer: $2750.00", "Answer: 2705"]) == [1.0, 1.0, 0.0]
    neg = next(s for s in demo.eval_samples() if s.answer.startswith("-"))
    assert await demo.rewards[0].score(neg, [f"Answer: {neg.answer}", f"Answer: {neg.answer[1:]}"]) == [1.0, 0.0]
