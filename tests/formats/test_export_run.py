"""`mmat export`: any format from a run's stored traces, no model call, context from the run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from mmat_core import exporter
from mmat_core.cli import main
from mmat_core.errors import ConfigError
from mmat_core.exporter import export_run
from tests.formats import cases
from tests.formats.conftest import make_run


def golden(view: str) -> str:
    return "".join((cases.GOLDEN / f"{name}.{view}.jsonl").read_text() for name in ("ocr_receipt", "rag_landmark", "math_reflection"))


def test_export_writes_rr_and_orr_from_stored_traces(run_dir: Path, tmp_path: Path) -> None:
    result = export_run(run_dir, ["rr", "orr"], tmp_path / "out")
    assert result.traces == 4
    assert (tmp_path / "out" / "rr.jsonl").read_text() == golden("rr")
    assert (tmp_path / "out" / "orr.jsonl").read_text() == golden("orr")


def test_context_comes_from_the_stored_config_when_no_context_was_recorded(tmp_path: Path) -> None:
    run = make_run(tmp_path / "run", with_context=False)
    export_run(run, ["rr"], tmp_path / "out")
    system = json.loads((tmp_path / "out" / "rr.jsonl").read_text().splitlines()[0])["messages"][0]["content"]
    assert "- ocr: recognise the text" in system and "- face_detection:" in system
    assert (tmp_path / "out" / "rr.jsonl").read_text() == golden("rr")


def test_third_party_formatter_gets_validated_traces(run_dir: Path, tmp_path: Path) -> None:
    from mmat_core.components import RecordFormatter
    from mmat_core.models import Trace

    seen: list[type] = []

    class Ids(RecordFormatter):
        name = "ids"

        def record(self, trace: Trace, ctx: object) -> dict:
            seen.append(type(trace))
            return {"id": trace.id}

    export_run(run_dir, [Ids()], tmp_path / "out")
    assert seen == [Trace, Trace, Trace]
    assert len((tmp_path / "out" / "ids.jsonl").read_text().splitlines()) == 3


def test_export_lists_traces_a_format_could_not_export(run_dir: Path, tmp_path: Path) -> None:
    result = export_run(run_dir, ["openai_chat"], tmp_path / "out")
    rows = (tmp_path / "out" / exporter.EXPORT_QUARANTINE).read_text().splitlines()
    assert len(result.rejected) == len(rows) == 3 and json.loads(rows[0])["reason"] == "image_missing"


def test_export_of_a_folder_without_a_run_store_says_what_to_give(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no run store"):
        export_run(tmp_path, ["rr"])
    assert not (tmp_path / "run.sqlite").exists()


def test_unknown_format_suggests_the_close_name(run_dir: Path) -> None:
    with pytest.raises(ConfigError, match="ms_swift"):
        export_run(run_dir, ["ms-swift"])


def test_parallel_export_is_byte_identical_to_one_process(run_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(exporter, "PARALLEL_MIN_TRACES", 1)
    export_run(run_dir, ["rr", {"name": "orr", "val_ratio": 0.5}], tmp_path / "one")
    result = export_run(run_dir, ["rr", {"name": "orr", "val_ratio": 0.5}], tmp_path / "two", workers=2)
    assert result.traces == 4
    for name in ("rr.jsonl", "orr_train.jsonl", "orr_val.jsonl"):
        assert (tmp_path / "two" / name).read_bytes() == (tmp_path / "one" / name).read_bytes()
    assert sorted(p.name for p in (tmp_path / "two").iterdir()) == ["orr_train.jsonl", "orr_val.jsonl", "rr.jsonl"]


def test_cli_export_applies_options_per_format(run_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = CliRunner().invoke(main, ["export", str(run_dir), "-f", "rr", "-f", "llava", "-o", "rr.naming=paper",
                                       "-o", "llava.view=orr", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir()) == ["dataset_qa_rr_train_all_RR_sys.jsonl", "dataset_qa_rr_val_all_RR_sys.jsonl",
                                                   "llava_orr.json"]
    assert "Exported 4 stored trace(s)" in result.output


def test_cli_export_rejects_an_option_the_format_does_not_have(run_dir: Path, tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["export", str(run_dir), "-f", "rr", "-o", "view=orr", "--out", str(tmp_path)])
    assert result.exit_code != 0 and "view" in str(result.exception or result.output)


def test_cli_import_then_export_orr(tmp_path: Path) -> None:
    source = tmp_path / "in.jsonl"
    source.write_text(golden("rr"))
    runner = CliRunner()
    imported = runner.invoke(main, ["import-rr", str(source), "--out", str(tmp_path / "run")])
    exported = runner.invoke(main, ["export", str(tmp_path / "run"), "-f", "orr", "--out", str(tmp_path / "out")])
    assert imported.exit_code == 0 and "Imported 3 trace(s)" in imported.output
    assert exported.exit_code == 0 and (tmp_path / "out" / "orr.jsonl").read_text() == golden("orr")


def test_cli_lists_every_built_in_format(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["export", "--list"])
    for name in ("rr", "orr", "ms_swift", "llama_factory", "internvl", "llava", "openai_chat", "hf_dataset"):
        assert f"\n{name} " in "\n" + result.output


def test_validate_command_knows_the_export_schemas(run_dir: Path, tmp_path: Path) -> None:
    export_run(run_dir, ["ms_swift"], tmp_path)
    result = CliRunner().invoke(main, ["validate", "--schema", "export_ms_swift", str(tmp_path / "ms_swift_rr.jsonl")])
    assert result.exit_code == 0 and "3 record(s) valid against export_ms_swift" in result.output


def test_a_failure_mid_export_publishes_no_file(run_dir: Path, tmp_path: Path) -> None:
    from mmat_core.components import RecordFormatter
    from mmat_core.models import Trace

    class Broken(RecordFormatter):
        name = "broken"

        def record(self, trace: Trace, ctx: object) -> dict:
            if trace.id.startswith("tabmwp"):
                raise RuntimeError("disk full")
            return {"id": trace.id}

    with pytest.raises(RuntimeError, match="disk full"):
        export_run(run_dir, ["rr", Broken()], tmp_path / "out")
    assert list((tmp_path / "out").iterdir()) == []


def test_build_and_export_write_the_same_dataset_card(tmp_path: Path) -> None:
    from mmat_core import Pipeline

    run = tmp_path / "run"
    Pipeline(source={"name": "sample", "limit": 3}, llm="offline", tools=["ocr"], critics=[],
             formatters=["rr", "hf_dataset"]).run(run)
    card = run / "hf_dataset_rr" / "README.md"
    built = card.read_bytes()
    assert b"## Run" in built  # the build's card already knows its run (id, version, config hash)
    result = CliRunner().invoke(main, ["export", str(run), "-f", "hf_dataset", "--out", str(tmp_path / "again")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "again" / "hf_dataset_rr" / "README.md").read_bytes() == built
