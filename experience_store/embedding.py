"""Embedding functions named by a spec stored with the library and with every pack.

Specs (a small dict; ``parse_spec`` reads the command-line form in brackets):

* ``{"name": "lexical", "dim": 512}`` [``lexical``]: offline and deterministic, for air-gapped
  machines and tests: word unigrams and bigrams hashed into ``dim`` dimensions, L2-normalised.
  It captures word overlap, not meaning; use a real model where one is available.
* ``{"name": "chroma-default"}`` [``chroma-default``]: chromadb's default model (all-MiniLM-L6-v2
  through ONNX; downloaded on first use, so a connected machine).
* ``{"name": "sentence-transformers", "model": NAME_OR_PATH}`` [``st:NAME_OR_PATH``]: needs the
  sentence-transformers package.
* ``{"name": "litellm", "model": MODEL}`` [``litellm:MODEL``]: API embeddings through litellm
  (``openai/text-embedding-3-small``, ...), optional ``api_base``; needs litellm and a key.

Optional libraries are imported only when a spec asks for them.
"""

from __future__ import annotations

import hashlib
import math
import re
from typing import Any

from chromadb.api.types import Documents, EmbeddingFunction, Embeddings

from experience_store.errors import StoreError

_WORD = re.compile(r"[a-z0-9]+")
DEFAULT_SPEC: dict[str, Any] = {"name": "lexical", "dim": 512}
KINDS = ("lexical", "chroma-default", "sentence-transformers", "litellm")


class LexicalEmbedding(EmbeddingFunction[Documents]):
    def __init__(self, dim: int = 512):
        self.dim = dim
        self._slots: dict[str, tuple[int, float]] = {}

    def __call__(self, input: Documents) -> Embeddings:
        return [self.embed_one(doc) for doc in input]

    def _slot(self, gram: str) -> tuple[int, float]:
        hit = self._slots.get(gram)
        if hit is None:
            h = int.from_bytes(hashlib.blake2b(gram.encode(), digest_size=8).digest(), "little")
            hit = (h % self.dim, 1.0 if (h >> 63) == 0 else -1.0)
            if len(self._slots) < 200_000:  # memo of hashed grams; bounded
                self._slots[gram] = hit
        return hit

    def embed_one(self, text: str) -> list[float]:
        words = _WORD.findall(text.lower())
        grams = words + [f"{a} {b}" for a, b in zip(words, words[1:])]
        vec = [0.0] * self.dim
        for g in grams:
            i, sign = self._slot(g)
            vec[i] += sign
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


class LiteLLMEmbedding(EmbeddingFunction[Documents]):
    """API embeddings through litellm (imported on first use)."""

    def __init__(self, model: str, api_base: str | None = None):
        self.model = model
        self.api_base = api_base

    def __call__(self, input: Documents) -> Embeddings:
        import litellm

        resp = litellm.embedding(model=self.model, input=list(input), api_base=self.api_base)
        return [list(d["embedding"]) for d in resp.data]

    @staticmethod
    def name() -> str:
        return "tfgrpo-litellm"

    def get_config(self) -> dict[str, Any]:
        return {"model": self.model, "api_base": self.api_base}

    @staticmethod
    def build_from_config(config: dict[str, Any]) -> "LiteLLMEmbedding":
        return LiteLLMEmbedding(config["model"], config.get("api_base"))


def parse_spec(value: str | dict[str, Any]) -> dict[str, Any]:
    """``lexical``, ``lexical:256``, ``chroma-default``, ``st:NAME_OR_PATH``, ``litellm:MODEL`` or a dict."""
    if isinstance(value, dict):
        spec = dict(value)
    else:
        kind, _, arg = value.strip().partition(":")
        kind = {"st": "sentence-transformers"}.get(kind, kind)
        spec = {"name": kind}
        if kind == "lexical":
            spec["dim"] = int(arg) if arg.isdigit() else 512
        elif arg:
            spec["model"] = arg
    kind = spec.get("name")
    if kind not in KINDS:
        raise StoreError(f"unknown embedding {value!r} (choose lexical, chroma-default, st:MODEL or litellm:MODEL)")
    if kind in ("sentence-transformers", "litellm") and not spec.get("model"):
        raise StoreError(f"embedding {kind} needs a model, e.g. {'st:all-MiniLM-L6-v2' if kind != 'litellm' else 'litellm:openai/text-embedding-3-small'}")
    if kind == "lexical":
        spec["dim"] = int(spec.get("dim", 512))
    return spec


def spec_label(spec: dict[str, Any]) -> str:
    kind = spec.get("name", "?")
    if kind == "lexical":
        return f"lexical:{spec.get('dim', 512)}"
    return f"{kind}:{spec['model']}" if spec.get("model") else str(kind)


def same_spec(a: dict[str, Any], b: dict[str, Any]) -> bool:
    return parse_spec(a) == parse_spec(b)


def embedding_from_spec(spec: dict[str, Any]) -> EmbeddingFunction:
    """Build the embedding function a library or pack was made with."""
    spec = parse_spec(spec)
    kind = spec["name"]
    if kind == "lexical":
        return LexicalEmbedding(dim=spec["dim"])
    if kind == "litellm":
        return LiteLLMEmbedding(spec["model"], spec.get("api_base"))
    try:
        from chromadb.utils import embedding_functions as ef

        if kind == "chroma-default":
            return ef.DefaultEmbeddingFunction()  # type: ignore[return-value]
        return ef.SentenceTransformerEmbeddingFunction(model_name=spec["model"])
    except (ImportError, ValueError) as e:
        raise StoreError(f"embedding {spec_label(spec)} is not available here ({e}); re-embed with another spec, e.g. lexical") from None
