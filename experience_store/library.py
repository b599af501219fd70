"""The experience library: stable ids, one version per step, ops applied as a transaction.

Layout of a library directory::

    library/
      versions/000003.json   the whole library after step 3 (atomic write; the source of truth)
      chroma/                Chroma persistent index of the active experiences (rebuilt from
                             the latest version whenever the two disagree, e.g. after a crash)

A step's ops are applied to a copy of the state (``edits``); the copy becomes the new version
(``versions``) only when every write succeeded, so an error leaves the library exactly as it
was. ``Library`` puts together the edits, the version files, the Chroma index
(``chroma_index``) and, for a shared store, the server's commit log (``commit_log``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterable

from experience_store.chroma_index import COLLECTION, ChromaIndex, collection_name
from experience_store.commit_log import CommitLog
from experience_store.edits import LibraryState, apply_ops
from experience_store.embedding import same_spec, spec_label
from experience_store.errors import ConflictError, StoreError
from experience_store.models import Experience, ExperienceOp, OpResult, Provenance, Stats
from experience_store.pack import Pack
from experience_store.render import DEFAULT_BLOCK, render_experiences
from experience_store.retrieval import Index, Injection, Selector, TokenCounter
from experience_store.settings import InjectionSettings
from experience_store.versions import VersionStore


class Library:
    """A versioned experience library in a directory, indexed in Chroma.

    ``store="http://host:port"`` keeps the index in a Chroma server (``HttpClient``) and makes
    the server's commit log the source of truth shared by every writer of ``collection``.
    Writers never lose an op: a commit names the version it was based on, and the loser of a
    race gets ``ConflictError`` with nothing applied (a file lock does the same for two
    processes on one directory).
    """

    def __init__(
        self,
        path: str | Path,
        *,
        at_step: int | None = None,
        embedding: dict[str, Any] | None = None,
        store: str | None = None,
        collection: str | None = None,
    ):
        self.path = Path(path)
        self._versions = VersionStore(self.path)
        self.versions_dir = self._versions.dir
        self.store = store
        self.collection_name = collection_name(collection) if collection else COLLECTION
        self._chroma = ChromaIndex(self.path, store, self.collection_name)
        self._log = CommitLog(self._chroma.client, self.collection_name, store) if store is not None else None
        self._selector: tuple[LibraryState, Selector] | None = None
        self._new_embedding = dict(embedding) if embedding is not None else None  # for a library with no version yet
        self._at_step = at_step
        self._pending: tuple[int, int, LibraryState] | None = None  # (step, commit, state): see discard_after
        self._synced: LibraryState | None = None  # the state this object last brought the index in line with
        self.state = self._load(at_step)
        if self._log is not None and at_step is None:
            self.state = self._log.latest() or self.state

    # ---------------------------------------------------------------- versions
    def versions(self) -> list[int]:
        return self._versions.steps()

    def _load(self, at_step: int | None) -> LibraryState:
        state = self._versions.load(at_step)
        if state is None:
            return LibraryState(**({"embedding": dict(self._new_embedding)} if self._new_embedding else {}))
        return state

    def state_at(self, step: int) -> LibraryState:
        return self._load(step)

    def discard_after(self, step: int) -> None:
        """Forget versions written by a step that never committed (a run killed mid-step).

        With a shared store, the step after ``step`` may have reached the commit log before the
        kill: then the library goes back to the state that step started from, and redoing the
        step adopts that commit instead of committing the step again (``apply``)."""
        self._versions.discard_after(step)
        if self._log is None:
            self.state = self._load(step)
            return
        found = self._log.find(self._versions.writer_id(), step + 1)
        if found is not None:
            self._pending = (step + 1, *found)
            self.state = self._load(step)

    # ----------------------------------------------------------------- reading
    @property
    def experiences(self) -> list[Experience]:
        return self.state.active()

    def __len__(self) -> int:
        return len(self.state.active())

    def render(self, template: str = DEFAULT_BLOCK) -> str:
        return render_experiences(self.state.active(), template)

    @property
    def index(self) -> Index:
        return Index(self.collection(), self.state.embedding)

    def inject(
        self, query: str, settings: InjectionSettings | None = None, *, count_tokens: TokenCounter | None = None
    ) -> Injection:
        """The experiences for one query under ``settings`` (default ``InjectionSettings()``;
        see ``retrieval``)."""
        if self._selector is None or self._selector[0] is not self.state:
            index = None
            # The Chroma index holds the latest version; an earlier one (``at_step``) gets its own.
            historical = (
                self._at_step is not None
                if self.store is not None
                else self.state.step < max(self.versions(), default=self.state.step)
            )

            def lazy_index() -> Index:
                nonlocal index
                if index is None and not historical and self._synced is not self.state:
                    self.sync()  # a writer killed between its version and its index update left it behind
                index = index or (
                    Index.in_memory(self.state.active(), self.state.embedding) if historical else self.index
                )
                return index

            self._selector = (self.state, Selector(self.state.experiences, lazy_index))
        return self._selector[1].select(query, settings or InjectionSettings(), count_tokens=count_tokens)

    def near_duplicates(self, texts: list[str], threshold: float) -> list[list[tuple[str, float]]]:
        return self.index.near_duplicates(texts, threshold) if len(self) else [[] for _ in texts]

    # ----------------------------------------------------------------- writing
    def apply(
        self,
        ops: Iterable[ExperienceOp],
        step: int,
        provenance: Provenance | None = None,
        credit: dict[str, Stats] | None = None,
    ) -> list[OpResult]:
        """Apply a step's ops as one transaction and write version ``step``. Raises
        ``ConflictError`` (nothing applied) when another writer committed since this library
        was read."""
        new, results = apply_ops(self.state, ops, step, provenance, credit)
        if self._pending is not None and self._pending[0] == step:  # this step's commit landed before a kill
            _, number, committed = self._pending
            self._pending = None
            self._commit(committed, step, adopt=number)
        else:
            self._commit(new, step)
        return results

    def import_pack(self, pack: Pack, *, reembed: bool = False, step: int | None = None) -> list[OpResult]:
        """Add a pack's lessons as version ``step`` (default: the next one; 0 makes it the starting
        library of a run trained in this directory). An empty library becomes the pack (ids,
        stats and provenance kept, the pack's embedding adopted); a non-empty one gets them as
        ADD ops (exact duplicates skipped), which needs the same embedding spec or ``reembed``."""
        latest = max([*self.versions(), self.state.step])
        if step is None:
            step = latest + 1
        elif step < latest:
            raise StoreError(f"cannot import as version {step}: library {self.path} is already at step {latest}")
        if not self.state.experiences:  # the new library takes the pack's embedder (with lessons, its own embeds)
            pack.check_embedding()
            exps = [e.model_copy(deep=True) for e in pack.experiences]
            top = max((int(e.id[1:]) for e in exps if e.id[1:].isdigit()), default=0)
            new = LibraryState(step=step, next_id=top + 1, embedding=dict(pack.manifest.embedding), experiences=exps)
            self._commit(new, step)
            return [
                OpResult(
                    step=step,
                    op=ExperienceOp(op="ADD", text=e.text, reason="pack import"),
                    status="applied",
                    result_id=e.id,
                )
                for e in pack.active
            ]
        if not same_spec(self.state.embedding, pack.manifest.embedding) and not reembed:
            raise StoreError(
                f"the pack was embedded with {spec_label(pack.manifest.embedding)} but this library uses "
                f"{spec_label(self.state.embedding)}; re-embed it with --reembed (or import into a new library)"
            )
        origin = Provenance(
            run=f"pack:{pack.manifest.name or pack.manifest.source_run or 'unnamed'}",
            step=step,
            task=pack.manifest.task,
        )
        ops = [
            ExperienceOp(op="ADD", text=e.text, title=e.title, tags=list(e.tags), reason=f"pack import of {e.id}")
            for e in pack.active
        ]
        return self.apply(ops, step, origin)

    def _commit(self, new: LibraryState, step: int, *, adopt: int | None = None) -> None:
        """Write version ``step`` (and commit it to the shared log, unless it is commit ``adopt``
        there already)."""
        with self._versions.locked():
            on_disk = self.versions()
            if self.store is None and on_disk and on_disk[-1] != self.state.step:
                raise ConflictError(
                    f"library {self.path} was changed by another writer (it is at step {on_disk[-1]}, this writer "
                    f"read step {self.state.step}); step {step}'s ops were not applied: reopen the library and retry"
                )
            if self._log is not None and adopt is not None:
                self._log.base = adopt
            elif self._log is not None:
                self._log.commit(new, self._versions.writer_id())
            try:
                with self._versions.writing(new, step):
                    self._sync_index(new)
                self._synced = new  # committed with its index: no second pass before the next retrieval
            except BaseException:
                self._chroma.sync_quietly(self.state)
                raise
        self.state = new

    # ------------------------------------------------------------------- index
    def collection(self) -> Any:
        return self._chroma.collection()

    def sync(self) -> None:
        """Bring the Chroma index in line with the current version (cheap when it already is)."""
        self._sync_index(self.state)
        self._synced = self.state

    def _sync_index(self, state: LibraryState) -> None:
        self._chroma.sync(state)

    def export_jsonl(self) -> str:
        return "".join(json.dumps(e.model_dump(mode="json"), ensure_ascii=True) + "\n" for e in self.state.experiences)
