"""Generic sources for the user's own data: JSONL with a field mapping, LLaVA, ShareGPT, an image
folder with a metadata file, and any dataset ``datasets`` can stream."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mmat_core.errors import ConfigError
from mmat_core.images import ImageStore
from mmat_core.models import SourceSample
from mmat_plugins.sources.generic import DatasetsSource, ImageFolderSource, JsonlSource, LlavaSource, ShareGPTSource
from tests.sources import fixtures


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    fixtures.save(fixtures.photo("astronaut"), tmp_path / "img" / "a.jpg")
    fixtures.save(fixtures.chart({"A": 1, "B": 4}), tmp_path / "img" / "c.png")
    return tmp_path


def only_samples(source: object) -> list[SourceSample]:
    return [r for r in source.iter_rows() if isinstance(r, SourceSample)]  # type: ignore[attr-defined]


def test_jsonl_field_mapping_reads_nested_keys(folder: Path) -> None:
    fixtures.write_jsonl(folder / "qa.jsonl", [
        {"qid": 7, "q": {"text": "Which bar is taller?"}, "gold": ["B", "bar B"], "file": "img/c.png", "kind": "chart"},
    ])
    source = JsonlSource(path=str(folder / "qa.jsonl"), subset="mine",
                         fields={"id": "qid", "question": "q.text", "answer": "gold", "image": "file", "task_type": "kind"})
    (sample,) = only_samples(source)
    assert (sample.id, sample.question, sample.answers, sample.task_type) == ("jsonl/mine/7/0", "Which bar is taller?", ["B", "bar B"], "chart")


def test_jsonl_unknown_field_mapping_key_is_refused(folder: Path) -> None:
    from mmat_core.pipeline import Pipeline

    fixtures.write_jsonl(folder / "qa.jsonl", [])
    with pytest.raises(ConfigError, match="source.fields.questoin: unknown key; allowed: .*question"):
        Pipeline(source={"name": "jsonl", "path": str(folder / "qa.jsonl"), "fields": {"questoin": "q"}})


def test_jsonl_choices_field_keeps_a_text_answer_unchanged_and_accepts_its_letter(folder: Path) -> None:
    fixtures.write_jsonl(folder / "qa.jsonl", [
        {"id": "m1", "question": "What is shown?", "choices": ["a cat", "an astronaut"], "answer": "an astronaut", "image": "img/a.jpg"},
    ])
    (sample,) = only_samples(JsonlSource(path=str(folder / "qa.jsonl")))
    assert sample.question == "What is shown?\nA. a cat\nB. an astronaut"
    assert sample.answers == ["an astronaut", "B"]
    assert sample.choices == ["a cat", "an astronaut"]
    assert sample.constraint == "\nAnswer the question using a single word or phrase."


def test_jsonl_choices_field_with_a_letter_answer_asks_for_the_letter(folder: Path) -> None:
    fixtures.write_jsonl(folder / "qa.jsonl", [
        {"id": "m1", "question": "What is shown?", "choices": ["a cat", "an astronaut"], "answer": "B", "image": "img/a.jpg"},
    ])
    (sample,) = only_samples(JsonlSource(path=str(folder / "qa.jsonl")))
    assert sample.answers == ["B"]
    assert sample.constraint == "\nAnswer with the option's letter from the given choices directly."


def test_json_array_file_is_read_item_by_item(folder: Path) -> None:
    (folder / "qa.json").write_text(json.dumps([
        {"id": "x", "question": "Who?", "answer": "astronaut", "image": "img/a.jpg"},
        {"id": "y", "question": "Tallest bar?", "answer": "B", "image": "img/c.png"},
    ]))
    assert [s.id for s in only_samples(JsonlSource(path=str(folder / "qa.json")))] == ["jsonl/x/0", "jsonl/y/0"]


def test_llava_format_yields_a_sample_per_turn_without_image_tokens(folder: Path) -> None:
    (folder / "llava.json").write_text(json.dumps([{"id": "r1", "image": "img/a.jpg", "conversations": [
        {"from": "human", "value": "<image>\nWhat is the person wearing?"}, {"from": "gpt", "value": "A spacesuit."},
        {"from": "human", "value": "Is there a flag?"}, {"from": "gpt", "value": "Yes"}]}]))
    first, second = only_samples(LlavaSource(path=str(folder / "llava.json")))
    assert (first.id, first.question, first.answer) == ("llava/r1/0", "What is the person wearing?", "A spacesuit.")
    assert (second.id, second.answer) == ("llava/r1/1", "Yes")


def test_sharegpt_messages_with_roles_and_an_images_list(folder: Path) -> None:
    fixtures.write_jsonl(folder / "sg.jsonl", [{"messages": [
        {"role": "system", "content": "You are helpful."},
        {"role": "user", "content": "<image>Compare the two images: which is a chart?"},
        {"role": "assistant", "content": "The second"}], "images": ["img/a.jpg", "img/c.png"]}])
    (sample,) = only_samples(ShareGPTSource(path=str(folder / "sg.jsonl")))
    assert sample.id == "sharegpt/1/0"
    assert len(sample.images) == 2
    assert sample.question == "Compare the two images: which is a chart?"


def test_imagefolder_reads_metadata_csv_with_file_names(folder: Path) -> None:
    (folder / "img" / "metadata.csv").write_text("file_name,question,answer\na.jpg,Who is this?,an astronaut\nc.png,Which bar is tallest?,B\n")
    samples = only_samples(ImageFolderSource(path=str(folder / "img")))
    assert [(s.id, s.answer) for s in samples] == [("imagefolder/2/0", "an astronaut"), ("imagefolder/3/0", "B")]


def test_imagefolder_without_metadata_is_a_config_error(folder: Path) -> None:
    with pytest.raises(ConfigError, match="no metadata.jsonl or metadata.csv"):
        ImageFolderSource(path=str(folder / "img"))


def test_datasets_source_streams_parquet_with_image_columns_into_the_store(tmp_path: Path) -> None:
    import datasets

    features = datasets.Features({"image": datasets.Image(), "query": datasets.Value("string"), "label": datasets.Value("string")})
    data = {"image": [{"bytes": fixtures.png_bytes(fixtures.photo("coffee")), "path": None}], "query": ["What drink is this?"], "label": ["coffee"]}
    datasets.Dataset.from_dict(data, features=features).to_parquet(str(tmp_path / "d.parquet"))
    source = DatasetsSource(path="parquet", data_files=str(tmp_path / "d.parquet"), fields={"question": "query", "answer": "label"})
    source.image_store = ImageStore(tmp_path / "blobs")
    (sample,) = only_samples(source)
    assert sample.answer == "coffee"
    assert Path(sample.images[0].path or "").is_file()
