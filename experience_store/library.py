"""The experience library: stable ids, one version per step, ops applied as a transaction.

Layout of a library directory::

    library/
      versions/000003.json   the whole library after step 3 (atomic write; the source of truth)
      chroma/                Chroma persistent index of the active experiences (rebuilt from
                             the latest version whenever the two disagree, e.g. after a crash)

A step's ops are applied to a copy of the state; the copy becomes the new version only when
every write succeeded, so an error leaves the library exactly as it was.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Iterator
from urllib.parse import urlparse

from pydantic import BaseModel, Field

from experience_store.credit import canonical_id
from experience_store.embedding import DEFAULT_SPEC, same_spec, spec_label
from experience_store.errors import ConflictError, StoreError
from experience_store.models import Experience, ExperienceOp, OpResult, Provenance, Stats
from experience_store.render import DEFAULT_BLOCK, render_experiences
from experience_store.retrieval import Index, Injection, Mode, Selector, TokenCounter

if TYPE_CHECKING:
    from experience_store.pack import Pack

log = logging.getLogger(__name__)
COLLECTION = "experiences"
MAX_LESSON_CHARS = 2000


class LibraryState(BaseModel):
    """One version of the library. Field order is the file format."""

    version: int = 1
    step: int = 0
    next_id: int = 1
    embedding: dict[str, Any] = Field(default_factory=lambda: dict(DEFAULT_SPEC))
    experiences: list[Experience] = Field(default_factory=list)

    def get(self, exp_id: str) -> Experience | None:
        exp_id = canonical_id(exp_id)  # [E1], e1, ' E1 ' and 1 all name E1
        for e in self.experiences:
            if e.id == exp_id:
                return e
        return None

    def active(self) -> list[Experience]:
        return [e for e in self.experiences if e.status == "active"]


def norm_text(text: str) -> str:
    """A lesson's text for exact-duplicate checks: case and spacing aside."""
    return " ".join(text.lower().split())


def apply_ops(
    state: LibraryState, ops: Iterable[ExperienceOp], step: int, provenance: Provenance | None = None,
    credit: dict[str, Stats] | None = None,
) -> tuple[LibraryState, list[OpResult]]:
    """Pure function: the next state and one result per op. Unknown ids are rejected, never
    turned into ADD; an exact duplicate of an active lesson is never stored twice. ``credit``
    (usage counted during the step, by id) is added to the stats before the ops apply."""
    new = state.model_copy(deep=True)
    new.step = step
    for exp_id, delta in (credit or {}).items():
        target = new.get(exp_id)
        if target is not None:
            target.stats.add(delta)
    results: list[OpResult] = []
    prov = provenance or Provenance(step=step)

    def reject(op: ExperienceOp, why: str) -> None:
        results.append(OpResult(step=step, op=op, status="rejected", error=why))

    def active_or_none(exp_id: str | None) -> Experience | None:
        e = new.get(exp_id) if exp_id else None
        return e if e is not None and e.status == "active" else None

    def add(op: ExperienceOp, text: str, provenance: Provenance) -> None:
        exp = Experience(
            id=f"E{new.next_id}", text=text, title=op.title, tags=list(op.tags),
            created_step=step, updated_step=step, provenance=provenance,
        )
        new.next_id += 1
        new.experiences.append(exp)
        results.append(OpResult(step=step, op=op, status="applied", result_id=exp.id))

    def duplicate_of(text: str, ignore: set[str] = frozenset()) -> Experience | None:  # type: ignore[assignment]
        key = norm_text(text)
        return next((e for e in new.active() if e.id not in ignore and norm_text(e.text) == key), None)

    for op in ops:
        text = op.text.strip()
        if op.op == "NONE":
            results.append(OpResult(step=step, op=op, status="noop"))
            continue
        if op.op in ("ADD", "UPDATE", "MERGE"):
            if not text:
                reject(op, f"{op.op} without text")
                continue
            if len(text) > MAX_LESSON_CHARS:
                reject(op, f"{op.op} text longer than {MAX_LESSON_CHARS} characters")
                continue
        if op.op == "ADD":
            dup = duplicate_of(text)
            if dup is not None:
                results.append(OpResult(step=step, op=op, status="noop", error=f"duplicate of {dup.id}", result_id=dup.id))
                continue
            add(op, text, prov.model_copy(deep=True))
        elif op.op == "UPDATE":
            target = active_or_none(op.id)
            if target is None:
                reject(op, f"unknown or retired id {op.id!r}")
                continue
            dup = duplicate_of(text, ignore={target.id})
            if dup is not None:
                reject(op, f"UPDATE {target.id} would duplicate {dup.id}")
                continue
            target.text = text
            if op.title is not None:
                target.title = op.title
            if op.tags:
                target.tags = list(op.tags)
            target.revision += 1
            target.updated_step = step
            target.provenance.query_ids = sorted(set(target.provenance.query_ids) | set(prov.query_ids))
            results.append(OpResult(step=step, op=op, status="applied", result_id=target.id))
        elif op.op == "DELETE":
            target = active_or_none(op.id)
            if target is None:
                reject(op, f"unknown or retired id {op.id!r}")
                continue
            target.status = "retired"
            target.updated_step = step
            results.append(OpResult(step=step, op=op, status="applied", result_id=target.id))
        elif op.op == "RESTORE":
            target = new.get(op.id) if op.id else None
            if target is None or target.status != "retired":
                reject(op, f"RESTORE needs a retired id, got {op.id!r}")
                continue
            dup = duplicate_of(target.text)
            if dup is not None:
                reject(op, f"RESTORE {target.id} would duplicate {dup.id}")
                continue
            target.status = "active"
            target.updated_step = step
            results.append(OpResult(step=step, op=op, status="applied", result_id=target.id))
        elif op.op == "MERGE":
            ids = list(dict.fromkeys(canonical_id(i) or "" for i in op.ids))
            sources = [active_or_none(i) for i in ids]
            if len(ids) < 2:
                reject(op, "MERGE needs at least two ids")
                continue
            if any(s is None for s in sources):
                bad = [i for i, s in zip(ids, sources) if s is None]
                reject(op, f"MERGE names unknown or retired ids {bad}")
                continue
            for s in sources:
                s.status = "retired"  # type: ignore[union-attr]
                s.updated_step = step  # type: ignore[union-attr]
            merged_prov = prov.model_copy(deep=True)
            merged_prov.merged_from = ids
            merged_prov.query_ids = sorted({q for s in sources for q in s.provenance.query_ids} | set(prov.query_ids))  # type: ignore[union-attr]
            dup = duplicate_of(text)
            if dup is not None:
                results.append(OpResult(step=step, op=op, status="applied", result_id=dup.id))
                continue
            add(op, text, merged_prov)
    return new, results


def _collection_name(name: str) -> str:
    """A Chroma collection name (3-512 of [a-zA-Z0-9._-], alphanumeric at both ends)."""
    clean = re.sub(r"[^a-zA-Z0-9._-]+", "-", name).strip("-._")
    return f"lib-{clean or 'x'}-x"[: 500] if len(clean) < 3 else clean[:500]


def prune_ops(state: LibraryState, step: int, *, unused_steps: int, min_votes: int = 3, harmful_share: float = 0.5) -> list[ExperienceOp]:
    """DELETE ops (reason "prune: ...") for active lessons that are mostly harmful (at least
    ``min_votes`` cited outcomes, more than ``harmful_share`` of them harmful) or not cited for
    ``unused_steps`` steps (0: never prune for disuse). A RESTORE op brings one back."""
    ops = []
    for e in state.active():
        votes = e.stats.helpful + e.stats.harmful
        last = e.stats.last_cited_step if e.stats.last_cited_step is not None else e.created_step
        if votes >= min_votes and e.stats.harmful > harmful_share * votes:
            why = f"prune: harmful in {e.stats.harmful} of {votes} cited answers"
        elif unused_steps > 0 and step - last >= unused_steps:
            why = f"prune: not cited for {step - last} steps"
        else:
            continue
        ops.append(ExperienceOp(op="DELETE", id=e.id, reason=why))
    return ops


class Library:
    """A versioned experience library in a directory, indexed in Chroma.

    ``store="http://host:port"`` keeps the index in a Chroma server (``HttpClient``) and makes
    the server's commit log the source of truth shared by every writer of ``collection``.
    Writers never lose an op: a commit names the version it was based on, and the loser of a
    race gets ``ConflictError`` with nothing applied (a file lock does the same for two
    processes on one directory).
    """

    def __init__(self, path: str | Path, *, at_step: int | None = None, embedding: dict[str, Any] | None = None,
                 store: str | None = None, collection: str | None = None):
        self.path = Path(path)
        self.versions_dir = self.path / "versions"
        self.versions_dir.mkdir(parents=True, exist_ok=True)
        self.store = store
        self.collection_name = _collection_name(collection) if collection else COLLECTION
        self._client = None
        self._collection = None
        self._commits = None
        self._base_commit = 0
        self._selector: tuple[LibraryState, Selector] | None = None
        self._new_embedding = dict(embedding) if embedding is not None else None  # for a library with no version yet
        self._at_step = at_step
        self.state = self._load(at_step)
        if store is not None and at_step is None:
            self._base_commit, shared = self._latest_commit()
            if shared is not None:
                self.state = shared

    # ---------------------------------------------------------------- versions
    def versions(self) -> list[int]:
        return sorted(int(p.stem) for p in self.versions_dir.glob("*.json") if p.stem.isdigit())

    def _version_path(self, step: int) -> Path:
        return self.versions_dir / f"{step:06d}.json"

    def _load(self, at_step: int | None) -> LibraryState:
        steps = [s for s in self.versions() if at_step is None or s <= at_step]
        if not steps:
            return LibraryState(**({"embedding": dict(self._new_embedding)} if self._new_embedding else {}))
        return LibraryState.model_validate_json(self._version_path(steps[-1]).read_text())

    def state_at(self, step: int) -> LibraryState:
        return self._load(step)

    def discard_after(self, step: int) -> None:
        """Forget versions written by a step that never committed (a run killed mid-step)."""
        for s in self.versions():
            if s > step:
                self._version_path(s).unlink()
        if self.store is None:
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

    def inject(self, query: str, *, mode: Mode = "all", budget: int = 2000, k: int = 8,
               count_tokens: TokenCounter | None = None, template: str = DEFAULT_BLOCK) -> Injection:
        """The experiences for one query (see ``retrieval``)."""
        if self._selector is None or self._selector[0] is not self.state:
            index = None
            # The Chroma index holds the latest version; an earlier one (``at_step``) gets its own.
            historical = (self._at_step is not None if self.store is not None
                          else self.state.step < max(self.versions(), default=self.state.step))

            def lazy_index() -> Index:
                nonlocal index
                index = index or (Index.in_memory(self.state.active(), self.state.embedding) if historical else self.index)
                return index

            self._selector = (self.state, Selector(self.state.experiences, lazy_index))
        return self._selector[1].select(query, mode=mode, budget=budget, k=k, count_tokens=count_tokens, template=template)

    def near_duplicates(self, texts: list[str], threshold: float) -> list[list[tuple[str, float]]]:
        return self.index.near_duplicates(texts, threshold) if len(self) else [[] for _ in texts]

    # ----------------------------------------------------------------- writing
    def apply(self, ops: Iterable[ExperienceOp], step: int, provenance: Provenance | None = None,
              credit: dict[str, Stats] | None = None) -> list[OpResult]:
        """Apply a step's ops as one transaction and write version ``step``. Raises
        ``ConflictError`` (nothing applied) when another writer committed since this library
        was read."""
        new, results = apply_ops(self.state, ops, step, provenance, credit)
        self._commit(new, step)
        return results

    def import_pack(self, pack: "Pack", *, reembed: bool = False, step: int | None = None) -> list[OpResult]:
        """Add a pack's lessons as version ``step`` (default: the next one; 0 makes it the starting
        library of a run trained in this directory). An empty library becomes the pack (ids,
        stats and provenance kept, the pack's embedding adopted); a non-empty one gets them as
        ADD ops (exact duplicates skipped), which needs the same embedding spec or ``reembed``."""
        latest = max([*self.versions(), self.state.step])
        if step is None:
            step = latest + 1
        elif step < latest:
            raise StoreError(f"cannot import as version {step}: library {self.path} is already at step {latest}")
        if not self.state.experiences:
            exps = [e.model_copy(deep=True) for e in pack.experiences]
            top = max((int(e.id[1:]) for e in exps if e.id[1:].isdigit()), default=0)
            new = LibraryState(step=step, next_id=top + 1, embedding=dict(pack.manifest.embedding), experiences=exps)
            self._commit(new, step)
            return [OpResult(step=step, op=ExperienceOp(op="ADD", text=e.text, reason="pack import"), status="applied",
                             result_id=e.id) for e in pack.active]
        if not same_spec(self.state.embedding, pack.manifest.embedding) and not reembed:
            raise StoreError(f"the pack was embedded with {spec_label(pack.manifest.embedding)} but this library uses "
                             f"{spec_label(self.state.embedding)}; re-embed it with --reembed (or import into a new library)")
        origin = Provenance(run=f"pack:{pack.manifest.name or pack.manifest.source_run or 'unnamed'}", step=step, task=pack.manifest.task)
        ops = [ExperienceOp(op="ADD", text=e.text, title=e.title, tags=list(e.tags), reason=f"pack import of {e.id}") for e in pack.active]
        return self.apply(ops, step, origin)

    def _commit(self, new: LibraryState, step: int) -> None:
        with self._lock():
            on_disk = self.versions()
            if self.store is None and on_disk and on_disk[-1] != self.state.step and on_disk[-1] >= step:
                raise ConflictError(
                    f"library {self.path} was changed by another writer (it is at step {on_disk[-1]}, this writer "
                    f"read step {self.state.step}); step {step}'s ops were not applied: reopen the library and retry"
                )
            if self.store is not None:
                self._commit_shared(new)
            path = self._version_path(step)
            tmp = path.with_suffix(".tmp")
            existed = path.exists()
            try:
                tmp.write_text(new.model_dump_json(indent=1))
                os.replace(tmp, path)
                self._sync_index(new)
            except BaseException:
                tmp.unlink(missing_ok=True)
                if not existed:
                    path.unlink(missing_ok=True)
                self._sync_index_quietly(self.state)
                raise
        self.state = new

    @contextlib.contextmanager
    def _lock(self) -> Iterator[None]:
        """An exclusive lock on the library directory for the length of a commit."""
        try:
            import fcntl
        except ImportError:  # not POSIX: the version check alone guards the commit
            yield
            return
        with open(self.path / ".lock", "w") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    # ------------------------------------------------------------ shared store
    def _client_or_connect(self):
        if self._client is None:
            import chromadb

            settings = chromadb.Settings(anonymized_telemetry=False)
            if self.store is None:
                self._client = chromadb.PersistentClient(path=str(self.path / "chroma"), settings=settings)
            else:
                parsed = urlparse(self.store)
                if parsed.scheme not in ("http", "https") or not parsed.hostname:
                    raise StoreError(f"--store must look like http://host:port, got {self.store!r}")
                try:
                    self._client = chromadb.HttpClient(host=parsed.hostname, port=parsed.port or 8000,
                                                       ssl=parsed.scheme == "https", settings=settings)
                    self._client.heartbeat()
                except Exception as e:
                    self._client = None
                    raise StoreError(f"cannot reach the Chroma server at {self.store}: {str(e).splitlines()[0][:200]}") from None
        return self._client

    def _commit_log(self):
        if self._commits is None:
            self._commits = self._client_or_connect().get_or_create_collection(
                f"{self.collection_name}-commits", embedding_function=None)
        return self._commits

    def _latest_commit(self) -> tuple[int, LibraryState | None]:
        log_ = self._commit_log()
        ids = log_.get(include=[])["ids"]
        if not ids:
            return 0, None
        last = max(ids)
        doc = log_.get(ids=[last], include=["documents"])["documents"][0]
        return int(last[1:]), LibraryState.model_validate_json(doc)

    def _commit_shared(self, new: LibraryState) -> None:
        """Optimistic versioning: commit n+1 is written with add(), which never overwrites;
        whoever's token is stored under that id won."""
        n = self._base_commit + 1
        token = uuid.uuid4().hex
        log_ = self._commit_log()
        log_.add(ids=[f"c{n:09d}"], documents=[new.model_dump_json()], metadatas=[{"token": token, "step": new.step}],
                 embeddings=[[0.0, 1.0]])
        stored = log_.get(ids=[f"c{n:09d}"], include=["metadatas"])["metadatas"][0]
        if stored.get("token") != token:
            raise ConflictError(
                f"shared library {self.collection_name!r} on {self.store} got commit {n} from another writer first; "
                f"step {new.step}'s ops were not applied: reopen the library and retry"
            )
        self._base_commit = n

    # ------------------------------------------------------------------- index
    def collection(self):
        if self._collection is None:
            self._collection = self._client_or_connect().get_or_create_collection(
                self.collection_name, embedding_function=None, metadata={"hnsw:space": "cosine"}
            )
        return self._collection

    def sync(self) -> None:
        """Bring the Chroma index in line with the current version (cheap when it already is)."""
        self._sync_index(self.state)

    def _sync_index(self, state: LibraryState) -> None:
        col = self.collection()
        have = col.get(include=["documents", "metadatas"])
        indexed = {i: (d, (m or {}).get("revision")) for i, d, m in zip(have["ids"], have["documents"], have["metadatas"])}
        want = {e.id: e for e in state.active()}
        stale = [i for i in indexed if i not in want]
        if stale:
            col.delete(ids=stale)
        changed = [e for e in want.values() if indexed.get(e.id) != (e.text, e.revision)]
        if changed:
            Index(col, state.embedding).upsert(changed)

    def _sync_index_quietly(self, state: LibraryState) -> None:
        try:
            self._sync_index(state)
        except Exception as e:  # the version files stay the source of truth; next open resyncs
            log.warning("could not restore the Chroma index: %s", e)

    def export_jsonl(self) -> str:
        return "".join(json.dumps(e.model_dump(), ensure_ascii=False) + "\n" for e in self.state.experiences)


def diff_states(a: LibraryState, b: LibraryState) -> dict[str, list[Experience]]:
    """What changed from version ``a`` to ``b`` by id: added, retired, changed (new text), restored."""
    before = {e.id: e for e in a.experiences}
    out: dict[str, list[Experience]] = {"added": [], "retired": [], "changed": [], "restored": []}
    for e in b.experiences:
        old = before.get(e.id)
        was_active = old is not None and old.status == "active"
        if e.status == "active" and old is None:
            out["added"].append(e)
        elif e.status == "active" and not was_active:
            out["restored"].append(e)
        elif e.status == "retired" and was_active:
            out["retired"].append(e)
        elif e.status == "active" and old is not None and old.text != e.text:
            out["changed"].append(e)
    return out
