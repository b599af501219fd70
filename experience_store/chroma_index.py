"""The Chroma side of a library: the client (a persistent index in the library directory, or a
Chroma server shared by several writers) and the collection of active experiences, kept in
line with the current version (rebuilt from it whenever the two disagree, e.g. after a crash)."""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from experience_store.edits import LibraryState
from experience_store.errors import StoreError
from experience_store.retrieval import Index

log = logging.getLogger(__name__)
COLLECTION = "experiences"


def collection_name(name: str) -> str:
    """A Chroma collection name (3-512 of [a-zA-Z0-9._-], alphanumeric at both ends)."""
    clean = re.sub(r"[^a-zA-Z0-9._-]+", "-", name).strip("-._")
    return f"lib-{clean or 'x'}-x"[:500] if len(clean) < 3 else clean[:500]


class Guarded:
    """A Chroma server's client, or a collection of it, whose lost connection (the server stopped
    mid-run) is a one-line StoreError instead of httpx's transport error."""

    def __init__(self, target: Any, store: str):
        self._target, self._store = target, store

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._target, name)
        if not callable(attr):
            return attr

        def call(*args: Any, **kwargs: Any) -> Any:
            import httpx

            try:
                result = attr(*args, **kwargs)
            except (httpx.TransportError, ConnectionError) as e:
                first = str(e).strip().splitlines()[0][:200] if str(e).strip() else ""
                raise StoreError(f"lost the Chroma server at {self._store}: {type(e).__name__}: {first}") from None
            return Guarded(result, self._store) if type(result).__name__ == "Collection" else result

        return call


class ChromaIndex:
    """``store=None``: ``<path>/chroma``; ``store="http://host:port"``: that server."""

    def __init__(self, path: Path, store: str | None, collection: str = COLLECTION):
        self.path = path
        self.store = store
        self.name = collection
        self._client: Any = None
        self._collection: Any = None

    def client(self) -> Any:
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
                    client = chromadb.HttpClient(
                        host=parsed.hostname, port=parsed.port or 8000, ssl=parsed.scheme == "https", settings=settings
                    )
                    client.heartbeat()
                except Exception as e:
                    raise StoreError(
                        f"cannot reach the Chroma server at {self.store}: {str(e).splitlines()[0][:200]}"
                    ) from None
                self._client = Guarded(client, self.store)
        return self._client

    def collection(self) -> Any:
        if self._collection is None:
            self._collection = self.client().get_or_create_collection(
                self.name, embedding_function=None, metadata={"hnsw:space": "cosine"}
            )
        return self._collection

    def sync(self, state: LibraryState) -> None:
        """Make the collection hold exactly ``state``'s active experiences (cheap when it does)."""
        col = self.collection()
        have = col.get(include=["documents", "metadatas"])
        indexed = {
            i: (d, (m or {}).get("revision")) for i, d, m in zip(have["ids"], have["documents"], have["metadatas"])
        }
        want = {e.id: e for e in state.active()}
        stale = [i for i in indexed if i not in want]
        if stale:
            col.delete(ids=stale)
        changed = [e for e in want.values() if indexed.get(e.id) != (e.text, e.revision)]
        if changed:
            Index(col, state.embedding).upsert(changed)

    def sync_quietly(self, state: LibraryState) -> None:
        try:
            self.sync(state)
        except Exception as e:  # the version files stay the source of truth; next open resyncs
            log.warning("could not restore the Chroma index: %s", e)
