"""The pack format: the manifest, its limits, and the hardened reading of a pack's members.

Reading executes nothing and trusts nothing: only the four known names, no ``..``/absolute
paths, no symlinks, size limits per member and in total (zip bombs), strict JSON of bounded
depth, schema validation with bounds on every field (ids ``E<number>``, lesson length and
count, integers, embedding spec), a known format version, counts that match the data and
matching checksums. Any failure is one ``PackError`` line.

JSONL members are written with every non-ASCII character escaped (so U+2028, U+2029 and U+0085,
which some readers take for line breaks, never appear raw) and read by splitting on ``\\n`` only.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import stat
import tempfile
import zipfile
from datetime import datetime, timezone
from itertools import accumulate
from pathlib import Path, PurePosixPath
from typing import Annotated, Any, Callable, Sequence, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from experience_store.edits import MAX_LESSON_CHARS
from experience_store.embedding import DEFAULT_SPEC, check_portable
from experience_store.errors import PackError, StoreError
from experience_store.models import Count, Experience, OpResult
from experience_store.settings import InjectionSettings

FORMAT = "tfgrpo-experience-pack"
FORMAT_VERSION = 1
DATA_FILES = ("experiences.jsonl", "history.jsonl")
ALLOWED = ("manifest.json", *DATA_FILES, "README.md")
MAX_MEMBER_BYTES = 64 * 1024 * 1024
MAX_TOTAL_BYTES = 128 * 1024 * 1024
MAX_MANIFEST_BYTES = 1024 * 1024
MAX_RATIO = 100  # uncompressed / compressed, per member
MAX_LESSONS = 100_000  # experiences per pack, retired ones included
MAX_HISTORY = 1_000_000  # op records per pack
MAX_JSON_DEPTH = 16  # nesting of the manifest (eval results included)
MAX_TITLE_CHARS = 200
MAX_TAGS, MAX_TAG_CHARS = 32, 64
ID = re.compile(r"E[1-9][0-9]{0,8}")  # what Library makes: E1, E2, ...
COUNT_KEYS = ("experiences", "retired", "history")

Text = Annotated[str, Field(max_length=500)]
R = TypeVar("R", bound=BaseModel)


class FileEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")
    sha256: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
    bytes: Count


class PackManifest(BaseModel):
    """Field order is the file format."""

    model_config = ConfigDict(extra="forbid")
    format: Text = FORMAT
    format_version: int = FORMAT_VERSION
    toolkit_version: Text | None = None
    created: Text = Field(default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="seconds"))
    name: Text | None = None
    task: Text | None = None
    policy_model: Text | None = None
    judge_model: Text | None = None
    source_run: Text | None = None
    source_step: Count | None = None
    embedding: dict[str, Any] = Field(default_factory=lambda: dict(DEFAULT_SPEC))
    injection: InjectionSettings | None = None
    eval: dict[str, Any] | None = None
    counts: dict[str, Count] = Field(default_factory=dict)
    files: dict[str, FileEntry] = Field(default_factory=dict)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def jsonl(records: Sequence[BaseModel]) -> bytes:
    """One record per line, ASCII only (line separators inside text stay escaped)."""
    return "".join(json.dumps(r.model_dump(mode="json"), ensure_ascii=True) + "\n" for r in records).encode()


def counts(experiences: Sequence[Experience], history: Sequence[OpResult]) -> dict[str, int]:
    active = sum(e.status == "active" for e in experiences)
    return {"experiences": active, "retired": len(experiences) - active, "history": len(history)}


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_members(out: Path, files: dict[str, bytes]) -> None:
    """Write a pack as a zip (``out`` ending in .zip) or a directory, atomically: built beside
    ``out`` and renamed into place, so a reader never sees half a pack. An existing pack there is
    replaced; anything else (a directory with other files, a file that is not a zip) is refused."""
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        if out.is_symlink() or (out.exists() and not _replaceable(out, zipped=out.suffix == ".zip")):
            kind = "a zip" if out.suffix == ".zip" else "a pack directory"
            raise PackError(f"{out} exists and is not {kind}; refusing to overwrite it (choose another --out)")
        if out.suffix == ".zip":
            fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=".part")
            os.fchmod(fd, 0o666 & ~_umask())  # a pack is for sharing: the mode a plain file gets, not mkstemp's 0600
            try:
                with os.fdopen(fd, "wb") as fh, zipfile.ZipFile(fh, "w", zipfile.ZIP_DEFLATED) as zf:
                    for name, data in files.items():
                        zf.writestr(name, data)
                os.replace(tmp, out)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
            return
        tmp_dir = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.", suffix=".part"))
        os.chmod(tmp_dir, 0o777 & ~_umask())  # mkdtemp makes it 0700
        try:
            for name, data in files.items():
                (tmp_dir / name).write_bytes(data)
            if out.exists():  # an earlier pack: moved aside, never half overwritten
                old = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.", suffix=".old"))
                os.replace(out, old / "pack")
                try:
                    os.replace(tmp_dir, out)
                except OSError:
                    os.replace(old / "pack", out)
                    raise
                finally:
                    shutil.rmtree(old, ignore_errors=True)
            else:
                os.replace(tmp_dir, out)
        finally:
            shutil.rmtree(tmp_dir, ignore_errors=True)
    except OSError as e:
        raise PackError(f"cannot write pack {out}: {e.strerror or e}") from None


def _replaceable(out: Path, *, zipped: bool) -> bool:
    if zipped:
        return out.is_file() and zipfile.is_zipfile(out)
    return out.is_dir() and all(p.name in ALLOWED and p.is_file() for p in out.iterdir())


def read_members(path: Path) -> dict[str, bytes]:
    """The raw members of a pack (zip or directory), after the name, type and size checks."""
    if path.is_symlink():
        raise PackError(f"{path}: refusing a symlinked pack")
    if path.is_dir():
        return _read_dir(path)
    if path.is_file():
        return _read_zip(path)
    raise PackError(f"pack not found: {path}")


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
                raise PackError(
                    f"{path}: entry {name!r} is {info.file_size} bytes, over the {MAX_MEMBER_BYTES}-byte limit"
                )
            if info.compress_size and info.file_size / info.compress_size > MAX_RATIO and info.file_size > 1 << 20:
                raise PackError(
                    f"{path}: entry {name!r} expands {info.file_size // info.compress_size}x (zip bomb?); refusing the pack"
                )
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


def parse(path: Path, raw: dict[str, bytes]) -> tuple[PackManifest, list[Experience], list[OpResult]]:
    """Verify a pack's members: the manifest, then each data file against its checksum, then
    every record and the manifest's counts against the data."""
    for name in ("manifest.json", *DATA_FILES):
        if name not in raw:
            raise PackError(f"{path}: missing {name}; not an experience pack")
    if len(raw["manifest.json"]) > MAX_MANIFEST_BYTES:
        raise PackError(f"{path}: manifest.json is over the {MAX_MANIFEST_BYTES}-byte limit")
    try:
        meta = load_json(raw["manifest.json"], MAX_JSON_DEPTH)
    except ValueError as e:  # bad JSON or UTF-8, integers of thousands of digits, nested past MAX_JSON_DEPTH
        raise PackError(f"{path}: manifest.json is not valid JSON ({str(e)[:120] or type(e).__name__})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise PackError(f"{path}: manifest.json does not describe a {FORMAT}")
    if meta.get("format_version") != FORMAT_VERSION:
        raise PackError(
            f"{path}: pack format version {str(meta.get('format_version'))[:20]} is not supported here "
            f"(this experience_store reads version {FORMAT_VERSION}); upgrade to read it"
        )
    try:
        manifest = PackManifest.model_validate(meta)
    except ValidationError as e:
        raise PackError(f"{path}: manifest.json: {first_error(e)}") from None
    try:
        manifest.embedding = check_portable(manifest.embedding)
    except StoreError as e:
        raise PackError(f"{path}: manifest.json: {e}") from None
    if set(manifest.files) != set(DATA_FILES):
        raise PackError(f"{path}: manifest.json lists files {sorted(manifest.files)[:4]}, not {list(DATA_FILES)}")
    for name in DATA_FILES:
        entry = manifest.files[name]
        if sha256(raw[name]) != entry.sha256 or len(raw[name]) != entry.bytes:
            raise PackError(f"{path}: checksum mismatch for {name}; the pack was altered or damaged")
    experiences = _records(path, "experiences.jsonl", raw["experiences.jsonl"], Experience, MAX_LESSONS, _check_lesson)
    history = _records(path, "history.jsonl", raw["history.jsonl"], OpResult, MAX_HISTORY)
    ids = [e.id for e in experiences]
    if len(set(ids)) != len(ids):
        raise PackError(f"{path}: experiences.jsonl repeats an id")
    actual = counts(experiences, history)
    if manifest.counts != actual:
        raise PackError(
            f"{path}: manifest.json counts {dict(list(manifest.counts.items())[:4])} do not match the data {actual}"
        )
    return manifest, experiences, history


def _check_lesson(e: Experience) -> str | None:
    if not ID.fullmatch(e.id):
        return f"id {e.id[:20]!r} is not E followed by a number (E1 to E999999999)"
    if not e.text.strip() or len(e.text) > MAX_LESSON_CHARS:
        return f"{e.id}: lesson text must have 1 to {MAX_LESSON_CHARS} characters, it has {len(e.text.strip())}"
    if e.title is not None and len(e.title) > MAX_TITLE_CHARS:
        return f"{e.id}: title over {MAX_TITLE_CHARS} characters"
    if len(e.tags) > MAX_TAGS or any(len(t) > MAX_TAG_CHARS for t in e.tags):
        return f"{e.id}: more than {MAX_TAGS} tags or a tag over {MAX_TAG_CHARS} characters"
    return None


def _records(
    path: Path, name: str, data: bytes, model: type[R], limit: int, check: Callable[[R], str | None] = lambda r: None
) -> list[R]:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise PackError(f"{path}: {name} is not UTF-8 text") from None
    lines = text.split("\n")  # "\n" only: U+2028 and friends inside a record are not line breaks
    if sum(1 for line in lines if line.strip()) > limit:
        raise PackError(f"{path}: {name} has more than {limit} records")
    out = []
    for n, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = model.model_validate_json(line)
        except ValidationError as e:  # invalid JSON, too deep, out-of-range numbers, schema
            raise PackError(f"{path}: {name} line {n}: {first_error(e)}") from None
        problem = check(record)
        if problem:
            raise PackError(f"{path}: {name} line {n}: {problem}")
        out.append(record)
    return out


def load_json(text: bytes | str, max_depth: int) -> Any:
    """``json.loads`` of text from outside (a pack's manifest, a proxied request body), its nesting
    measured first: deeper than ``max_depth`` is a ValueError before the parser, which recurses
    once per level, could run out of stack. (``tfgrpo.nesting`` is the toolkit's twin of this
    guard: the store never imports the toolkit.)"""
    if json_depth(text) > max_depth:
        raise ValueError(f"nested deeper than {max_depth} levels")
    return json.loads(text)


_NOT_A_BRACKET = bytes(c for c in range(256) if c not in b"[]{}")
_STEP = {ord("["): 1, ord("{"): 1, ord("]"): -1, ord("}"): -1}


def json_depth(text: bytes | str) -> int:
    """How deep the arrays and objects of JSON text nest, measured without parsing it: escaped
    backslashes and quotes go, then strings, and the brackets left are counted."""
    raw = text.encode("utf-8", "surrogatepass") if isinstance(text, str) else text
    raw = raw.replace(b"\\\\", b"").replace(b'\\"', b"")
    brackets = re.sub(rb'"[^"]*"', b"", raw).translate(None, _NOT_A_BRACKET)
    return max(accumulate(map(_STEP.__getitem__, brackets)), default=0)


def first_error(e: ValidationError) -> str:
    err = e.errors()[0]
    where = ".".join(str(x) for x in err["loc"])[:80]
    msg = str(err["msg"]).splitlines()[0][:160]
    return f"{where}: {msg}" if where else msg
