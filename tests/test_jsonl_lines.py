"""JSONL written with line separators escaped and read on "\\n" alone (issue 14 item 6): text
holding U+2028, U+2029 or NEL never splits a record, and a resume never deletes a line it
cannot read: it stops with one line naming the file and line."""

import json

import pytest

from tfgrpo.errors import UserError
from tfgrpo.resources import jsonl_rows
from tfgrpo.rundir import GROUPS, ROLLOUTS, STEPS, RunDir, save_eval

SEPARATORS = "a\u2028b\u2029c\x85d\ne\rf\x0bg\x0ch\x1ci"


def test_records_with_line_separators_survive_append_read_and_resume(tmp_path):
    rd = RunDir(tmp_path / "run").create()
    rows = [{"step": s, "text": f"answer {s}.{i} {SEPARATORS}"} for s in (1, 2) for i in range(16)]
    rd.append(ROLLOUTS, rows)
    text = rd.file(ROLLOUTS).read_text(encoding="utf-8")
    assert len(text.splitlines()) == len(rows)  # even str.splitlines sees one record per line
    assert not set("\u2028\u2029\x85") & set(text)
    assert rd.read(ROLLOUTS) == rows
    rd.discard_after(2)  # what a plain --resume does first
    assert rd.read(ROLLOUTS) == rows


def test_files_from_older_versions_with_raw_separators_are_read_and_rewritten_escaped(tmp_path):
    rd = RunDir(tmp_path / "run").create()
    rows = [{"step": 1, "text": "x\u2028y"}, {"step": 2, "text": "z\x85w"}, {"step": 3, "text": "gone"}]
    rd.file(GROUPS).write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    assert rd.read(GROUPS) == rows
    rd.discard_after(2)
    assert rd.read(GROUPS) == rows[:2]
    assert "\u2028" not in rd.file(GROUPS).read_text(encoding="utf-8")


def test_a_line_cut_short_by_a_kill_is_skipped_and_dropped_on_resume(tmp_path):
    rd = RunDir(tmp_path / "run").create()
    rd.append(ROLLOUTS, [{"step": 1, "text": "ok"}])
    with rd.file(ROLLOUTS).open("a") as f:
        f.write('{"step": 2, "text": "half a li')
    assert rd.read(ROLLOUTS) == [{"step": 1, "text": "ok"}]
    rd.discard_after(1)
    assert rd.file(ROLLOUTS).read_text() == '{"step": 1, "text": "ok"}\n'


@pytest.mark.parametrize("bad", ['{"step": 1, "text": "broken', "[1, 2]", "\xff\xfe", "[" * 100_000 + "]" * 100_000])
def test_resume_never_deletes_a_line_it_cannot_read(tmp_path, bad):
    rd = RunDir(tmp_path / "run").create()
    rd.append(ROLLOUTS, [{"step": 1, "text": "first"}])
    with rd.file(ROLLOUTS).open("ab") as f:
        f.write(bad.encode("latin-1") if bad == "\xff\xfe" else bad.encode())
        f.write(b'\n{"step": 1, "text": "third"}\n')
    before = rd.file(ROLLOUTS).read_bytes()
    with pytest.raises(UserError) as e:
        rd.discard_after(1)
    assert str(e.value).startswith(f"{rd.file(ROLLOUTS)}:2: unreadable record") and "\n" not in str(e.value)
    assert rd.file(ROLLOUTS).read_bytes() == before


def test_a_corrupt_step_record_is_one_line_naming_file_and_line(tmp_path):
    rd = RunDir(tmp_path / "run").create()
    rd.file(STEPS).write_text('{"step": "one"}\n')
    with pytest.raises(UserError, match=r"steps\.jsonl:1: unreadable step record"):
        rd.steps()


def test_saved_eval_results_are_escaped(tmp_path):
    out = save_eval(tmp_path / "eval", {"n": 1}, [{"answer": SEPARATORS}])
    text = (out / "results.jsonl").read_text(encoding="utf-8")
    assert len(text.splitlines()) == 1 and json.loads(text) == {"answer": SEPARATORS}


def test_a_dataset_with_line_separators_in_a_value_is_valid(tmp_path):
    p = tmp_path / "data.jsonl"
    rows = [{"id": "q1", "question": "What is 2\u20282?", "answer": "4"}, {"id": "q2", "question": "x\x85y", "answer": "1"}]
    p.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    assert jsonl_rows(p) == rows

