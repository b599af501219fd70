"""The commit log of a library shared through a Chroma server: the source of truth for every
writer of one collection.

Commit n is one document (the whole library state) in ``<collection>-commits`` under id
``c<n>``, added with a random token. Chroma's ``add`` never overwrites an id, so when two
writers race for the same n, the one whose token is stored won and the other gets
``ConflictError`` with nothing applied.

Each commit also names its writer (a library directory's id) and step, so a writer killed after
its commit landed but before its run marked the step done finds that commit again on resume
(``find``) and adopts it instead of applying the step a second time.
"""

from __future__ import annotations

import uuid
from typing import Any, Callable

from experience_store.edits import LibraryState
from experience_store.errors import ConflictError


class CommitLog:
    def __init__(self, client: Callable[[], Any], collection: str, store: str):
        self._client = client
        self.collection = collection
        self.store = store
        self.base = 0  # the commit this writer's state is based on
        self._log: Any = None

    def _col(self) -> Any:
        if self._log is None:
            self._log = self._client().get_or_create_collection(f"{self.collection}-commits", embedding_function=None)
        return self._log

    def latest(self) -> LibraryState | None:
        """The newest committed state (None: no commit yet); later commits build on it."""
        col = self._col()
        ids = col.get(include=[])["ids"]
        if not ids:
            self.base = 0
            return None
        last = max(ids)
        doc = col.get(ids=[last], include=["documents"])["documents"][0]
        self.base = int(last[1:])
        return LibraryState.model_validate_json(doc)

    def find(self, writer: str, step: int) -> tuple[int, LibraryState] | None:
        """The newest commit ``writer`` made for ``step`` (its number and state), if any."""
        found = self._col().get(
            where={"$and": [{"writer": {"$eq": writer}}, {"step": {"$eq": step}}]}, include=["documents"]
        )
        if not found["ids"]:
            return None
        last = max(range(len(found["ids"])), key=lambda i: found["ids"][i])
        return int(found["ids"][last][1:]), LibraryState.model_validate_json(found["documents"][last])

    def commit(self, new: LibraryState, writer: str) -> None:
        """Optimistic versioning: commit base+1, which only one writer can win."""
        n = self.base + 1
        token = uuid.uuid4().hex
        col = self._col()
        col.add(
            ids=[f"c{n:09d}"],
            documents=[new.model_dump_json()],
            metadatas=[{"token": token, "step": new.step, "writer": writer}],
            embeddings=[[0.0, 1.0]],
        )
        stored = col.get(ids=[f"c{n:09d}"], include=["metadatas"])["metadatas"][0]
        if stored.get("token") != token:
            raise ConflictError(
                f"shared library {self.collection!r} on {self.store} got commit {n} from another writer first; "
                f"step {new.step}'s ops were not applied: reopen the library and retry"
            )
        self.base = n
