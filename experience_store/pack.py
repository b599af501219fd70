"""Experience packs: a learned library that travels, as a zip or a directory.

Layout (design.md)::

    manifest.json       PackManifest: format version, toolkit version, task, models, embedding
                        spec, eval results when known, counts, sha256 of every data file
    experiences.jsonl   one Experience per line (retired ones kept: ids stay meaningful)
    history.jsonl       the ops that built it (OpResult per line)
    README.md           for people; not read back

Loading is hardened and executes nothing: only those four names, no ``..``/absolute paths,
no symlinks, size limits per member and in total (zip bombs), strict JSON and schema
validation, a known format version and matching checksums. Any failure is one ``PackError``.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import tempfile
import zipfile
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path, PurePosixPath
from typing import Any, Sequence

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from experience_store.embedding import DEFAULT_SPEC, parse_spec, same_spec, spec_label
from experience_store.errors import PackError, StoreError
from experience_store.edits import norm_text
from experience_store.models import Experience, OpResult
from experience_store.retrieval import Index, Injection, Selector, TokenCounter
from experience_store.settings import InjectionSettings

FORMAT = "tfgrpo-experience-pack"
FORMAT_VERSION = 1
DATA_FILES = ("experiences.jsonl", "history.jsonl")
ALLOWED = ("manifest.json", *DATA_FILES, "README.md")
MAX_MEMBER_BYTES = 64 * 1024 * 1024
MAX_TOTAL_BYTES = 128 * 1024 * 1024
MAX_RATIO = 100  # uncompressed / compressed, per member
MERGE_THRESHOLD = 0.9  # cosine similarity at which a lesson counts as a near-duplicate in a merge


class FileEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")
    sha256: str
    bytes: int


class PackManifest(BaseModel):
    """Field order is the file format."""

    model_config = ConfigDict(extra="forbid")
    format: str = FORMAT
    format_version: int = FORMAT_VERSION
    toolkit_version: str | None = None
    created: str = Field(default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="seconds"))
    name: str | None = None
    task: str | None = None
    policy_model: str | None = None
    judge_model: str | None = None
    source_run: str | None = None
    source_step: int | None = None
    embedding: dict[str, Any] = Field(default_factory=lambda: dict(DEFAULT_SPEC))
    injection: InjectionSettings | None = None
    eval: dict[str, Any] | None = None
    counts: dict[str, int] = Field(default_factory=dict)
    files: dict[str, FileEntry] = Field(default_factory=dict)


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _jsonl(records: Sequence[BaseModel]) -> bytes:
    return "".join(r.model_dump_json() + "\n" for r in records).encode()


@dataclass
class PackDiff:
    added: list[Experience] = field(default_factory=list)      # in B only (by normalised text)
    removed: list[Experience] = field(default_factory=list)    # in A only
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
        return {"experiences.jsonl": _jsonl(self.experiences), "history.jsonl": _jsonl(self.history)}

    def _seal(self) -> None:
        payload = self._payload()
        self.manifest.files = {n: FileEntry(sha256=_sha(b), bytes=len(b)) for n, b in payload.items()}
        self.manifest.counts = {"experiences": len(self.active), "retired": len(self.experiences) - len(self.active),
                                "history": len(self.history)}

    @property
    def active(self) -> list[Experience]:
        return [e for e in self.experiences if e.status == "active"]

    def readme(self) -> str:
        m = self.manifest
        lines = [f"# Experience pack{': ' + m.name if m.name else ''}", "",
                 f"{len(self.active)} lessons learned by training-free GRPO"
                 + (f" on task `{m.task}`" if m.task else "") + (f" with policy `{m.policy_model}`" if m.policy_model else "") + ".",
                 "", "Use it without the toolkit (pydantic, chromadb and jinja2 only):", "", "```python",
                 "from experience_store import Pack", "", 'context = Pack.load("this.zip").render("the user\'s question")',
                 "```", "", f"Embedding: `{spec_label(m.embedding)}`. Created {m.created}.", ""]
        if m.eval:
            lines += ["Evaluation: `" + json.dumps({k: m.eval[k] for k in list(m.eval)[:6]}) + "`", ""]
        lines += ["## Lessons", ""] + [f"- [{e.id}] {e.text}" for e in self.active]
        return "\n".join(lines) + "\n"

    def write(self, path: str | Path) -> Path:
        """Write a zip (path ending in .zip) or a directory; atomically, never half a pack."""
        self._seal()
        out = Path(path)
        files = {"manifest.json": self.manifest.model_dump_json(indent=1).encode(), **self._payload(),
                 "README.md": self.readme().encode()}
        out.parent.mkdir(parents=True, exist_ok=True)
        if out.suffix == ".zip":
            fd, tmp = tempfile.mkstemp(dir=out.parent, suffix=".part")
            with os.fdopen(fd, "wb") as fh, zipfile.ZipFile(fh, "w", zipfile.ZIP_DEFLATED) as zf:
                for name, data in files.items():
                    zf.writestr(name, data)
            os.replace(tmp, out)
        else:
            out.mkdir(parents=True, exist_ok=True)
            for name, data in files.items():
                (out / name).write_bytes(data)
        return out

    # ---------------------------------------------------------------- loading
    @classmethod
    def load(cls, path: str | Path, *, embedding: dict[str, Any] | str | None = None) -> "Pack":
        """Read and verify a pack. ``embedding`` re-embeds it with another spec (e.g. when its
        own model is not installed here)."""
        p = Path(path)
        if p.is_symlink():
            raise PackError(f"{p}: refusing a symlinked pack")
        if p.is_dir():
            raw = _read_dir(p)
        elif p.is_file():
            raw = _read_zip(p)
        else:
            raise PackError(f"pack not found: {p}")
        pack = _parse(p, raw)
        if embedding is not None:
            try:
                pack.manifest.embedding = parse_spec(embedding)
            except StoreError as e:
                raise PackError(str(e)) from None
        return pack

    # -------------------------------------------------------------- retrieval
    def index(self) -> Index:
        if self._index is None:
            self._index = Index.in_memory(self.active, self.manifest.embedding)
        return self._index

    def injection_settings(self) -> InjectionSettings:
        """Mode, budget and top-k as the source run used them (``InjectionSettings()`` for packs
        that do not record them)."""
        return self.manifest.injection or InjectionSettings()

    def inject(self, query: str, settings: InjectionSettings | None = None, *,
               count_tokens: TokenCounter | None = None) -> Injection:
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
        return PackDiff(added=[e for k, e in theirs.items() if k not in mine],
                        removed=[e for k, e in mine.items() if k not in theirs],
                        same=len(mine.keys() & theirs.keys()))

    def merge(self, other: "Pack", *, threshold: float = MERGE_THRESHOLD, name: str | None = None) -> tuple["Pack", list[dict[str, Any]]]:
        """This pack's lessons plus the other's that are not (near-)duplicates of one already
        kept; ids renumbered E1.. in order. Returns the pack and the skipped duplicates."""
        if not same_spec(self.manifest.embedding, other.manifest.embedding):
            raise PackError(f"cannot merge packs embedded differently ({spec_label(self.manifest.embedding)} vs "
                            f"{spec_label(other.manifest.embedding)}); load one with embedding=... to re-embed it")
        kept: list[Experience] = []
        skipped: list[dict[str, Any]] = []
        index = Index.in_memory([], self.manifest.embedding)
        seen: dict[str, str] = {}
        for source, e in [("A", e) for e in self.active] + [("B", e) for e in other.active]:
            key = norm_text(e.text)
            near = index.near_duplicates([e.text], threshold)[0] if kept else []
            if key in seen or near:
                skipped.append({"from": source, "id": e.id, "text": e.text, "duplicate_of": seen.get(key) or near[0][0]})
                continue
            new = e.model_copy(deep=True, update={"id": f"E{len(kept) + 1}"})
            new.provenance.merged_from = [f"{source}:{e.id}"]
            kept.append(new)
            seen[key] = new.id
            index.upsert([new])
        m = self.manifest
        return Pack.build(kept, [], name=name, task=m.task if m.task == other.manifest.task else None,
                          policy_model=m.policy_model if m.policy_model == other.manifest.policy_model else None,
                          toolkit_version=m.toolkit_version, embedding=m.embedding), skipped


# ------------------------------------------------------------------ hardened reading
def _read_zip(path: Path) -> dict[str, bytes]:
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as e:
        raise PackError(f"{path}: not a readable zip ({e})") from None
    out: dict[str, bytes] = {}
    total = 0
    with zf:
        infos = zf.infolist()
        if len(infos) > 64:
            raise PackError(f"{path}: {len(infos)} entries; a pack has at most {len(ALLOWED)} ({', '.join(ALLOWED)})")
        for info in infos:
            name = info.filename
            _check_name(path, name)
            mode = info.external_attr >> 16
            if stat.S_ISLNK(mode):
                raise PackError(f"{path}: entry {name!r} is a symlink; refusing the pack")
            if info.is_dir():
                raise PackError(f"{path}: unexpected directory entry {name!r}")
            if info.file_size > MAX_MEMBER_BYTES:
                raise PackError(f"{path}: entry {name!r} is {info.file_size} bytes, over the {MAX_MEMBER_BYTES}-byte limit")
            if info.compress_size and info.file_size / info.compress_size > MAX_RATIO and info.file_size > 1 << 20:
                raise PackError(f"{path}: entry {name!r} expands {info.file_size // info.compress_size}x (zip bomb?); refusing the pack")
            total += info.file_size
            if total > MAX_TOTAL_BYTES:
                raise PackError(f"{path}: entries total over the {MAX_TOTAL_BYTES}-byte limit; refusing the pack")
            if name in out:
                raise PackError(f"{path}: entry {name!r} appears twice")
            try:
                with zf.open(info) as fh:
                    data = fh.read(MAX_MEMBER_BYTES + 1)  # never trust the declared size
            except (zipfile.BadZipFile, OSError, RuntimeError, NotImplementedError) as e:
                raise PackError(f"{path}: entry {name!r} cannot be read ({e})") from None
            if len(data) > MAX_MEMBER_BYTES or len(data) != info.file_size:
                raise PackError(f"{path}: entry {name!r} is not the size its header says; refusing the pack")
            out[name] = data
    return out


def _check_name(path: Path, name: str) -> None:
    pure = PurePosixPath(name.replace("\\", "/"))
    if pure.is_absolute() or ".." in pure.parts or ":" in name or name.startswith(("/", "\\")):
        raise PackError(f"{path}: entry {name!r} points outside the pack; refusing the pack")
    if name not in ALLOWED:
        raise PackError(f"{path}: unexpected entry {name!r} (a pack holds only {', '.join(ALLOWED)})")


def _read_dir(path: Path) -> dict[str, bytes]:
    out: dict[str, bytes] = {}
    total = 0
    for child in sorted(path.iterdir()):
        if child.is_symlink():
            raise PackError(f"{path}: {child.name!r} is a symlink; refusing the pack")
        _check_name(path, child.name)
        if not child.is_file():
            raise PackError(f"{path}: {child.name!r} is not a regular file")
        size = child.stat().st_size
        total += size
        if size > MAX_MEMBER_BYTES or total > MAX_TOTAL_BYTES:
            raise PackError(f"{path}: {child.name!r} is over the size limit; refusing the pack")
        out[child.name] = child.read_bytes()
    return out


def _parse(path: Path, raw: dict[str, bytes]) -> Pack:
    for name in ("manifest.json", *DATA_FILES):
        if name not in raw:
            raise PackError(f"{path}: missing {name}; not an experience pack")
    try:
        meta = json.loads(raw["manifest.json"])
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise PackError(f"{path}: manifest.json is not valid JSON ({e})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise PackError(f"{path}: manifest.json does not describe a {FORMAT}")
    if meta.get("format_version") != FORMAT_VERSION:
        raise PackError(f"{path}: pack format version {meta.get('format_version')!r} is not supported here "
                        f"(this experience_store reads version {FORMAT_VERSION}); upgrade to read it")
    try:
        manifest = PackManifest.model_validate(meta)
    except ValidationError as e:
        raise PackError(f"{path}: manifest.json: {_first_error(e)}") from None
    for name in DATA_FILES:
        entry = manifest.files.get(name)
        if entry is None:
            raise PackError(f"{path}: manifest.json has no checksum for {name}")
        if _sha(raw[name]) != entry.sha256 or len(raw[name]) != entry.bytes:
            raise PackError(f"{path}: checksum mismatch for {name}; the pack was altered or damaged")
    experiences = _records(path, "experiences.jsonl", raw["experiences.jsonl"], Experience)
    history = _records(path, "history.jsonl", raw["history.jsonl"], OpResult)
    ids = [e.id for e in experiences]
    if len(set(ids)) != len(ids):
        raise PackError(f"{path}: experiences.jsonl repeats an id")
    try:
        manifest.embedding = parse_spec(manifest.embedding)
    except StoreError as e:
        raise PackError(f"{path}: {e}") from None
    return Pack(manifest, experiences, history)


def _records(path: Path, name: str, data: bytes, model: type[BaseModel]) -> list[Any]:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise PackError(f"{path}: {name} is not UTF-8 text") from None
    out = []
    for n, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            out.append(model.model_validate_json(line))
        except ValidationError as e:
            raise PackError(f"{path}: {name} line {n}: {_first_error(e)}") from None
    return out


def _first_error(e: ValidationError) -> str:
    err = e.errors()[0]
    where = ".".join(str(x) for x in err["loc"])
    return f"{where}: {err['msg']}" if where else err["msg"]
