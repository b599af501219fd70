"""The judge is checked before it is paid: two small comparison groups with a plain, known
difference (a right and a wrong attempt, rewards shown) go to the run's judge before step 1. A
judge that writes no usable lesson for either (no reply that parses, or only NONE, or a lesson
that copies the schema's placeholder) stops the run with one line, before any rollout is sent."""

from __future__ import annotations

import asyncio

from experience_store import Injection
from tfgrpo.errors import UserError
from tfgrpo.task_registry import Sample
from tfgrpo.training_free.judge import Attempt, GroupJudgement, Judge

CANNED = [
    (
        Sample(id="judge-check-1", answer="6",
               prompt="A straight fence is 20 m long with a post every 4 m, including both ends. How many posts are there?"),
        [Attempt(1, "20 / 4 = 5 gaps. I count the gaps, then add one for the post at the start: 5 + 1 = 6.\nAnswer: 6", 1.0),
         Attempt(2, "I divide the length by the gap and count that many: 20 / 4 = 5.\nAnswer: 5", 0.0)],
    ),
    (
        Sample(id="judge-check-2", answer="180",
               prompt="A rope is 3 m long and a piece of 120 cm is cut off. How many centimetres of rope are left?"),
        [Attempt(1, "I convert everything to the unit asked for first: 3 m = 300 cm, and 300 - 120 = 180.\nAnswer: 180", 1.0),
         Attempt(2, "I use the numbers as they are given, whatever their units: 120 - 3 = 117.\nAnswer: 117", 0.0)],
    ),
]  # fmt: skip
PLACEHOLDERS = ("<condition>", "<strategy>")
CHECK_TOKENS = 1024


def usable(judgement: GroupJudgement) -> bool:
    """A judgement holding at least one lesson with real text (not the schema's placeholder)."""
    return any(
        op.op in ("ADD", "UPDATE") and len(op.text.split()) >= 5 and not any(p in op.text for p in PLACEHOLDERS)
        for op in judgement.proposals
    )


async def check_judge(judge: Judge, name: str | None) -> list[GroupJudgement]:
    """Raise a UserError when the judge gives no usable lesson on the canned groups."""
    empty = Injection(text="", ids=[], tokens=0, mode="all")
    # the canned groups' rewards are known: shown even to a judge that judges the run blind
    # at most CHECK_TOKENS a reply: a capable judge's reasoning and one lesson fit, a rambling one is cut off cheaply
    cfg = judge.cfg.model_copy(update={"ground_truth": True, "max_tokens": judge.cfg.max_tokens or CHECK_TOKENS})
    seeing = Judge(judge.client, judge.prompts, cfg, judge.context)
    out = list(await asyncio.gather(*(seeing.judge_group(sample, attempts, empty) for sample, attempts in CANNED)))
    if any(usable(j) for j in out):
        return out
    if all((j.error or "").startswith("request failed") for j in out):
        raise UserError(
            f"every request to the judge {name} failed (e.g. {(out[0].error or '')[:200]}); nothing was "
            "sent to the policy: check --judge (default: the --model), --judge-api-base and the server"
        )
    failed = sum(1 for j in out if j.error)
    why = (
        f"{failed} of {len(out)} replies were unusable (e.g. {(out[0].error or '')[:160]})"
        if failed
        else f"it proposed no lesson for {len(out)} group{'s' if len(out) > 1 else ''} with a plain difference"
    )
    raise UserError(
        f"the judge {name} failed the check before step 1: {why}; nothing was sent to the policy. A judge must write "
        "lessons: pass a more capable --judge (or raise --judge-max-tokens if its replies are cut off); "
        "--no-judge-check skips this check"
    )
