"""Packs: round trip, runtime use without the toolkit, and refusal of malicious or broken packs."""

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from experience_store import Experience, ExperienceOp, InjectionSettings, OpResult, Pack, PackError
from experience_store import pack_format as pack_mod

LESSONS = [
    "When adding fractions, rewrite both over a common denominator first.",
    "When a triangle is right-angled, use the Pythagorean theorem for the missing side.",
    "When a percentage changes twice, multiply the growth factors instead of adding percentages.",
    "When counting arrangements with repeats, divide by the factorial of each repeat count.",
]


def make_pack(**meta) -> Pack:
    exps = [Experience(id=f"E{i + 1}", text=t, created_step=1, updated_step=1) for i, t in enumerate(LESSONS)]
    hist = [
        OpResult(step=1, op=ExperienceOp(op="ADD", text=t), status="applied", result_id=f"E{i + 1}")
        for i, t in enumerate(LESSONS)
    ]
    return Pack.build(exps, hist, task="demo", policy_model="sim", **meta)


def test_round_trip_zip_and_directory(tmp_path):
    pack = make_pack(name="demo-lessons")
    for target in (tmp_path / "x.zip", tmp_path / "xdir"):
        pack.write(target)
        back = Pack.load(target)
        assert [e.text for e in back.active] == LESSONS
        assert back.manifest.counts == {"experiences": 4, "retired": 0, "history": 4}
        assert back.manifest.embedding == {"name": "lexical", "dim": 512}
        assert set(back.manifest.files) == {"experiences.jsonl", "history.jsonl"}
    assert "Pack.load" in (tmp_path / "xdir" / "README.md").read_text()


def test_render_retrieves_the_relevant_lesson_within_budget(tmp_path):
    pack = make_pack()
    pack.write(tmp_path / "x.zip")
    loaded = Pack.load(tmp_path / "x.zip")
    assert (
        loaded.render(
            "a triangle with a right angle: find the missing side", InjectionSettings(mode="retrieve", top_k=1)
        )
        == f"[E2] {LESSONS[1]}"
    )
    everything = loaded.render("anything", InjectionSettings(mode="auto", budget_tokens=10_000))
    assert everything.count("\n") == 3  # auto: all four fit the budget
    small = loaded.inject("percentage growth twice", InjectionSettings(mode="auto", budget_tokens=30))
    assert small.mode == "retrieve" and small.ids[0] == "E3" and small.tokens <= 30


def test_runtime_import_cannot_reach_the_toolkit(tmp_path):
    make_pack().write(tmp_path / "x.zip")
    code = f"""
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in ('tfgrpo', 'torch', 'litellm'):
            raise ImportError('blocked: ' + name)
sys.meta_path.insert(0, Block())
from experience_store import InjectionSettings, Pack
print(Pack.load({str(tmp_path / "x.zip")!r}).render('right triangle side', InjectionSettings(mode='retrieve', top_k=1)))
assert not any(m.split('.')[0] in ('tfgrpo', 'torch', 'litellm') for m in sys.modules)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == f"[E2] {LESSONS[1]}"


def _rezip(src: Path, dst: Path, edit) -> Path:
    with zipfile.ZipFile(src) as zf:
        files = {i.filename: zf.read(i) for i in zf.infolist()}
    with zipfile.ZipFile(dst, "w", zipfile.ZIP_DEFLATED) as out:
        for name, data in edit(files):
            out.writestr(name, data)
    return dst


def _symlink_named(files):
    for name, data in files.items():
        if name == "README.md":
            info = zipfile.ZipInfo("README.md")
            info.external_attr = 0o120777 << 16
            yield info, b"/etc/passwd"
        else:
            yield name, data


def _manifest(change):
    def edit(files):
        meta = json.loads(files["manifest.json"])
        change(meta)
        files["manifest.json"] = json.dumps(meta).encode()
        return files.items()

    return edit


def _replace(name, data):
    def edit(files):
        files[name] = data
        return files.items()

    return edit


def _extra(name, data):
    def edit(files):
        return [*files.items(), (name, data)]

    return edit


def _bad_experience_line(files):
    lines = files["experiences.jsonl"].decode().splitlines()
    lines[1] = json.dumps({"id": "E2"})  # no text
    data = ("\n".join(lines) + "\n").encode()
    files["experiences.jsonl"] = data
    meta = json.loads(files["manifest.json"])
    import hashlib

    meta["files"]["experiences.jsonl"] = {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
    files["manifest.json"] = json.dumps(meta).encode()
    return files.items()


@pytest.mark.parametrize(
    "edit,message",
    [
        (_extra("../evil.txt", b"x"), "points outside the pack"),
        (_extra("/etc/evil", b"x"), "points outside the pack"),
        (_extra("sub/../../x", b"x"), "points outside the pack"),
        (_extra("run.py", b"import os"), "unexpected entry 'run.py'"),
        (_symlink_named, "is a symlink"),
        (_extra("README.md", b"again"), "appears twice"),
        (_replace("experiences.jsonl", b"\x00" * (4 << 20)), "zip bomb"),
        (_replace("manifest.json", b"{not json"), "manifest.json is not valid JSON"),
        (_manifest(lambda m: m.update(format_version=99)), "format version 99 is not supported"),
        (_manifest(lambda m: m.update(format="something-else")), "does not describe"),
        (_manifest(lambda m: m.update(counts="many")), "manifest.json: counts"),
        (_manifest(lambda m: m.update(embedding={"name": "word2vec"})), "unknown embedder"),
        (
            _replace("experiences.jsonl", b'{"id": "E1", "text": "When X, do the wrong thing."}\n'),
            "checksum mismatch for experiences.jsonl",
        ),
        (_bad_experience_line, "experiences.jsonl line 2: text: Field required"),
    ],
)
@pytest.mark.filterwarnings("ignore:Duplicate name")
def test_malicious_or_broken_pack_is_refused_in_one_line(tmp_path, edit, message):
    good = make_pack().write(tmp_path / "good.zip")
    bad = _rezip(good, tmp_path / "bad.zip", edit)
    with pytest.raises(PackError) as exc:
        Pack.load(bad)
    assert message in str(exc.value)
    assert "\n" not in str(exc.value)


def test_size_limits_are_enforced_without_trusting_headers(tmp_path, monkeypatch):
    good = make_pack().write(tmp_path / "good.zip")
    monkeypatch.setattr(pack_mod, "MAX_MEMBER_BYTES", 200)
    with pytest.raises(PackError, match="over the 200-byte limit"):
        Pack.load(good)
    monkeypatch.setattr(pack_mod, "MAX_MEMBER_BYTES", 1 << 20)
    monkeypatch.setattr(pack_mod, "MAX_TOTAL_BYTES", 1000)
    with pytest.raises(PackError, match="total over"):
        Pack.load(good)


def test_directory_pack_with_symlink_or_tampering_is_refused(tmp_path):
    d = make_pack().write(tmp_path / "dir")
    os.symlink("/etc/hostname", d / "README.md.tmp")
    with pytest.raises(PackError, match="symlink"):
        Pack.load(d)
    (d / "README.md.tmp").unlink()
    (d / "experiences.jsonl").write_text((d / "experiences.jsonl").read_text().replace("common", "uncommon"))
    with pytest.raises(PackError, match="checksum mismatch"):
        Pack.load(d)
    with pytest.raises(PackError, match="not a readable zip"):
        Pack.load(tmp_path / "dir" / "manifest.json")


def test_diff_and_merge_dedup_across_packs(tmp_path):
    a = make_pack()
    other = [
        Experience(id="E1", text=LESSONS[0].upper()),  # exact duplicate up to case
        Experience(id="E2", text="When a triangle is right-angled, use the Pythagorean theorem for the missing side!"),
        Experience(id="E3", text="When dividing by a fraction, multiply by its reciprocal."),
    ]
    b = Pack.build(other, [], task="demo")
    d = a.diff(b)
    assert [e.text for e in d.added][-1] == other[2].text and d.same == 1
    merged, skipped = a.merge(b)
    assert len(merged.active) == 5
    assert [s["duplicate_of"] for s in skipped] == ["E1", "E2"]
    assert merged.active[-1].text == other[2].text and merged.active[-1].id == "E5"
    with pytest.raises(PackError, match="embedded differently"):
        a.merge(Pack.build(other, [], embedding={"name": "lexical", "dim": 64}))


def test_embedding_specs_parse_and_unavailable_ones_fail_in_one_line(tmp_path, monkeypatch):
    from experience_store import StoreError, parse_spec

    assert parse_spec("lexical:64") == {"name": "lexical", "dim": 64}
    assert parse_spec("st:/models/minilm") == {"name": "sentence-transformers", "model": "/models/minilm"}
    assert parse_spec("litellm:openai/text-embedding-3-small") == {
        "name": "litellm",
        "model": "openai/text-embedding-3-small",
    }
    assert parse_spec("chroma-default") == {"name": "chroma-default"}
    with pytest.raises(StoreError, match="needs a model"):
        parse_spec("litellm")
    # a pack whose model is not installed here: a clear message, or re-embed it on load
    exps = [Experience(id="E1", text=LESSONS[0]), Experience(id="E2", text=LESSONS[1])]
    Pack.build(exps, [], embedding={"name": "sentence-transformers", "model": "no-such-model-here"}).write(
        tmp_path / "st.zip"
    )
    pack = Pack.load(tmp_path / "st.zip")
    assert (
        pack.render("q", InjectionSettings(mode="all")) == f"[E1] {LESSONS[0]}\n[E2] {LESSONS[1]}"
    )  # 'all' needs no embedding
    with pytest.raises(StoreError) as exc:
        pack.render("right triangle", InjectionSettings(mode="retrieve"))
    assert "sentence-transformers:no-such-model-here" in str(exc.value) and "\n" not in str(exc.value)
    again = Pack.load(tmp_path / "st.zip", embedding="lexical")
    assert again.inject("right-angled triangle missing side", InjectionSettings(mode="retrieve", top_k=1)).ids == ["E2"]


def test_injection_defaults_to_the_source_runs_settings(tmp_path):
    make_pack(injection={"mode": "retrieve", "budget_tokens": 500, "top_k": 1}).write(tmp_path / "r.zip")
    loaded = Pack.load(tmp_path / "r.zip")
    assert loaded.manifest.injection.model_dump() == {"mode": "retrieve", "budget_tokens": 500, "top_k": 1}
    assert loaded.inject("a right-angled triangle: the missing side").ids == ["E2"]  # retrieve, top 1
    assert (
        len(loaded.inject("a right-angled triangle", InjectionSettings(mode="all")).ids) == 4
    )  # the caller's choice wins
    older = make_pack()  # a pack without recorded settings: InjectionSettings() (all, 2000 tokens, top 8)
    assert older.manifest.injection is None and older.injection_settings() == InjectionSettings()
    assert older.injection_settings().model_dump() == {"mode": "all", "budget_tokens": 2000, "top_k": 8}
    assert len(older.inject("a right-angled triangle").ids) == 4
    with pytest.raises(Exception, match="injection"):
        make_pack(injection={"mode": "everything"})
