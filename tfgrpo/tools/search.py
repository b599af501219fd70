"""The ``search`` tool: top passages for a query from a search backend.

:class:`BM25Corpus` indexes a local corpus with ``bm25s`` (so web-QA style tasks run
offline); any object with ``search(query, k) -> list[Hit]`` is a backend, so a real search
API plugs into the same tool (see docs/agents.md).
"""

from __future__ import annotations

import logging

from dataclasses import dataclass
from typing import Any, Iterable, Protocol

from tfgrpo.tools.base import Tool, tool


@dataclass
class Hit:
    id: str
    title: str
    text: str
    score: float


class SearchBackend(Protocol):
    def search(self, query: str, k: int) -> list[Hit]: ...


class BM25Corpus:
    """BM25 over documents ``{"id", "title", "text"}`` (English stop words removed)."""

    def __init__(self, docs: Iterable[dict[str, Any]]):
        import bm25s

        # bm25s sets its own logger to DEBUG on import; follow the application's level instead
        logging.getLogger("bm25s").setLevel(logging.getLogger().getEffectiveLevel())

        self.docs = [dict(d) for d in docs]
        if not self.docs:
            raise ValueError("a search corpus needs at least one document")
        self._bm25s = bm25s
        self.index = bm25s.BM25()
        self.index.index(
            bm25s.tokenize([self._text(d) for d in self.docs], stopwords="en", show_progress=False), show_progress=False
        )

    @staticmethod
    def _text(d: dict[str, Any]) -> str:
        return f"{d.get('title', '')}\n{d.get('text', '')}"

    def search(self, query: str, k: int) -> list[Hit]:
        tokens = self._bm25s.tokenize([query], stopwords="en", show_progress=False)
        if not tokens.vocab:
            return []  # only stop words: nothing to rank by
        k = min(k, len(self.docs))
        ids, scores = self.index.retrieve(tokens, k=k, show_progress=False)
        return [
            Hit(
                str(self.docs[i].get("id", i)),
                str(self.docs[i].get("title", "")),
                str(self.docs[i].get("text", "")),
                float(s),
            )
            for i, s in zip(ids[0], scores[0])
            if s > 0
        ]


def search_tool(backend: SearchBackend, *, k: int = 3, max_result_chars: int = 4000) -> Tool:
    """A ``search`` tool returning the top ``k`` passages of ``backend``."""

    def search(query: str) -> str:
        """Search the document collection and return the best matching passages with their titles.

        Args:
            query: Keywords describing what you are looking for.
        """
        hits = backend.search(query, k)
        if not hits:
            return "No results."
        return "\n\n".join(f"[{n}] {h.title}\n{h.text}" for n, h in enumerate(hits, 1))

    return tool(search, max_result_chars=max_result_chars)
