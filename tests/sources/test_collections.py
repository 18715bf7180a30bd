"""The five collections, read from local copies in their real layouts through the real loaders."""

from __future__ import annotations

from pathlib import Path

import pytest

from mmat_core.errors import ConfigError
from mmat_core.images import ImageStore, sha256_bytes
from mmat_core.models import Rejected, SourceSample
from mmat_plugins.sources.cauldron import CauldronSource
from mmat_plugins.sources.infoseek import InfoSeekSource
from mmat_plugins.sources.llava_cot import LlavaCoTSource
from mmat_plugins.sources.tabmwp import TabMWPSource
from mmat_plugins.sources.visual_cot import VisualCoTSource
from tests.sources import fixtures

WORD = "\nAnswer the question using a single word or phrase."
LETTER = "\nAnswer with the option's letter from the given choices directly."
SHORT = "\nGive a short answer"


def samples(rows: list[SourceSample | Rejected]) -> list[SourceSample]:
    return [r for r in rows if isinstance(r, SourceSample)]


def rejected(rows: list[SourceSample | Rejected]) -> list[Rejected]:
    return [r for r in rows if isinstance(r, Rejected)]


# ---- Visual CoT ------------------------------------------------------------------------------


def test_visual_cot_reads_each_metadata_row_with_its_image_and_box(tmp_path: Path) -> None:
    root = fixtures.visual_cot(tmp_path)
    rows = list(VisualCoTSource(path=str(root), subsets=["gqa"]).iter_rows())
    first = rows[0]
    assert isinstance(first, SourceSample)
    assert [s.id for s in samples(rows)] == ["visual_cot/gqa/1/0", "visual_cot/gqa/2/0"]
    assert first.question == "What is the person holding?"
    assert first.answers == ["a helmet"]
    assert first.meta["bboxes"] == [[30, 60, 90, 120]]
    assert first.images[0].sha256 == sha256_bytes((root / "cot/gqa/2354786.jpg").read_bytes())
    assert first.images[0].format == "JPEG"
    assert first.licence and first.licence.startswith("Apache-2.0")


def test_visual_cot_textcap_rows_take_images_from_the_textvqa_folder(tmp_path: Path) -> None:
    root = fixtures.visual_cot(tmp_path)
    (sample,) = VisualCoTSource(path=str(root), subset="textcap").iter_rows()
    assert isinstance(sample, SourceSample)
    assert sample.images[0].path == str((root / "cot/textvqa/b0c2e7b6.jpg").resolve())


def test_visual_cot_reads_every_sub_dataset_present_and_flags_missing_files(tmp_path: Path) -> None:
    rows = list(VisualCoTSource(path=str(fixtures.visual_cot(tmp_path))).iter_rows())
    assert {s.subset for s in samples(rows)} == {"gqa", "docvqa", "textcap"}
    assert {r.reason for r in rejected(rows)} == {"file_missing"}


def test_unknown_sub_dataset_is_a_config_error_that_suggests_the_right_name(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"unknown visual_cot sub-dataset 'gqq'. Did you mean 'gqa'\? Valid: cub, docvqa"):
        VisualCoTSource(path=str(fixtures.visual_cot(tmp_path)), subset="gqq")


def test_unknown_quota_sub_dataset_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="unknown cauldron sub-dataset 'chartq'. Did you mean 'chartqa'"):
        CauldronSource(path=str(fixtures.cauldron(tmp_path)), subset="chartqa", quotas={"chartq": 3})


def test_unknown_option_is_refused_with_the_allowed_keys(tmp_path: Path) -> None:
    from mmat_core.pipeline import Pipeline

    with pytest.raises(ConfigError, match=r"source.subsett: unknown key; allowed: .*subset"):
        Pipeline(source={"name": "visual_cot", "path": str(fixtures.visual_cot(tmp_path)), "subsett": "gqa"})


def test_a_hub_read_without_image_root_is_refused_before_any_download() -> None:
    with pytest.raises(ConfigError, match="set image_root"):
        VisualCoTSource(subset="gqa")


def test_short_answers_get_the_single_word_constraint_and_long_ones_a_short_answer_or_none(tmp_path: Path) -> None:
    by_subset = {s.subset: s for s in samples(list(VisualCoTSource(path=str(fixtures.visual_cot(tmp_path))).iter_rows()))}
    assert by_subset["docvqa"].constraint == WORD
    assert by_subset["docvqa"].answer == "$118.00"
    assert by_subset["textcap"].constraint == ""  # thirteen words: no constraint


# ---- LLaVA-CoT -------------------------------------------------------------------------------


def test_llava_cot_yields_one_sample_per_turn_with_the_conclusion_as_answer(tmp_path: Path) -> None:
    rows = list(LlavaCoTSource(path=str(fixtures.llava_cot(tmp_path)), subset="chartqa").iter_rows())
    assert [(s.id, s.question, s.answers) for s in samples(rows)] == [
        ("llava_cot/chartqa/chartqa_1/0", "How many units were sold in 2021?", ["25"]),
        ("llava_cot/chartqa/chartqa_1/1", "Earlier in this conversation about the image:\n"
         "Q: How many units were sold in 2021?\nA: 25\n\n"
         "Now answer this follow-up question: Which year sold the fewest units?", ["2019"]),
    ]
    assert {s.task_type for s in samples(rows)} == {"chart"}
    assert samples(rows)[0].images == samples(rows)[1].images


def test_llava_cot_multiple_choice_answers_keep_the_letter_and_list_the_choices(tmp_path: Path) -> None:
    (sample,) = samples(list(LlavaCoTSource(path=str(fixtures.llava_cot(tmp_path)), subset="scienceqa").iter_rows()))
    assert sample.choices == ["coffee", "soup", "milk"]
    assert sample.answers == ["A"]
    assert sample.constraint == LETTER


def test_llava_cot_rows_without_image_are_quarantined_and_unknown_folders_go_to_other(tmp_path: Path) -> None:
    rows = list(LlavaCoTSource(path=str(fixtures.llava_cot(tmp_path))).iter_rows())
    assert [(r.reason, r.row) for r in rejected(rows)] == [("no_image", "train.jsonl:4")]
    assert {s.subset for s in samples(rows)} == {"chartqa", "scienceqa", "other"}


def test_llava_cot_subset_map_assigns_extra_folders(tmp_path: Path) -> None:
    source = LlavaCoTSource(path=str(fixtures.llava_cot(tmp_path)), subset="sharegpt4v", subset_map={"coco": "sharegpt4v"})
    (sample,) = samples(list(source.iter_rows()))
    assert sample.id == "llava_cot/sharegpt4v/coco_3/0"


# ---- The Cauldron ----------------------------------------------------------------------------


def test_cauldron_streams_parquet_turns_and_writes_embedded_images_to_the_run_store(tmp_path: Path) -> None:
    source = CauldronSource(path=str(fixtures.cauldron(tmp_path / "data")), subset="chartqa")
    source.image_store = ImageStore(tmp_path / "run" / "images")
    rows = samples(list(source.iter_rows()))
    assert [(s.id, s.answers, s.constraint) for s in rows] == [
        ("cauldron/chartqa/0/0", ["Tue"], WORD),
        ("cauldron/chartqa/0/1", ["5"], WORD),
    ]
    assert rows[0].question == "Which day had the most visitors?"  # the collection's own instruction removed
    stored = Path(rows[0].images[0].path or "")
    assert stored.parent.parent == tmp_path / "run" / "images"
    assert sha256_bytes(stored.read_bytes()) == rows[0].images[0].sha256


def test_cauldron_multiple_choice_answer_becomes_the_option_letter(tmp_path: Path) -> None:
    (sample,) = samples(list(CauldronSource(path=str(fixtures.cauldron(tmp_path)), subset="ai2d").iter_rows()))
    assert sample.answers == ["B"]
    assert sample.choices == ["dog", "cat", "bird"]
    assert sample.task_type == "multiple_choice"
    assert sample.constraint == LETTER
    assert sample.images[0].path is None  # no run store: hashed and checked only


def test_cauldron_local_copy_without_the_selected_config_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"no train-\*.parquet shards for st_vqa .*found: ai2d, chartqa"):
        CauldronSource(path=str(fixtures.cauldron(tmp_path)), subset="st_vqa")


def test_cauldron_paper_mix_selects_the_papers_ten_sub_datasets_with_their_counts() -> None:
    with pytest.raises(ConfigError, match="no train-\\*.parquet shards for hateful_memes"):
        CauldronSource(path=".", mix="paper")


def test_paper_mix_plan_carries_the_spec_counts(tmp_path: Path) -> None:
    source = LlavaCoTSource(path=str(fixtures.llava_cot(tmp_path)), mix="paper")
    plan = source.curation_plan()
    assert plan["chartqa"].quota == 17_000
    assert plan["geoqa+"].quota == 11_400
    assert sum(p.quota or 0 for p in plan.values()) == 98_700
    assert "other" not in source.selected


# ---- TabMWP and InfoSeek ---------------------------------------------------------------------


def test_tabmwp_streams_the_problem_dict_with_table_images(tmp_path: Path) -> None:
    root = fixtures.tabmwp(tmp_path)
    free, choice = samples(list(TabMWPSource(path=str(root)).iter_rows()))
    assert free.id == "tabmwp/train/101/0"
    assert free.answers == ["9"]
    assert free.task_type == "math"
    assert free.constraint == WORD
    assert free.licence == "CC BY-NC-SA 4.0"
    assert free.meta["table"].startswith("Day | Pizzas")
    assert choice.question == "Which book costs more?\nOptions: (A) atlas (B) novel"
    assert choice.answers == ["atlas"]
    assert choice.choices == ["atlas", "novel"]
    assert choice.constraint == WORD


def test_tabmwp_without_a_local_copy_says_where_to_get_it(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="clone lupantech/PromptPG"):
        TabMWPSource(path=str(tmp_path))


def test_infoseek_maps_images_through_the_user_built_file_and_keeps_answer_variants(tmp_path: Path) -> None:
    root = fixtures.infoseek(tmp_path)
    first, second = samples(list(InfoSeekSource(path=str(root), image_map=str(root / "image_map.jsonl")).iter_rows()))
    assert first.id == "infoseek/train/infoseek_train_00000001/0"
    assert first.answers == ["NASA", "National Aeronautics and Space Administration", "nasa"]
    assert first.task_type == "knowledge"
    assert second.meta["answer_eval"] == [{"wikidata": 1967.0, "range": [1966.9, 1967.1]}]


def test_infoseek_image_not_in_the_map_is_quarantined(tmp_path: Path) -> None:
    root = fixtures.infoseek(tmp_path)
    fixtures.write_jsonl(root / "image_map.jsonl", [{"image_id": "oven_00012345", "image_path": "oven/00/oven_00012345.jpg"}])
    rows = list(InfoSeekSource(path=str(root), image_map=str(root / "image_map.jsonl")).iter_rows())
    assert [(r.reason, r.row) for r in rejected(rows)] == [("image_missing", "infoseek_train.jsonl:2")]


def test_ids_are_stable_across_runs(tmp_path: Path) -> None:
    root = fixtures.llava_cot(tmp_path)
    first = [s.id for s in samples(list(LlavaCoTSource(path=str(root)).iter_rows()))]
    second = [s.id for s in samples(list(LlavaCoTSource(path=str(root)).iter_rows()))]
    assert first == second
    assert len(set(first)) == len(first)


def test_a_run_writes_cauldron_images_into_its_own_image_store(tmp_path: Path) -> None:
    from mmat_core.pipeline import Pipeline

    pipeline = Pipeline(source={"name": "cauldron", "path": str(fixtures.cauldron(tmp_path / "data")), "subset": "ai2d"},
                        llm="offline", tools=[], critics=["answer_match"], formatters=["rr"], search=False)
    result = pipeline.run_local(tmp_path / "run")
    blobs = [p for p in (tmp_path / "run" / "images").rglob("*") if p.is_file()]
    assert [b.suffix for b in blobs] == [".png"]
    assert result.manifest.yield_by_source["cauldron/ai2d"].generated == 1
