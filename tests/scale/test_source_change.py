"""A resume after the source rows changed (issue 15): finished samples built from a row that has
been edited since are never kept silently. Under ``resume.on_source_change: refuse`` (the
default) the resume stops before any model call and names them; ``regenerate`` builds exactly
the changed ones again; ``keep`` keeps the stored ones and says so in run.json."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from mmat_core import Pipeline
from mmat_core.config import load_config
from mmat_core.resume import SourceChangedError
from tests.core.conftest import make_png


def write_rows(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")


def pipeline(data: Path, **resume: str) -> Pipeline:
    config = load_config(None, {"source": {"name": "jsonl", "path": str(data)}, "tools": [], "critics": [],
                                "formatters": ["rr"], "search": None, "resume": resume})
    return Pipeline.from_config(config)


def rows_of(out: Path) -> dict[str, str]:
    """row id (``a`` of ``jsonl/a/0``) -> the RR record's text, from rr.jsonl."""
    records = [json.loads(line) for line in (out / "rr.jsonl").read_text().splitlines()]
    return {record["id"].split("/")[1]: json.dumps(record) for record in records}


def original() -> list[dict]:
    return [{"id": "a", "question": "What colour is it?", "answer": "white", "image": "p.png"},
            {"id": "b", "question": "Is there text?", "answer": "no", "image": "p.png"},
            {"id": "c", "question": "How tall is it?", "answer": "32", "image": "p.png"}]


def edited() -> list[dict]:
    rows = original()
    rows[0] = {"id": "a", "question": "How wide is it?", "answer": "64", "image": "p.png"}
    return rows


@pytest.fixture()
def built(tmp_path: Path) -> tuple[Path, Path]:
    """A finished run of the original rows, whose source file then has row `a` edited."""
    make_png(tmp_path / "p.png")
    data, out = tmp_path / "rows.jsonl", tmp_path / "run"
    write_rows(data, original())
    pipeline(data).run(out)
    write_rows(data, edited())
    return data, out


def test_resume_over_an_edited_row_is_refused_before_any_model_call(built: tuple[Path, Path]) -> None:
    data, out = built
    before = (out / "rr.jsonl").read_bytes()
    with pytest.raises(SourceChangedError) as raised:
        pipeline(data).run(out)
    message = str(raised.value)
    assert "1 built from rows edited since ('jsonl/a/0')" in message
    assert "resume.on_source_change=regenerate" in message and "resume.on_source_change=keep" in message
    assert (out / "rr.jsonl").read_bytes() == before  # nothing rewritten


def test_refused_resume_makes_no_model_call_even_for_new_rows(built: tuple[Path, Path]) -> None:
    data, out = built
    write_rows(data, [*edited(), {"id": "d", "question": "Is it round?", "answer": "no", "image": "p.png"}])
    with pytest.raises(SourceChangedError):
        pipeline(data).run(out)
    with sqlite3.connect(out / "run.sqlite") as db:
        assert [row[0] for row in db.execute("SELECT id FROM samples ORDER BY seq")] == ["jsonl/a/0", "jsonl/b/0", "jsonl/c/0"]


def test_regenerate_rebuilds_exactly_the_changed_samples(built: tuple[Path, Path]) -> None:
    data, out = built
    old = rows_of(out)
    result = pipeline(data, on_source_change="regenerate").run(out)
    counts = result.manifest.counts
    assert counts["generated"] == 1 and counts["source_changed_regenerated"] == 1 and counts["skipped_finished"] == 2
    new = rows_of(out)
    assert "How wide is it?" in new["a"] and "64" in new["a"] and "white" not in new["a"]
    assert new["b"] == old["b"] and new["c"] == old["c"]
    # Now built from the current row: a plain resume finds nothing changed.
    again = pipeline(data).run(out)
    assert again.manifest.counts["generated"] == 0


def test_regenerate_of_an_answer_only_edit_is_not_taken_for_a_duplicate(built: tuple[Path, Path]) -> None:
    data, out = built
    rows = original()
    rows[1]["answer"] = "yes"  # same image and question: same dedup key as the stored sample
    write_rows(data, rows)
    result = pipeline(data, on_source_change="regenerate").run(out)
    assert result.manifest.counts["generated"] == 1  # a is back to the text it was built from
    assert "yes" in rows_of(out)["b"]
    assert (out / "quarantine.jsonl").read_text() == ""


def test_regenerate_drops_a_finished_sample_whose_row_is_now_bad(built: tuple[Path, Path]) -> None:
    data, out = built
    rows = original()
    rows[2]["question"] = "   "  # edited into a row curation quarantines
    write_rows(data, rows)
    result = pipeline(data, on_source_change="regenerate").run(out)
    assert result.manifest.counts["source_gone_dropped"] == 1
    assert set(rows_of(out)) == {"a", "b"}
    assert "empty_question" in (out / "quarantine.jsonl").read_text()


def test_resume_after_a_finished_row_was_removed_is_refused(built: tuple[Path, Path]) -> None:
    data, out = built
    write_rows(data, original()[:2])
    with pytest.raises(SourceChangedError) as raised:
        pipeline(data).run(out)
    assert "1 whose rows are no longer in the source or are quarantined now ('jsonl/c/0')" in str(raised.value)


def test_keep_keeps_the_stored_samples_and_says_so_in_run_json(built: tuple[Path, Path]) -> None:
    data, out = built
    old = (out / "rr.jsonl").read_bytes()
    result = pipeline(data, on_source_change="keep").run(out)
    assert result.manifest.counts["source_changed_kept"] == 1 and result.manifest.counts["generated"] == 0
    assert (out / "rr.jsonl").read_bytes() == old
    assert json.loads((out / "run.json").read_text())["counts"]["source_changed_kept"] == 1


def test_a_store_without_fingerprints_is_migrated_and_compared_next_time(built: tuple[Path, Path]) -> None:
    data, out = built
    with sqlite3.connect(out / "run.sqlite") as db:  # a store written before the fingerprint existed
        db.execute("DROP INDEX samples_resume")
        db.execute("ALTER TABLE samples DROP COLUMN source_fp")
        db.execute("CREATE INDEX samples_resume ON samples(seq, id, status, failure, dedup)")
    result = pipeline(data).run(out)  # nothing to compare with: recorded, and said
    assert result.manifest.counts["source_unverified"] == 3
    write_rows(data, original())
    with pytest.raises(SourceChangedError):
        pipeline(data).run(out)
