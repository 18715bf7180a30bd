"""Streaming, atomic writers; the train/val split; one output whatever path a trace takes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from mmat_plugins.formatters.rr_orr import ORRFormatter, RRFormatter

from mmat_core.exporter import view_decoder
from mmat_core.writers import JsonArrayWriter, RecordWriter, SkipTrace, dumps_bytes, in_validation, validation_bucket
from tests.formats import cases


def test_output_appears_only_when_closed(tmp_path: Path) -> None:
    writer = RRFormatter().open(tmp_path, cases.context())
    writer.write(cases.ocr_receipt())
    assert not (tmp_path / "rr.jsonl").exists()
    writer.close()
    assert (tmp_path / "rr.jsonl").read_text().count("\n") == 1


def test_abort_leaves_neither_file_nor_temporary(tmp_path: Path) -> None:
    writer = RRFormatter().open(tmp_path, cases.context())
    writer.write(cases.ocr_receipt())
    writer.abort()
    assert list(tmp_path.iterdir()) == []


def test_traces_that_are_not_kept_are_left_out(tmp_path: Path) -> None:
    writer = ORRFormatter().open(tmp_path, cases.context())
    for trace in (cases.ocr_receipt(), cases.dropped_case()):
        writer.write(trace)
    writer.close()
    ids = [json.loads(line)["id"] for line in (tmp_path / "orr.jsonl").read_text().splitlines()]
    assert ids == ["viscot/sroie/0001"]


def test_skipped_trace_is_quarantined_with_its_reason(tmp_path: Path) -> None:
    def refuse(trace: object) -> dict:
        raise SkipTrace("image_missing", "x.png")

    writer = RecordWriter(tmp_path / "x.jsonl", refuse, formatter="demo")
    writer.write(cases.ocr_receipt())
    writer.close()
    assert [(r.reason, r.stage, r.row) for r in writer.rejected] == [("image_missing", "format:demo", "viscot/sroie/0001")]


def test_json_array_writer_streams_a_valid_array(tmp_path: Path) -> None:
    writer = JsonArrayWriter(tmp_path / "a.json", lambda trace: {"id": trace.id})
    for trace in (cases.ocr_receipt(), cases.rag_landmark()):
        writer.write(trace)
    writer.close()
    assert json.loads((tmp_path / "a.json").read_text()) == [{"id": "viscot/sroie/0001"}, {"id": "infoseek/val/oven_04"}]


def test_empty_json_array_is_valid(tmp_path: Path) -> None:
    writer = JsonArrayWriter(tmp_path / "a.json", lambda trace: {})
    writer.close()
    assert json.loads((tmp_path / "a.json").read_text()) == []


def test_fast_serializer_writes_the_same_bytes_as_the_json_module() -> None:
    text = "".join(chr(c) for c in range(0x3000) if not 0xD800 <= c < 0xE000) + "\U0001f600\u2028"
    record = {"id": text, "messages": [{"role": "user", "content": text}], "images": [], "provenance": {"offline": True, "subset": None}}
    assert dumps_bytes(record) == json.dumps(record, ensure_ascii=False, separators=(",", ":")).encode()


@pytest.mark.parametrize("name", sorted(cases.CASES))
def test_model_dict_and_view_paths_give_the_same_record(name: str) -> None:
    trace = cases.CASES[name]()
    view = view_decoder()(trace.model_dump_json().encode())
    for formatter in (RRFormatter(), ORRFormatter()):
        from_model = dumps_bytes(formatter.record(trace, cases.context()))
        assert from_model == dumps_bytes(formatter.record(trace.model_dump(mode="json"), cases.context()))
        assert from_model == dumps_bytes(formatter.record(view, cases.context()))


def test_split_is_decided_by_the_sample_id_alone() -> None:
    assert validation_bucket("a/1", "s") == validation_bucket("a/1", "s")
    assert validation_bucket("a/1", "s") != validation_bucket("a/1", "other salt")


def test_split_ratio_is_close_to_the_requested_share() -> None:
    share = sum(in_validation(f"id-{i}", 0.1, "mmat-split-1") for i in range(20_000)) / 20_000
    assert 0.09 < share < 0.11


def test_ratio_zero_puts_nothing_in_validation() -> None:
    assert not any(in_validation(f"id-{i}", 0.0, "s") for i in range(1000))


def test_paper_naming_writes_the_released_file_names(tmp_path: Path) -> None:
    files = []
    for formatter in (RRFormatter(naming="paper", val_ratio=0.5), ORRFormatter(naming="paper", val_ratio=0.5)):
        writer = formatter.open(tmp_path, cases.context())
        for make in cases.CASES.values():
            writer.write(make())
        files += [p.name for p in writer.close()]
    assert files == ["dataset_qa_rr_train_all_RR_sys.jsonl", "dataset_qa_rr_val_all_RR_sys.jsonl",
                     "dataset_qa_rr_train_all_ORR.jsonl", "dataset_qa_rr_val_all_ORR.jsonl"]


def test_rr_and_orr_splits_put_each_sample_on_the_same_side(tmp_path: Path) -> None:
    for formatter in (RRFormatter(naming="paper", val_ratio=0.5), ORRFormatter(naming="paper", val_ratio=0.5)):
        writer = formatter.open(tmp_path, cases.context())
        for make in cases.CASES.values():
            writer.write(make())
        writer.close()

    def ids(name: str) -> list[str]:
        return [json.loads(line)["id"] for line in (tmp_path / name).read_text().splitlines()]

    assert ids("dataset_qa_rr_val_all_RR_sys.jsonl") == ids("dataset_qa_rr_val_all_ORR.jsonl")
    assert len(ids("dataset_qa_rr_train_all_RR_sys.jsonl")) + len(ids("dataset_qa_rr_val_all_RR_sys.jsonl")) == 3


def test_paper_naming_defaults_to_one_percent_validation() -> None:
    assert RRFormatter(naming="paper").val_ratio() == 0.01
    assert RRFormatter().val_ratio() == 0.0


def test_split_with_mmat_naming_suffixes_the_file(tmp_path: Path) -> None:
    writer = RRFormatter(val_ratio=0.5).open(tmp_path, cases.context())
    assert [p.name for p in writer.close()] == ["rr_train.jsonl", "rr_val.jsonl"]
