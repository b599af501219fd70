"""Runtime experience library: works with only pydantic, chromadb and jinja2 installed.

This package must never import ``tfgrpo``: agents in production use a learned library
without the learning toolkit::

    from experience_store import Pack
    context = Pack.load("pack.zip").render("the user's question")
"""

from experience_store.credit import cited_ids, usage_credit
from experience_store.embedding import LexicalEmbedding, embedding_from_spec, parse_spec, same_spec, spec_label
from experience_store.errors import ConflictError, PackError, StoreError
from experience_store.edits import LibraryState, apply_ops, diff_states, prune_ops
from experience_store.library import Library
from experience_store.models import Experience, ExperienceOp, OpResult, Provenance, Stats
from experience_store.pack import Pack, PackManifest
from experience_store.render import render_experiences
from experience_store.retrieval import Index, Injection, Selector, estimate_tokens
from experience_store.settings import InjectionSettings

__all__ = [
    "ConflictError",
    "Experience",
    "ExperienceOp",
    "Index",
    "Injection",
    "InjectionSettings",
    "LexicalEmbedding",
    "Library",
    "LibraryState",
    "OpResult",
    "Pack",
    "PackError",
    "PackManifest",
    "Provenance",
    "Selector",
    "Stats",
    "StoreError",
    "apply_ops",
    "cited_ids",
    "diff_states",
    "embedding_from_spec",
    "estimate_tokens",
    "parse_spec",
    "prune_ops",
    "render_experiences",
    "same_spec",
    "spec_label",
    "usage_credit",
]
