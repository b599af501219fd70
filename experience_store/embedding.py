"""Embedding functions named by a spec stored with the library.

``lexical``: an offline, deterministic embedding for air-gapped machines and tests: word
unigrams and bigrams hashed into a fixed number of dimensions, L2-normalised. It captures
word overlap, not meaning; use a real model where one is available.
"""

from __future__ import annotations

import hashlib
import math
import re
from typing import Any

from chromadb.api.types import Documents, EmbeddingFunction, Embeddings

_WORD = re.compile(r"[a-z0-9]+")


class LexicalEmbedding(EmbeddingFunction[Documents]):
    def __init__(self, dim: int = 512):
        self.dim = dim

    def __call__(self, input: Documents) -> Embeddings:
        return [self.embed_one(doc) for doc in input]

    def embed_one(self, text: str) -> list[float]:
        words = _WORD.findall(text.lower())
        grams = words + [f"{a} {b}" for a, b in zip(words, words[1:])]
        vec = [0.0] * self.dim
        for g in grams:
            h = int.from_bytes(hashlib.blake2b(g.encode(), digest_size=8).digest(), "little")
            vec[h % self.dim] += 1.0 if (h >> 63) == 0 else -1.0
        norm = math.sqrt(sum(v * v for v in vec))
        if norm == 0:
            vec[0] = 1.0
            return vec
        return [v / norm for v in vec]

    @staticmethod
    def name() -> str:
        return "tfgrpo-lexical"

    def get_config(self) -> dict[str, Any]:
        return {"dim": self.dim}

    @staticmethod
    def build_from_config(config: dict[str, Any]) -> "LexicalEmbedding":
        return LexicalEmbedding(dim=int(config.get("dim", 512)))

    def default_space(self):  # type: ignore[override]
        return "cosine"


def embedding_from_spec(spec: dict[str, Any]) -> EmbeddingFunction:
    """Build the embedding function a library or pack was made with."""
    kind = spec.get("name", "lexical")
    if kind == "lexical":
        return LexicalEmbedding(dim=int(spec.get("dim", 512)))
    raise ValueError(f"unknown embedding spec {spec!r} (available here: lexical)")
