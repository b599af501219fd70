"""``docqa``: questions over a small bundled corpus of invented facts, answered with the
``search`` tool (BM25). Reward: normalised exact match with the reference (default), an LLM
grader (``reward=grader``: the run's judge, or the model ``grader=`` names), or, with no reference at all, self-consistency
(``reward=consistency``; run it with ``--no-ground-truth``)."""

from __future__ import annotations

from pathlib import Path

from tfgrpo.errors import UserError
from tfgrpo.grading import answer_line, llm_grader, normalise, self_consistency
from tfgrpo.rewards import reward as as_reward
from tfgrpo.task_registry import Sample, Task, read_rows, task
from tfgrpo.tools import BM25Corpus, search_tool

HERE = Path(__file__).resolve().parent / "data"
INSTRUCTIONS = (
    "Answer the question about the document collection. You have a `search` tool over the collection. "
    "End with a final line of the form `Answer: <answer>` giving only the answer."
)


@as_reward
def exact_match(sample: Sample, completion: str) -> float:
    """1.0 when the final ``Answer:`` line equals the reference after normalisation."""
    given = normalise(answer_line(completion))
    return 1.0 if given is not None and given == normalise(str(sample.answer)) else 0.0


def samples(split: str, with_answers: bool) -> list[Sample]:
    return [
        Sample(id=r["id"], prompt=r["question"], answer=r["answer"] if with_answers else None)
        for r in read_rows(HERE / "docqa.jsonl")
        if r["split"] == split
    ]


@task
def docqa(reward: str = "exact", grader: str | None = None) -> Task:
    """Questions over the bundled corpus with the search tool: 6 train, 6 test."""
    if reward not in ("exact", "grader", "consistency"):
        raise UserError(f"task docqa: reward must be exact, grader or consistency, not {reward!r}")
    rewards = {
        "exact": lambda: exact_match,
        "grader": lambda: llm_grader(grader),
        "consistency": lambda: self_consistency(answer_line),
    }[reward]()
    corpus = BM25Corpus(read_rows(HERE / "docqa_corpus.jsonl"))
    return Task(
        dataset=samples("train", reward != "consistency"),
        eval_dataset=samples("test", True),
        rewards=[rewards],
        instructions=INSTRUCTIONS,
        tools=[search_tool(corpus)],
        max_tokens=512,
    )
