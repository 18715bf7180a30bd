"""``engine.final_answer`` end to end on the no-key offline build: label (the default) and model
give the same RR and ORR on the bundled sample, label with one model call fewer per sample."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mmat_core import Pipeline
from mmat_core.config import PipelineConfig


def build(out: Path, final_answer: str) -> tuple[dict, list[dict], list[dict]]:
    config = PipelineConfig.model_validate({"engine": {"final_answer": final_answer}, "curation": {"limit": 4}})
    result = Pipeline(config=config).run(out)
    read = lambda name: [json.loads(line) for line in (out / name).read_text().splitlines()]  # noqa: E731
    return result.manifest.model_dump(), read("rr.jsonl"), read("orr.jsonl")


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[dict, list[dict], list[dict]]]:
    folder = tmp_path_factory.mktemp("modes")
    return {mode: build(folder / mode, mode) for mode in ("label", "model")}


def test_the_offline_build_keeps_its_samples_in_both_modes(runs) -> None:
    assert runs["label"][0]["counts"]["kept"] == runs["model"][0]["counts"]["kept"] > 0


def test_label_mode_makes_one_model_call_fewer_per_generated_sample(runs) -> None:
    label, model = runs["label"][0]["counts"], runs["model"][0]["counts"]
    assert model["model_calls"] - label["model_calls"] == label["generated"]


def test_the_offline_final_turn_is_the_label_in_both_modes_so_the_records_agree(runs) -> None:
    assert runs["label"][1] == runs["model"][1] and runs["label"][2] == runs["model"][2]
