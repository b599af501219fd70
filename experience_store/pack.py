"""Experience packs: a learned library that travels, as a zip or a directory.

Layout::

    manifest.json       PackManifest: format version, toolkit version, task, models, embedding
                        spec, injection settings, eval results when known, counts, sha256 of
                        every data file
    experiences.jsonl   one Experience per line (retired ones kept: ids stay meaningful)
    history.jsonl       the ops that built it (OpResult per line)
    README.md           for people; not read back

A pack carries data, never endpoints or code. Loading is hardened and executes nothing (see
``pack_format``); any failure is one ``PackError``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from experience_store.edits import norm_text
from experience_store.embedding import LOCAL_KINDS, parse_spec, portable_spec, same_spec, spec_label
from experience_store.errors import PackError, StoreError
from experience_store.models import Experience, OpResult
from experience_store.pack_format import (
    FileEntry,
    PackManifest,
    counts,
    jsonl,
    parse,
    read_members,
    sha256,
    write_members,
)
from experience_store.render import as_line
from experience_store.retrieval import Index, Injection, Selector, TokenCounter
from experience_store.settings import InjectionSettings

MERGE_THRESHOLD = 0.9  # cosine similarity at which a lesson counts as a near-duplicate in a merge


@dataclass
class PackDiff:
    added: list[Experience] = field(default_factory=list)  # in B only (by normalised text)
    removed: list[Experience] = field(default_factory=list)  # in A only
    same: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {"added": [e.text for e in self.added], "removed": [e.text for e in self.removed], "same": self.same}


class Pack:
    """A loaded (verified) pack. ``Pack.load(path).render(query)`` is the whole runtime API."""

    def __init__(self, manifest: PackManifest, experiences: list[Experience], history: list[OpResult]):
        self.manifest = manifest
        self.experiences = experiences
        self.history = history
        self._index: Index | None = None
        self._untrusted: str | None = None  # the label of an embedder the user has not accepted (see load)
        self._selector: Selector | None = None

    # --------------------------------------------------------------- building
    @classmethod
    def build(cls, experiences: Sequence[Experience], history: Sequence[OpResult] = (), **meta: Any) -> "Pack":
        manifest = PackManifest(**meta)
        manifest.embedding = parse_spec(manifest.embedding)
        pack = cls(manifest, list(experiences), list(history))
        pack._seal()
        return pack

    def _payload(self) -> dict[str, bytes]:
        return {"experiences.jsonl": jsonl(self.experiences), "history.jsonl": jsonl(self.history)}

    def _seal(self) -> None:
        payload = self._payload()
        self.manifest.files = {n: FileEntry(sha256=sha256(b), bytes=len(b)) for n, b in payload.items()}
        self.manifest.counts = counts(self.experiences, self.history)

    @property
    def active(self) -> list[Experience]:
        return [e for e in self.experiences if e.status == "active"]

    def readme(self) -> str:
        m = self.manifest
        lines = [
            f"# Experience pack{': ' + m.name if m.name else ''}",
            "",
            f"{len(self.active)} lessons learned by training-free GRPO"
            + (f" on task `{m.task}`" if m.task else "")
            + (f" with policy `{m.policy_model}`" if m.policy_model else "")
            + ".",
            "",
            "Use it without the toolkit (pydantic, chromadb and jinja2 only):",
            "",
            "```python",
            "from experience_store import Pack",
            "",
            'context = Pack.load("this.zip").render("the user\'s question")',
            "```",
            "",
            f"Embedding: `{spec_label(m.embedding)}`. Created {m.created}.",
            "",
        ]
        if m.eval:
            lines += ["Evaluation: `" + json.dumps({k: m.eval[k] for k in list(m.eval)[:6]}) + "`", ""]
        lines += ["## Lessons", ""] + [f"- [{e.id}] {as_line(e.text)}" for e in self.active]
        return "\n".join(lines) + "\n"

    def write(self, path: str | Path) -> Path:
        """Write a zip (path ending in .zip) or a directory; atomically, never half a pack; an
        earlier pack there is replaced, anything else refused (``write_members``). The embedding
        spec is written without an endpoint (``portable_spec``)."""
        self._seal()
        out = Path(path)
        manifest = self.manifest.model_copy(update={"embedding": portable_spec(self.manifest.embedding)})
        files = {
            "manifest.json": manifest.model_dump_json(indent=1).encode(),
            **self._payload(),
            "README.md": self.readme().encode(),
        }
        write_members(out, files)
        return out

    # ---------------------------------------------------------------- loading
    @classmethod
    def load(
        cls, path: str | Path, *, embedding: dict[str, Any] | str | None = None, trust_embedding: bool = False
    ) -> "Pack":
        """Read and verify a pack. ``embedding`` re-embeds it with another spec (e.g. when its
        own model is not installed here, or to name the user's own endpoint). A pack's own
        embedder other than the offline ``lexical`` and ``e5`` ones (``LOCAL_KINDS``: they run
        here on installed files and send nothing anywhere) is used only with ``trust_embedding``:
        a model name chooses where texts go (``litellm:ollama/...`` is a server on port 11434,
        ``st:``/``chroma-default`` download a model), and the pack's author chose it."""
        p = Path(path)
        pack = cls(*parse(p, read_members(p)))
        if embedding is not None:
            try:
                pack.manifest.embedding = parse_spec(embedding)
            except StoreError as e:
                raise PackError(str(e)) from None
        elif pack.manifest.embedding.get("name") not in LOCAL_KINDS and not trust_embedding:
            pack._untrusted = spec_label(pack.manifest.embedding)
        return pack

    def check_embedding(self, settings: InjectionSettings | None = None) -> None:
        """PackError unless this pack's texts may be embedded (see ``load``); with ``settings``,
        only where they need embedding (mode ``all`` injects everything and embeds nothing)."""
        if self._untrusted and not (settings is not None and settings.mode == "all"):
            raise PackError(
                f"this pack names the embedding {self._untrusted}, which would send its lessons (and your "
                "queries) to a model the pack chose: re-embed it here (--embedding lexical; Pack.load(..., "
                "embedding='lexical')) or accept it with --trust-embedding (trust_embedding=True)"
            )

    # -------------------------------------------------------------- retrieval
    def index(self) -> Index:
        self.check_embedding()
        if self._index is None:
            self._index = Index.in_memory(self.active, self.manifest.embedding)
        return self._index

    def injection_settings(self) -> InjectionSettings:
        """Mode, budget and top-k as the source run used them (``InjectionSettings()`` for packs
        that do not record them)."""
        return self.manifest.injection or InjectionSettings()

    def inject(
        self, query: str, settings: InjectionSettings | None = None, *, count_tokens: TokenCounter | None = None
    ) -> Injection:
        """The experiences for ``query`` under ``settings`` (see ``retrieval``): by default as the
        run that learned them injected them (``injection_settings``)."""
        if self._selector is None:
            self._selector = Selector(self.experiences, self.index)
        return self._selector.select(query, settings or self.injection_settings(), count_tokens=count_tokens)

    def render(self, query: str = "", settings: InjectionSettings | None = None) -> str:
        """The context block for ``query``: lines ``[E12] When ..., ...`` (see ``inject``)."""
        return self.inject(query, settings).text

    # ------------------------------------------------------- diff and merge
    def diff(self, other: "Pack") -> PackDiff:
        mine = {norm_text(e.text): e for e in self.active}
        theirs = {norm_text(e.text): e for e in other.active}
        return PackDiff(
            added=[e for k, e in theirs.items() if k not in mine],
            removed=[e for k, e in mine.items() if k not in theirs],
            same=len(mine.keys() & theirs.keys()),
        )

    def merge(
        self, other: "Pack", *, threshold: float = MERGE_THRESHOLD, name: str | None = None
    ) -> tuple["Pack", list[dict[str, Any]]]:
        """This pack's lessons plus the other's that are not (near-)duplicates of one already
        kept; ids renumbered E1.. in order. Returns the pack and the skipped duplicates."""
        self.check_embedding()
        other.check_embedding()
        if not same_spec(self.manifest.embedding, other.manifest.embedding):
            raise PackError(
                f"cannot merge packs embedded differently ({spec_label(self.manifest.embedding)} vs "
                f"{spec_label(other.manifest.embedding)}); load one with embedding=... to re-embed it"
            )
        kept: list[Experience] = []
        skipped: list[dict[str, Any]] = []
        index = Index.in_memory([], self.manifest.embedding)
        seen: dict[str, str] = {}
        for source, e in [("A", e) for e in self.active] + [("B", e) for e in other.active]:
            key = norm_text(e.text)
            near = index.near_duplicates([e.text], threshold)[0] if kept else []
            if key in seen or near:
                skipped.append(
                    {"from": source, "id": e.id, "text": e.text, "duplicate_of": seen.get(key) or near[0][0]}
                )
                continue
            new = e.model_copy(deep=True, update={"id": f"E{len(kept) + 1}"})
            new.provenance.merged_from = [f"{source}:{e.id}"]
            kept.append(new)
            seen[key] = new.id
            index.upsert([new])
        m = self.manifest
        return Pack.build(
            kept,
            [],
            name=name,
            task=m.task if m.task == other.manifest.task else None,
            policy_model=m.policy_model if m.policy_model == other.manifest.policy_model else None,
            toolkit_version=m.toolkit_version,
            embedding=m.embedding,
        ), skipped
