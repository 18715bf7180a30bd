"""RR JSONL -> Traces: the round trip RR -> Trace -> RR is byte-identical, and ORR and the
exports can be derived from what was imported."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mmat_core.exporter import export_run
from mmat_core.importer import import_rr, parse_rr_system, split_observation
from mmat_core.store import RunStore
from tests.formats import cases


def golden_rr(tmp_path: Path) -> Path:
    path = tmp_path / "in.jsonl"
    path.write_text("".join((cases.GOLDEN / f"{name}.rr.jsonl").read_text() for name in sorted(cases.CASES)))
    return path


def test_rr_round_trip_is_byte_identical(tmp_path: Path) -> None:
    source = golden_rr(tmp_path)
    import_rr([source], tmp_path / "run")
    result = export_run(tmp_path / "run", ["rr"], tmp_path / "out")
    assert result.files["rr"][0].read_bytes() == source.read_bytes()


def test_orr_derived_from_imported_rr_equals_orr_from_the_original_traces(tmp_path: Path) -> None:
    import_rr([golden_rr(tmp_path)], tmp_path / "run")
    export_run(tmp_path / "run", ["orr"], tmp_path / "out")
    expected = "".join((cases.GOLDEN / f"{name}.orr.jsonl").read_text() for name in sorted(cases.CASES))
    assert (tmp_path / "out" / "orr.jsonl").read_text() == expected


def test_import_recovers_steps_tool_results_and_rag(tmp_path: Path) -> None:
    import_rr([golden_rr(tmp_path)], tmp_path / "run")
    store = RunStore.open(tmp_path / "run")
    trace = store.trace("infoseek/val/oven_04")
    store.close()
    assert trace is not None
    assert [s.operators for s in trace.steps] == [["image_caption"], [], []]
    assert trace.steps[0].tool_calls[0].result.startswith("A tall iron lattice tower")
    assert trace.steps[1].rag is not None and trace.steps[1].rag.result.startswith("[1] Eiffel Tower")
    assert (trace.sample.question, trace.sample.constraint) == (
        "In which year was this building completed?", "\nAnswer the question using a single word or phrase.")


def test_import_marks_reflection_and_correction_steps(tmp_path: Path) -> None:
    import_rr([golden_rr(tmp_path)], tmp_path / "run")
    store = RunStore.open(tmp_path / "run")
    trace = store.trace("tabmwp/train/1234")
    store.close()
    assert trace is not None and [s.kind for s in trace.steps] == ["rationale", "rationale", "reflection", "correction"]


def test_every_export_can_be_derived_from_imported_rr(tmp_path: Path) -> None:
    import_rr([golden_rr(tmp_path)], tmp_path / "run")
    formats = ["ms_swift", "llama_factory", "internvl", "llava", {"name": "openai_chat", "images": "none"}, "hf_dataset"]
    result = export_run(tmp_path / "run", formats, tmp_path / "out")
    assert set(result.files) == {"ms_swift", "llama_factory", "internvl", "llava", "openai_chat", "hf_dataset"}
    assert len((tmp_path / "out" / "ms_swift_rr.jsonl").read_text().splitlines()) == 3


def test_a_custom_system_prompt_is_kept_verbatim(tmp_path: Path) -> None:
    record = json.loads((cases.GOLDEN / "ocr_receipt.rr.jsonl").read_text())
    record["messages"][0]["content"] = "My own system prompt.\nUse ocr when text matters."
    source = tmp_path / "custom.jsonl"
    source.write_text(json.dumps(record, ensure_ascii=False, separators=(",", ":")) + "\n")
    result = import_rr([source], tmp_path / "run")
    export_run(tmp_path / "run", ["rr"], tmp_path / "out")
    assert result.context is not None and result.context.rr_system.startswith("My own")
    assert (tmp_path / "out" / "rr.jsonl").read_bytes() == source.read_bytes()


def bad_lines() -> list[tuple[str, str]]:
    good = json.loads((cases.GOLDEN / "ocr_receipt.rr.jsonl").read_text())
    no_end = json.loads(json.dumps(good))
    no_end["messages"][-3]["content"] = no_end["messages"][-3]["content"].replace("<SIGNAL>end</SIGNAL>", "<SIGNAL>continue</SIGNAL>")
    bad_step = json.loads(json.dumps(good))
    bad_step["messages"][2]["content"] = "I think the total is 35."
    other_system = json.loads(json.dumps(good))
    other_system["id"] = "other"
    other_system["messages"][0]["content"] = "another prompt"
    return [
        ("{not json", "bad_json"),
        (json.dumps({"id": "x", "messages": [{"role": "user", "content": "hi"}]}), "not_rr_layout"),
        (json.dumps(no_end), "no_end_signal"),
        (json.dumps(bad_step), "bad_step"),
        (json.dumps(other_system), "system_prompt_differs"),
    ]


@pytest.mark.parametrize("line,reason", bad_lines(), ids=[r for _, r in bad_lines()])
def test_bad_line_is_quarantined_with_its_reason(tmp_path: Path, line: str, reason: str) -> None:
    source = tmp_path / "in.jsonl"
    source.write_text((cases.GOLDEN / "rag_landmark.rr.jsonl").read_text() + line + "\n")
    result = import_rr([source], tmp_path / "run")
    rows = [json.loads(row) for row in (tmp_path / "run" / "quarantine.jsonl").read_text().splitlines()]
    assert (result.imported, result.rejected) == (1, 1)
    assert [(r["reason"], r["row"]) for r in rows] == [(reason, "in.jsonl:2")]


def test_duplicate_ids_are_quarantined(tmp_path: Path) -> None:
    source = tmp_path / "in.jsonl"
    source.write_text((cases.GOLDEN / "rag_landmark.rr.jsonl").read_text() * 2)
    result = import_rr([source], tmp_path / "run")
    assert (result.imported, result.rejected) == (1, 1)


def test_import_refuses_a_folder_that_already_holds_a_run(run_dir: Path, tmp_path: Path) -> None:
    from mmat_core.errors import ConfigError

    with pytest.raises(ConfigError, match="already holds a run store"):
        import_rr([golden_rr(tmp_path)], run_dir)


def test_system_prompt_parses_back_to_the_tools_and_rag_setting() -> None:
    from mmat_core import prompts

    ctx = parse_rr_system(prompts.rr_system(cases.TOOLS[:2], False))
    assert ctx is not None and [t.name for t in ctx.tools] == ["image_caption", "ocr"] and not ctx.rag_enabled


def test_observation_splits_into_results_in_order() -> None:
    from mmat_core import prompts

    text = prompts.observation([("image caption", "a cat. Here are"), ("ocr", "HELLO")])
    assert split_observation(text, ["image caption", "ocr"]) == ["a cat. Here are", "HELLO"]


def test_real_build_round_trips_through_import(tmp_path: Path) -> None:
    from mmat_core.config import PipelineConfig
    from mmat_core.pipeline import Pipeline

    config = PipelineConfig.model_validate({"curation": {"limit": 8}})
    Pipeline(source="sample", llm="offline", tools=["face_detection"], critics=["answer_match", "math"],
             formatters=["rr", "orr"], config=config).run_local(tmp_path / "build")
    import_rr([tmp_path / "build" / "rr.jsonl"], tmp_path / "imported")
    export_run(tmp_path / "imported", ["rr", "orr"], tmp_path / "out")
    assert (tmp_path / "out" / "rr.jsonl").read_bytes() == (tmp_path / "build" / "rr.jsonl").read_bytes()
    assert (tmp_path / "out" / "orr.jsonl").read_bytes() == (tmp_path / "build" / "orr.jsonl").read_bytes()
