"""The exports for training frameworks: each layout checked by its JSON Schema and by what the
framework reads (image tags, side files, images)."""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from mmat_plugins.formatters.exports import (
    InternVLFormatter,
    LlamaFactoryFormatter,
    LlavaFormatter,
    MsSwiftFormatter,
    OpenAIChatFormatter,
)
from mmat_plugins.formatters.hf_dataset import HFDatasetFormatter
from PIL import Image

from mmat_core.components import FormatContext
from mmat_core.images import sha256_bytes
from mmat_core.models import ImageRef, Trace
from mmat_core.schemas import schema_for
from tests.formats import cases


def export(formatter: Any, out: Path, traces: list[Trace] | None = None, ctx: FormatContext | None = None) -> list[Path]:
    writer = formatter.open(out, ctx or cases.context())
    for trace in traces if traces is not None else [make() for make in cases.CASES.values()] + [cases.dropped_case()]:
        writer.write(trace)
    return writer.close()


def lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def validate(records: list[Any], schema: str) -> None:
    validator = jsonschema.Draft202012Validator(schema_for(schema))
    for record in records:
        validator.validate(record)


def with_png(tmp_path: Path, trace: Trace, name: str = "photo.png") -> tuple[Trace, bytes]:
    buffer = io.BytesIO()
    Image.new("RGB", (24, 16), (200, 30, 30)).save(buffer, format="PNG")
    data = buffer.getvalue()
    (tmp_path / name).write_bytes(data)
    trace.sample.images = [ImageRef(sha256=sha256_bytes(data), path=str(tmp_path / name), width=24, height=16, format="PNG")]
    return trace, data


@pytest.mark.parametrize("view", ["rr", "orr"])
def test_ms_swift_records_match_their_schema(tmp_path: Path, view: str) -> None:
    (path,) = export(MsSwiftFormatter(view=view), tmp_path)
    records = lines(path)
    validate(records, "export_ms_swift")
    assert path.name == f"ms_swift_{view}.jsonl" and len(records) == 3


def test_ms_swift_puts_one_image_tag_per_image_at_the_start_of_the_first_user_turn(tmp_path: Path) -> None:
    (path,) = export(MsSwiftFormatter(), tmp_path)
    record = lines(path)[0]
    assert record["messages"][1]["content"].startswith("<image>What is the total amount?")
    assert sum(m["content"].count("<image>") for m in record["messages"]) == len(record["images"]) == 1


def test_image_root_makes_paths_relative(tmp_path: Path) -> None:
    trace = cases.ocr_receipt()
    trace.sample.images[0].path = "/data/cot/sroie/X.jpg"
    (path,) = export(MsSwiftFormatter(image_root="/data/cot"), tmp_path, [trace])
    assert lines(path)[0]["images"] == ["sroie/X.jpg"]


def test_llama_factory_records_match_their_schema_and_alternate_turns(tmp_path: Path) -> None:
    data, _ = export(LlamaFactoryFormatter(), tmp_path)
    records = lines(data)
    validate(records, "export_llama_factory")
    roles = [turn["from"] for turn in records[2]["conversations"]]
    assert roles == ["human", "gpt"] * (len(roles) // 2)
    assert records[0]["system"].startswith("You are a visual assistant")


def test_llama_factory_registers_the_file_in_dataset_info(tmp_path: Path) -> None:
    (tmp_path / "dataset_info.json").write_text(json.dumps({"their_data": {"file_name": "x.json"}}))
    _, info = export(LlamaFactoryFormatter(view="orr"), tmp_path)
    document = json.loads(info.read_text())
    validate([document], "export_llama_factory_dataset_info")
    assert document["their_data"] == {"file_name": "x.json"}
    assert document["mmat_orr"]["file_name"] == "llama_factory_orr.jsonl"
    assert document["mmat_orr"]["columns"] == {"messages": "conversations", "system": "system", "images": "images"}


def test_llama_factory_split_registers_train_and_val(tmp_path: Path) -> None:
    *_, info = export(LlamaFactoryFormatter(val_ratio=0.5, dataset_name="mine"), tmp_path)
    assert set(json.loads(info.read_text())) == {"mine_train", "mine_val"}


def test_internvl_records_and_meta_match_their_schemas(tmp_path: Path) -> None:
    data, meta = export(InternVLFormatter(image_root="cot"), tmp_path)
    records = lines(data)
    validate(records, "export_internvl")
    validate([json.loads(meta.read_text())], "export_internvl_meta")
    first = records[0]
    assert (first["image"], first["width"], first["height"]) == (["sroie/X51005.jpg"], 463, 1013)
    assert first["conversations"][0]["from"] == "system"
    assert first["conversations"][1]["value"].startswith("<image>\nWhat is the total amount?")
    assert json.loads(meta.read_text())["mmat_rr"]["length"] == 3


def test_internvl_numbers_several_images(tmp_path: Path) -> None:
    trace = cases.ocr_receipt()
    trace.sample.images = [ImageRef(sha256="a" * 64, path="a.jpg"), ImageRef(sha256="b" * 64, path="b.jpg")]
    data, _ = export(InternVLFormatter(), tmp_path, [trace])
    record = lines(data)[0]
    assert record["image"] == ["a.jpg", "b.jpg"] and "width" not in record
    assert record["conversations"][1]["value"].startswith("Image-1: <image>\nImage-2: <image>\nWhat is")


def test_llava_writes_one_json_array_matching_its_schema(tmp_path: Path) -> None:
    (path,) = export(LlavaFormatter(), tmp_path)
    records = json.loads(path.read_text())
    validate(records, "export_llava")
    assert [r["id"] for r in records] == ["viscot/sroie/0001", "infoseek/val/oven_04", "tabmwp/train/1234"]


def test_llava_prepends_the_system_prompt_after_the_image_tag(tmp_path: Path) -> None:
    (path,) = export(LlavaFormatter(), tmp_path)
    first = json.loads(path.read_text())[0]["conversations"][0]["value"]
    assert first.startswith("<image>\nYou are a visual assistant") and "What is the total amount?" in first


def test_llava_can_drop_the_system_prompt(tmp_path: Path) -> None:
    (path,) = export(LlavaFormatter(system="drop"), tmp_path)
    assert json.loads(path.read_text())[0]["conversations"][0]["value"].startswith("<image>\nWhat is the total amount?")


def test_openai_chat_embeds_images_as_data_urls(tmp_path: Path) -> None:
    trace, png = with_png(tmp_path, cases.ocr_receipt())
    (path,) = export(OpenAIChatFormatter(), tmp_path, [trace])
    records = lines(path)
    validate(records, "export_openai_chat")
    image_part, text_part = records[0]["messages"][1]["content"]
    assert base64.b64decode(image_part["image_url"]["url"].removeprefix("data:image/png;base64,")) == png
    assert text_part["text"].startswith("What is the total amount?")


def test_openai_chat_builds_urls_from_a_base(tmp_path: Path) -> None:
    (path,) = export(OpenAIChatFormatter(images="url", image_base_url="https://img.example.org/d/"), tmp_path)
    records = lines(path)
    validate(records, "export_openai_chat")
    assert records[0]["messages"][1]["content"][0]["image_url"]["url"] == "https://img.example.org/d/cot/sroie/X51005.jpg"


def test_openai_chat_url_mode_needs_a_base_url() -> None:
    from mmat_core.errors import ConfigError

    with pytest.raises(ConfigError, match="image_base_url"):
        OpenAIChatFormatter(images="url")


def test_openai_chat_quarantines_a_trace_whose_image_is_missing(tmp_path: Path) -> None:
    writer = OpenAIChatFormatter().open(tmp_path, cases.context())
    writer.write(cases.ocr_receipt())
    writer.close()
    assert (tmp_path / "openai_chat_rr.jsonl").read_text() == ""
    assert [r.reason for r in writer.rejected] == ["image_missing"]


def test_openai_chat_quarantines_an_image_that_changed(tmp_path: Path) -> None:
    trace, _ = with_png(tmp_path, cases.ocr_receipt())
    trace.sample.images[0].sha256 = "0" * 64
    writer = OpenAIChatFormatter().open(tmp_path, cases.context())
    writer.write(trace)
    writer.close()
    assert [r.reason for r in writer.rejected] == ["image_changed"]


@pytest.mark.parametrize("mode", ["path", "embed"])
def test_hf_dataset_loads_with_datasets_and_decodes_images(tmp_path: Path, mode: str) -> None:
    import datasets

    traces = []
    for i, make in enumerate(cases.CASES.values()):
        trace, _ = with_png(tmp_path, make(), f"img{i}.png")
        traces.append(trace)
    files = export(HFDatasetFormatter(images=mode), tmp_path / "out", traces)
    dataset = datasets.load_dataset("parquet", data_files=str(files[0]), split="train", cache_dir=str(tmp_path / "cache"))
    assert dataset.num_rows == 3 and dataset.features["images"].feature == datasets.Image()
    assert dataset[0]["images"][0].size == (24, 16)
    assert dataset[2]["messages"][-1] == {"role": "assistant", "content": "35"}


def test_hf_dataset_rows_match_their_schema(tmp_path: Path) -> None:
    import pyarrow.parquet as pq

    files = export(HFDatasetFormatter(view="orr", images="path"), tmp_path)
    validate(pq.read_table(files[0]).to_pylist(), "export_hf_dataset")


def test_hf_dataset_card_records_sources_licences_models_tools_yield_and_cost(tmp_path: Path) -> None:
    *_, card = export(HFDatasetFormatter(images="path"), tmp_path)
    text = card.read_text()
    assert text.startswith("---\n") and "data/train-*" in text
    for fact in ("| tabmwp | 1 | 1 | 100.0% | CC BY-NC-SA 4.0 |", "| visual_cot/sroie | 2 | 1 | 50.0% | Apache-2.0 |",
                 "| openai:gpt-4o | 4 |", "| ocr | 3 |", "| rag (retrieval) | 1 |", "| cost (USD) | 0.0325 |",
                 "| status dropped | 1 |"):
        assert fact in text, fact


def test_hf_dataset_split_writes_train_and_validation_shards(tmp_path: Path) -> None:
    files = export(HFDatasetFormatter(val_ratio=0.99, images="path"), tmp_path)
    assert [p.name for p in files] == ["train-00000-of-00001.parquet", "validation-00000-of-00001.parquet", "LICENSE.md", "README.md"]


def test_openai_chat_url_mode_refuses_a_local_absolute_path(tmp_path: Path) -> None:
    trace, _ = with_png(tmp_path, cases.ocr_receipt())
    writer = OpenAIChatFormatter(images="url", image_base_url="https://img.example.org/d/").open(tmp_path, cases.context())
    writer.write(trace)
    writer.close()
    assert (tmp_path / "openai_chat_rr.jsonl").read_text() == ""
    assert [r.reason for r in writer.rejected] == ["local_image_path"]
    assert "set image_root" in writer.rejected[0].detail and str(tmp_path) in writer.rejected[0].detail


def test_openai_chat_url_mode_with_image_root_writes_the_relative_url(tmp_path: Path) -> None:
    trace, _ = with_png(tmp_path, cases.ocr_receipt())
    (path,) = export(OpenAIChatFormatter(images="url", image_base_url="https://img.example.org/d/", image_root=str(tmp_path)),
                     tmp_path, [trace])
    assert lines(path)[0]["messages"][1]["content"][0]["image_url"]["url"] == "https://img.example.org/d/photo.png"


def test_hf_dataset_card_has_complete_dataset_info_and_licence_fields(tmp_path: Path) -> None:
    import yaml

    *_, licence, card = export(HFDatasetFormatter(images="path"), tmp_path)
    header = yaml.safe_load(card.read_text().split("---\n")[1])
    assert header["license"] == "other" and header["license_name"] and header["license_link"] == "LICENSE.md"
    assert "| tabmwp | CC BY-NC-SA 4.0 |" in licence.read_text()
    (split,) = header["dataset_info"]["splits"]
    assert split["num_examples"] == 3 and split["num_bytes"] > 0 and header["dataset_info"]["dataset_size"] == split["num_bytes"]
    assert {f["name"] for f in header["dataset_info"]["features"]} >= {"id", "messages", "images", "licence"}


def test_hf_dataset_card_uses_the_hub_licence_id_when_every_source_shares_one(tmp_path: Path) -> None:
    import yaml

    files = export(HFDatasetFormatter(images="path"), tmp_path, [cases.ocr_receipt(), cases.rag_landmark()])
    header = yaml.safe_load(files[-1].read_text().split("---\n")[1])
    assert header["license"] == "apache-2.0" and "license_name" not in header
    assert [p.name for p in files] == ["train-00000-of-00001.parquet", "README.md"]


def test_hf_dataset_refuses_relative_paths_that_datasets_would_open_from_the_current_directory() -> None:
    from mmat_core.errors import ConfigError

    with pytest.raises(ConfigError, match="current directory"):
        HFDatasetFormatter(images="path", image_root="/data")


def test_hf_dataset_folder_loads_by_its_card_without_warnings(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    import logging
    import warnings

    import datasets

    traces = [with_png(tmp_path, make(), f"img{i}.png")[0] for i, make in enumerate(cases.CASES.values())]
    files = export(HFDatasetFormatter(val_ratio=0.5), tmp_path / "out", traces)
    (tmp_path / "img0.png").unlink()  # embedded: the dataset no longer needs the originals
    caplog.set_level(logging.WARNING, logger="datasets")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        loaded = datasets.load_dataset(str(files[-1].parent), cache_dir=str(tmp_path / "cache"))
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []
    assert sum(split.num_rows for split in loaded.values()) == 3
    assert next(iter(loaded.values()))[0]["images"][0].size == (24, 16)


def test_hf_dataset_leaves_out_an_empty_validation_split(tmp_path: Path) -> None:
    files = export(HFDatasetFormatter(val_ratio=0.01, images="path"), tmp_path)
    assert [p.name for p in files if p.suffix == ".parquet"] == ["train-00000-of-00001.parquet"]
    assert "validation" not in files[-1].read_text()


@pytest.mark.parametrize("formatter", [MsSwiftFormatter, LlamaFactoryFormatter, InternVLFormatter, LlavaFormatter])
def test_a_dialogue_holding_the_image_placeholder_text_is_quarantined(tmp_path: Path, formatter: Any) -> None:
    trace = cases.ocr_receipt()
    trace.steps[0].tool_calls[0].result = "page header <image> logo"
    trace.steps[0].observation = trace.steps[0].observation.replace("SHOP 88", "SHOP <image> 88")
    writer = formatter().open(tmp_path, cases.context())
    writer.write(trace)
    writer.close()
    assert [r.reason for r in writer.rejected] == ["image_tag_in_text"]


def test_openai_chat_keeps_a_dialogue_holding_the_image_placeholder_text(tmp_path: Path) -> None:
    trace = cases.ocr_receipt()
    trace.steps[0].observation = trace.steps[0].observation.replace("SHOP 88", "SHOP <image> 88")
    (path,) = export(OpenAIChatFormatter(images="none"), tmp_path, [trace])
    assert "<image>" in path.read_text()
