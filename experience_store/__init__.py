"""Runtime experience library: works with only pydantic, chromadb and jinja2 installed.

This package must never import ``tfgrpo``: agents in production use a learned library
without the learning toolkit.
"""

from experience_store.embedding import LexicalEmbedding, embedding_from_spec
from experience_store.library import Library, LibraryState, apply_ops
from experience_store.models import Experience, ExperienceOp, OpResult, Provenance, Stats
from experience_store.render import render_experiences

__all__ = [
    "Experience",
    "ExperienceOp",
    "LexicalEmbedding",
    "Library",
    "LibraryState",
    "OpResult",
    "Provenance",
    "Stats",
    "apply_ops",
    "embedding_from_spec",
    "render_experiences",
]
