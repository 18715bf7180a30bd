"""The loss mask: only assistant turns are trained, token for token."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from mmat_plugins.trainers.data import IGNORE_INDEX, SampleEncoder, chat_messages, data_files, load_records, segments


def _encoded(model_dir: Path, jsonl: Path, index: int = 0) -> tuple[dict, list[dict]]:
    from transformers import AutoProcessor

    processor = AutoProcessor.from_pretrained(model_dir)
    records, rejected = load_records([jsonl])
    assert not rejected
    encoded = SampleEncoder(processor, max_length=4096).encode(records[index])
    messages = [m.model_dump() for m in records[index].record.messages]
    return {"processor": processor, **encoded}, messages


def _trained_spans(labels: list[int]) -> list[list[int]]:
    spans: list[list[int]] = []
    previous = IGNORE_INDEX
    for label in labels:
        if label != IGNORE_INDEX:
            if previous == IGNORE_INDEX:
                spans.append([])
            spans[-1].append(label)
        previous = label
    return spans


def test_rr_labels_cover_exactly_the_assistant_turns(tiny_model: Path, training_files: tuple[Path, Path]) -> None:
    encoded, messages = _encoded(tiny_model, training_files[0])
    tokenizer = encoded["processor"].tokenizer
    spans = _trained_spans(encoded["labels"].tolist())
    assistant = [m["content"] for m in messages if m["role"] == "assistant"]
    # One trained span per assistant turn: its text plus the end-of-turn token, nothing else.
    assert [tokenizer.decode(span) for span in spans] == [f"{text}<|im_end|>\n" for text in assistant]


def test_rr_labels_mask_system_user_and_tool_result_turns(tiny_model: Path, training_files: tuple[Path, Path]) -> None:
    encoded, messages = _encoded(tiny_model, training_files[0])
    tokenizer = encoded["processor"].tokenizer
    trained_text = "".join(tokenizer.decode(span) for span in _trained_spans(encoded["labels"].tolist()))
    for message in messages:
        if message["role"] != "assistant":
            assert message["content"] not in trained_text
    assert "Here are image caption results" not in trained_text


def test_labels_equal_input_ids_where_trained(tiny_model: Path, training_files: tuple[Path, Path]) -> None:
    encoded, _ = _encoded(tiny_model, training_files[0])
    ids, labels = encoded["input_ids"], encoded["labels"]
    trained = labels != IGNORE_INDEX
    assert bool((labels[trained] == ids[trained]).all())
    assert 0 < int(trained.sum()) < ids.shape[0]


def test_image_tokens_are_expanded_and_masked(tiny_model: Path, training_files: tuple[Path, Path]) -> None:
    encoded, _ = _encoded(tiny_model, training_files[1])
    image_id = encoded["processor"].tokenizer.convert_tokens_to_ids("<image>")
    positions = (encoded["input_ids"] == image_id).nonzero().flatten().tolist()
    assert len(positions) == 4  # (32 / 16)^2 patches of the tiny CLIP tower
    assert all(encoded["labels"][p] == IGNORE_INDEX for p in positions)
    assert tuple(encoded["pixel_values"].shape) == (1, 3, 32, 32)


def test_orr_record_trains_only_its_single_answer_turn(tiny_model: Path, training_files: tuple[Path, Path]) -> None:
    encoded, _ = _encoded(tiny_model, training_files[1])
    spans = _trained_spans(encoded["labels"].tolist())
    text = encoded["processor"].tokenizer.decode(spans[0])
    assert len(spans) == 1
    assert text.startswith("<THOUGHT>") and "<ANSWER>The answer is: " in text


def test_segments_alternate_prompt_and_assistant_text(tiny_model: Path, training_files: tuple[Path, Path]) -> None:
    from transformers import AutoProcessor

    processor = AutoProcessor.from_pretrained(tiny_model)
    records, _ = load_records([training_files[0]])
    pieces = segments(processor, chat_messages(records[0].record, 1))
    assert [trained for _, trained in pieces][:4] == [False, True, False, True]
    assert pieces[0][0].startswith("<|im_start|>system\n")


def test_too_long_sample_is_rejected_with_a_reason(tiny_model: Path, training_files: tuple[Path, Path]) -> None:
    from mmat_plugins.trainers.data import EncodeError
    from transformers import AutoProcessor

    records, _ = load_records([training_files[0]])
    with pytest.raises(EncodeError) as info:
        SampleEncoder(AutoProcessor.from_pretrained(tiny_model), max_length=20).encode(records[0])
    assert info.value.reason == "too_long"


def test_missing_image_and_bad_lines_are_quarantined(tmp_path: Path, training_files: tuple[Path, Path]) -> None:
    lines = training_files[0].read_text().splitlines()[:2]
    broken = json.loads(lines[1])
    broken["images"] = ["nowhere/missing.png"]
    path = tmp_path / "rr.jsonl"
    path.write_text("\n".join([lines[0], json.dumps(broken), "{not json", json.dumps({"id": "x", "messages": []})]) + "\n")
    records, rejected = load_records([path])
    assert len(records) == 1
    assert [r.reason for r in rejected] == ["image_missing", "not_json", "invalid_record"]
    assert rejected[0].row.endswith("rr.jsonl:2")


def test_a_folder_with_both_formats_must_be_disambiguated(tmp_path: Path, training_files: tuple[Path, Path]) -> None:
    from mmat_core.errors import ConfigError

    for source in training_files:
        (tmp_path / source.name).write_text(source.read_text())
    with pytest.raises(ConfigError, match="holds both rr.jsonl and orr.jsonl"):
        data_files(tmp_path)
    assert data_files(training_files[0].parent) == [training_files[0]]
