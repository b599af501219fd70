"""Rewards for runs without reference answers: self-consistency and an LLM grader.

* :func:`self_consistency` scores each answer by agreement with its group's majority answer
  (1.0 in the majority, 0.0 otherwise; tied leaders score 0.5), as in the method's
  no-ground-truth ablation. Pair it with ``--no-ground-truth`` so the judge sees no labels.
* :func:`llm_grader` asks a grader model whether an answer is right (against the reference
  answer when the sample has one) and scores 1.0 or 0.0.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from typing import Any, Callable

from pydantic import BaseModel, ConfigDict, Field

from tfgrpo.errors import UserError
from tfgrpo.rewards import Reward, group_reward, reward

Extract = Callable[[str], "str | None"]
_ANSWER_LINE = re.compile(r"^\W*answer\W*:\s*(.+?)\s*$", re.IGNORECASE | re.MULTILINE)


def answer_line(text: str | None) -> str | None:
    """The value of the last ``Answer: <value>`` line."""
    found = _ANSWER_LINE.findall(text or "")
    return found[-1].strip().strip("*`").strip() if found else None


def normalise(answer: str | None) -> str | None:
    """Lower case, single spaces, no surrounding punctuation or articles: for exact-match checks."""
    if not answer:
        return None
    text = re.sub(r"[^\w\s.-]", " ", answer.lower())
    words = [w for w in text.split() if w not in ("the", "a", "an")]
    return " ".join(words).strip(" .") or None


def self_consistency(extract: Extract, *, name: str = "self_consistency", weight: float = 1.0) -> Reward:
    """A group reward: agreement of each answer (as ``extract`` reads it) with the group's majority."""

    def agree(sample: Any, completions: list[str]) -> list[float]:
        answers = [normalise(extract(c)) for c in completions]
        counts = Counter(a for a in answers if a)
        if not counts:
            return [0.0] * len(completions)
        top = max(counts.values())
        leaders = {a for a, n in counts.items() if n == top}
        share = 1.0 if len(leaders) == 1 else 0.5
        return [share if a in leaders else 0.0 for a in answers]

    return group_reward(agree, name=name, weight=weight)


class Grade(BaseModel):
    model_config = ConfigDict(json_schema_extra={"additionalProperties": False})  # a strict schema (structured.py)

    reason: str = Field(description="One sentence: why the answer is right or wrong")
    correct: bool


GRADE_PROMPT = """Grade the final answer of an agent.

<problem>
{problem}
</problem>
{reference}
<attempt>
{attempt}
</attempt>

Is the attempt's final answer correct? Reply with a JSON object matching this schema:
{schema}"""


def llm_grader(
    model: str | None = None,
    *,
    api_base: str | None = None,
    api_key_env: str | None = None,
    name: str = "llm_grader",
    weight: float = 1.0,
) -> Reward:
    """A reward asking a model whether an answer is right: the run's judge, or ``model`` (a
    litellm name) reached through the run's client stack (its cache, retries, usage and budget)."""
    from tfgrpo.llm.endpoints import active_models
    from tfgrpo.training_free.structured import ask_structured, schema_for

    def client() -> Any:
        models = active_models()
        if models is None:
            raise UserError(f"reward {name}: an LLM grader runs inside tfgrpo train or eval (it asks the run's models)")
        return (
            (models.judge or models.policy)
            if model is None
            else models.client_for(model, "grader", api_base=api_base, api_key_env=api_key_env)
        )

    async def grade(sample: Any, completion: str) -> float | None:
        reference = f"\n<reference_answer>{sample.answer}</reference_answer>\n" if sample.answer is not None else ""
        user = GRADE_PROMPT.format(
            problem=sample.user_text(), reference=reference, attempt=completion, schema=json.dumps(schema_for(Grade))
        )
        out = await ask_structured(
            client(), [{"role": "user", "content": user}], Grade, "grade", temperature=0.0, max_tokens=256
        )
        return (1.0 if out.value.correct else 0.0) if out.ok and out.value is not None else None

    return reward(grade, name=name, weight=weight)
