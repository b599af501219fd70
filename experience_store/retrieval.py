"""Choosing which experiences enter a prompt, within a token budget.

Modes: ``all`` injects the whole library (paper-faithful; no budget); ``retrieve`` takes the
top-k by embedding similarity to the query and keeps, in order of similarity, those that fit
the budget; ``auto`` injects everything while the library fits the budget and retrieves beyond.

Tokens are counted by a ``count_tokens(text) -> int`` the caller gives (the toolkit passes the
policy model's tokenizer where it is known); without one, an estimate of 4 characters a token.

A query longer than ``MAX_QUERY_CHARS`` is cut to its start and its end before it is embedded
(``bounded_query``): a question comes first or last in a long message (a pasted file, a tool's
output), embedders read a few hundred tokens at most, and the lexical one would otherwise
hold every word of a 60 MB message in memory at once.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from experience_store.embedding import embedding_from_spec, spec_label
from experience_store.errors import StoreError
from experience_store.models import Experience
from experience_store.render import render_experiences
from experience_store.settings import InjectionSettings

TokenCounter = Callable[[str], int]


def estimate_tokens(text: str) -> int:
    """About 4 characters a token (English prose with common tokenizers); never 0 for text."""
    return (len(text) + 3) // 4


MAX_QUERY_CHARS = 8192  # of a retrieval query: its first and last 4096 characters


def bounded_query(text: str, limit: int = MAX_QUERY_CHARS) -> str:
    """``text`` if it is at most ``limit`` characters, else its first and last ``limit // 2``."""
    if len(text) <= limit:
        return text
    half = limit // 2
    return f"{text[:half]}\n{text[len(text) - (limit - half - 1) :]}"


EXACT_UP_TO = 20_000  # lessons searched exactly (a 20000 x 512 float32 matrix is 40 MB); HNSW beyond


def _rank(hit: tuple[str, float]) -> tuple[float, int, str]:
    """Sort key of a search hit: most similar first, then ids in natural order (E2 before E10)."""
    return (-round(hit[1], 6), len(hit[0]), hit[0])


class Index:
    """Top-k and near-duplicate search over a Chroma collection of experience texts."""

    def __init__(self, collection: Any, embedding: dict[str, Any]):
        self.collection = collection
        self.spec = embedding
        self._embed = embedding_from_spec(embedding)
        self._exact: tuple[list[str], Any] | None = None  # (ids, unit rows) for exact search; dropped on upsert

    def embed(self, texts: list[str], *, query: bool = False) -> list[list[float]]:
        """Vectors of stored texts (and of texts compared with them, as dedup does), or with
        ``query`` of retrieval queries: models trained with a role prefix (e5's ``query: ``
        and ``passage: ``) embed the two differently (``embed_query``); the others alike."""
        try:
            vectors = self._embed.embed_query(list(texts)) if query else self._embed(list(texts))
            return [list(map(float, v)) for v in vectors]
        except StoreError:
            raise
        except Exception as e:  # a model that cannot be downloaded, an API without a key, ...
            raise StoreError(
                f"embedding {spec_label(self.spec)} failed ({str(e).splitlines()[0][:200] if str(e) else type(e).__name__}); "
                "use another embedding spec, e.g. lexical"
            ) from None

    @classmethod
    def in_memory(cls, experiences: Sequence[Experience], embedding: dict[str, Any]) -> "Index":
        """An ephemeral (process-local) index, e.g. for a pack loaded without a store."""
        import chromadb

        client = chromadb.EphemeralClient(settings=chromadb.Settings(anonymized_telemetry=False))
        col = client.create_collection(
            f"pack-{uuid.uuid4().hex}", embedding_function=None, metadata={"hnsw:space": "cosine"}
        )
        index = cls(col, embedding)
        index.upsert(experiences)
        return index

    def upsert(self, experiences: Sequence[Experience], batch: int = 2000) -> None:
        self._exact = None
        items = list(experiences)
        for start in range(0, len(items), batch):
            part = items[start : start + batch]
            self.collection.upsert(
                ids=[e.id for e in part],
                documents=[e.text for e in part],
                embeddings=self.embed([e.text for e in part]),
                metadatas=[
                    {"revision": e.revision, "created_step": e.created_step, "updated_step": e.updated_step}
                    for e in part
                ],
            )

    def search_vectors(self, vectors: list[list[float]], k: int) -> list[list[tuple[str, float]]]:
        """For each vector, up to k (id, cosine similarity) pairs, most similar first; equal
        similarities (to 6 decimals) in id order, so the same library and query always give
        the same k (Chroma returns ties in any order, and cuts them anywhere)."""
        n = self.collection.count()
        if n == 0 or not vectors or k <= 0:
            return [[] for _ in vectors]
        if n <= EXACT_UP_TO:
            return self._search_exact(vectors, k)
        fetch = min(n, 2 * k)
        while True:
            res = self.collection.query(query_embeddings=vectors, n_results=fetch, include=["distances"])
            rows = [
                sorted(((i, 1.0 - float(d)) for i, d in zip(ids, dists)), key=_rank)
                for ids, dists in zip(res["ids"], res["distances"])
            ]
            # a tie at the k-th place that reaches the last fetched result may go on beyond it
            if fetch >= n or not any(len(r) > k and _rank(r[k - 1])[0] == _rank(r[-1])[0] for r in rows):
                return [r[:k] for r in rows]
            fetch = min(n, 2 * fetch)

    def _search_exact(self, vectors: list[list[float]], k: int) -> list[list[tuple[str, float]]]:
        """Cosine similarity against every indexed vector. HNSW is approximate: it missed true
        top hits, and indexes built in another order (a resume, a pack) ranked the same version
        differently; up to EXACT_UP_TO lessons the exact answer costs a matrix product."""
        import numpy as np

        if self._exact is None:
            got = self.collection.get(include=["embeddings"])
            rows = np.asarray(got["embeddings"], dtype=np.float32)
            norms = np.linalg.norm(rows, axis=1, keepdims=True)
            self._exact = (list(got["ids"]), rows / np.where(norms == 0, 1, norms))
        ids, rows = self._exact
        q = np.asarray(vectors, dtype=np.float32)
        q = q / np.where((qn := np.linalg.norm(q, axis=1, keepdims=True)) == 0, 1, qn)
        out = []
        for row in q @ rows.T:
            if len(ids) > 4 * k + 16:  # the k best and everything tied with the k-th (to 6 decimals), then ranked
                kth = float(np.min(row[np.argpartition(-row, k - 1)[:k]]))
                cand = np.nonzero(np.round(row, 6) >= round(kth, 6))[0]
            else:
                cand = np.arange(len(ids))
            out.append(sorted(((ids[i], float(row[i])) for i in cand), key=_rank)[:k])
        return out

    def search(self, query: str, k: int) -> list[tuple[str, float]]:
        return self.search_vectors(self.embed([query], query=True), k)[0]

    def near_duplicates(self, texts: Sequence[str], threshold: float, k: int = 3) -> list[list[tuple[str, float]]]:
        """For each text, the indexed experiences whose cosine similarity is at least ``threshold``
        (lesson against lesson: both embedded as stored texts)."""
        if not texts:
            return []
        hits = self.search_vectors(self.embed(list(texts)), k)
        return [[(i, s) for i, s in row if s >= threshold] for row in hits]


@dataclass
class Injection:
    """What one prompt receives: the rendered block and the ids in it."""

    text: str
    ids: list[str]
    tokens: int
    mode: str
    scores: dict[str, float] = field(default_factory=dict)


class Selector:
    """Injection for one fixed set of active experiences: the ``all`` block and its token
    count are computed once per counter, lookups by id are O(1), so a query costs one
    embedding and one vector search however large the library is."""

    def __init__(self, experiences: Sequence[Experience], index: Callable[[], Index] | None):
        self.active = [e for e in experiences if e.status == "active"]
        self.by_id = {e.id: e for e in self.active}
        self._index = index
        self._all: dict[int, tuple[str, int]] = {}

    def all_block(self, count: TokenCounter) -> tuple[str, int]:
        key = id(count)
        if key not in self._all:
            block = render_experiences(self.active)
            self._all[key] = (block, count(block) if block else 0)
        return self._all[key]

    def select(self, query: str, settings: InjectionSettings, *, count_tokens: TokenCounter | None = None) -> Injection:
        """The experiences for one query, rendered (see the module docstring for the modes)."""
        count = count_tokens or estimate_tokens
        mode, budget = settings.mode, settings.budget_tokens
        if mode in ("all", "auto"):
            block, tokens = self.all_block(count)
            if mode == "all" or tokens <= budget:
                return Injection(block, list(self.by_id), tokens, "all")
        if self._index is None or not self.active:
            return Injection("", [], 0, "retrieve")
        hits = [(i, s) for i, s in self._index().search(bounded_query(query), settings.top_k) if i in self.by_id]
        chosen: list[Experience] = []
        used = 0
        for exp_id, _ in hits:
            cost = count(render_experiences([self.by_id[exp_id]])) + 1
            if used + cost > budget:
                continue
            chosen.append(self.by_id[exp_id])
            used += cost
        block = render_experiences(chosen)
        ids = [e.id for e in chosen]
        return Injection(
            block, ids, count(block) if block else 0, "retrieve", {i: round(s, 4) for i, s in hits if i in ids}
        )
