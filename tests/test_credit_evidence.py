"""Credit that measures the lesson, end to end on the honest simulator (issue 11, defect 1):
a run seeded with one harmful lesson and helpful ones for the other skills, the judge kept
silent so that only credit can change the library. With --prune-harmful the harmful lesson is
retired and no helpful one is, including those of the hard skills (accuracy 0.2 even with the
right lesson), which the old credit (harmful = cited in an answer with negative advantage)
retired."""

from __future__ import annotations

import asyncio

import pytest

from experience_store import ExperienceOp, Library
from tfgrpo.llm.endpoints import open_models
from tfgrpo.sim.skills import SKILLS, SKILLS_BY_NAME
from tfgrpo.task_registry import load_task
from tfgrpo.rundir import RunDir
from tfgrpo.training_free.config import LibraryConfig, RunConfig, SamplingConfig
from tfgrpo.training_free.loop import train_loop
from tfgrpo.training_free.prompting import Prompts

HARMED = "percentage"


def seeded_run(tmp_path, prune_harmful: bool) -> dict[str, str]:
    """{lesson text: status} after the run."""
    silent = tmp_path / "prompts"
    silent.mkdir()
    (silent / "compare.j2").write_text("There is nothing to compare this time.")  # the judge sees no attempts
    cfg = RunConfig(
        task="demo",
        epochs=3,
        sampling=SamplingConfig(group_size=8),
        cache=False,
        prompts_dir=str(silent),
        policy={"model": "sim"},
        library=LibraryConfig(prune_harmful=prune_harmful),
        judge={"check": False},  # the silenced judge would fail it, as it should
    )
    rd = RunDir(tmp_path / "run")
    lessons = [s.harmful if s.name == HARMED else s.lesson for s in SKILLS]
    Library(rd.library_path).apply([ExperienceOp(op="ADD", text=t) for t in lessons], step=0)
    with open_models(cfg.policy, cfg.judge) as models:
        asyncio.run(train_loop(cfg, load_task("demo"), models, rd, prompts=Prompts(silent)))
    return {e.text: e.status for e in Library(rd.library_path).state.experiences}


@pytest.mark.slow
def test_harmful_lesson_is_retired_and_helpful_ones_kept_even_on_hard_problems(tmp_path):
    status = seeded_run(tmp_path, prune_harmful=True)
    assert status[SKILLS_BY_NAME[HARMED].harmful] == "retired"
    helpful = {s.lesson: s for s in SKILLS if s.name != HARMED}
    assert any(s.hard for s in helpful.values())
    assert [s.name for t, s in helpful.items() if status[t] != "active"] == []


@pytest.mark.slow
def test_without_prune_harmful_nothing_is_retired(tmp_path):
    assert set(seeded_run(tmp_path, prune_harmful=False).values()) == {"active"}
