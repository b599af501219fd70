"""Leak guard: a lesson must teach a strategy, not carry a training problem into the prompt.

A lesson leaks when it shares a run of ``NGRAM`` words with a training prompt, or when it
holds ``ITEMS`` or more specific details of one training prompt: numbers (other than single
digits and powers of ten, which lessons use as general constants: "1 m = 100 cm") and names
(capitalised words of the prompt that the lesson capitalises inside a sentence). The trainer checks every ADD, UPDATE and MERGE text
after consolidation; with ``--leak-guard reject`` (default) a leaking op is rejected and
logged in ops.jsonl, with ``flag`` it is applied and logged, with ``off`` nothing is checked.
"""

from __future__ import annotations

import re
from collections import defaultdict
from typing import Iterable

from experience_store import ExperienceOp, OpResult

NGRAM = 8
ITEMS = 2

_WORD = re.compile(r"[a-z0-9]+(?:['.][a-z0-9]+)*")
_NUMBER = re.compile(r"(?<![\w.])\d[\d,]*(?:\.\d+)?")
_CAPITALISED = re.compile(r"\b[A-Z][a-z]{2,}\b")
_NAME = re.compile(r"(?<![.!?]\s)(?<!^)\b[A-Z][a-z]{2,}\b")  # capitalised inside a sentence


def _words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def _ngrams(words: list[str], n: int) -> set[tuple[str, ...]]:
    return {tuple(words[i : i + n]) for i in range(len(words) - n + 1)}


def _details(text: str, names: re.Pattern[str] = _NAME) -> set[str]:
    """Specific numbers and names of a text."""
    nums = {m.group().replace(",", "").rstrip(".") for m in _NUMBER.finditer(text)}
    specific = {x for x in nums if len(x.replace(".", "").lstrip("0")) > 1 and not re.fullmatch(r"10*", x)}
    return specific | {m.group() for m in names.finditer(text)}


class LeakGuard:
    """Indexes the training prompts once; ``check`` says why a text leaks, or None."""

    def __init__(self, prompts: Iterable[str], *, ngram: int = NGRAM, items: int = ITEMS):
        self.ngram, self.items = ngram, items
        self._ngrams: set[tuple[str, ...]] = set()
        self._holders: dict[str, set[int]] = defaultdict(set)  # detail -> prompts holding it
        for i, p in enumerate(prompts):
            self._ngrams |= _ngrams(_words(p), ngram)
            for d in _details(p, _CAPITALISED):  # a prompt's first word may be a name ("Maria buys ...")
                self._holders[d].add(i)

    def check(self, text: str) -> str | None:
        shared = _ngrams(_words(text), self.ngram) & self._ngrams
        if shared:
            return f"copies training problem text: {' '.join(min(shared))!r}"
        per_prompt: dict[int, list[str]] = defaultdict(list)
        for d in sorted(_details(text)):
            for i in self._holders.get(d, ()):
                per_prompt[i].append(d)
        worst = max(per_prompt.values(), key=len, default=[])
        if len(worst) >= self.items:
            return f"holds details of a training problem: {', '.join(worst)}"
        return None

    def screen(self, ops: list[ExperienceOp], step: int, mode: str) -> tuple[list[ExperienceOp], list[OpResult]]:
        """The ops to apply, and one record per leaking op (rejected, or flagged and kept)."""
        if mode == "off":
            return ops, []
        keep, records = [], []
        for op in ops:
            why = self.check(op.text) if op.op in ("ADD", "UPDATE", "MERGE") else None
            if why is None:
                keep.append(op)
                continue
            if mode == "flag":
                keep.append(op)
                records.append(OpResult(step=step, op=op, status="noop", error=f"leak flagged (kept): {why}"))
            else:
                records.append(OpResult(step=step, op=op, status="rejected", error=f"leak: {why}"))
        return keep, records
