"""``mmat sources`` and ``mmat build --dry-run`` over real sources."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from mmat_core.cli import main
from tests.sources import fixtures


def test_sources_lists_every_source_with_options_subsets_and_licence() -> None:
    result = CliRunner().invoke(main, ["sources", "--json"])
    assert result.exit_code == 0, result.output
    infos = {info["name"]: info for info in json.loads(result.output)}
    assert {"visual_cot", "llava_cot", "cauldron", "tabmwp", "infoseek", "jsonl", "llava", "sharegpt", "imagefolder", "hf"} <= set(infos)
    assert "robut_wtq" in infos["cauldron"]["subsets"]
    assert infos["tabmwp"]["licence"] == "CC BY-NC-SA 4.0"
    assert infos["tabmwp"]["options"]["path"]["required"] is True
    assert infos["visual_cot"]["paper_mix"]["flickr30k"] == 135_700


def test_sources_text_listing_of_one_source_shows_its_options() -> None:
    result = CliRunner().invoke(main, ["sources", "llava_cot"])
    assert result.exit_code == 0, result.output
    assert "sub-datasets: sharegpt4v, chartqa" in result.output
    assert "subset_map:" in result.output


def test_dry_run_counts_samples_rejections_and_quota_skips_per_sub_dataset(tmp_path: Path) -> None:
    root = fixtures.llava_cot(tmp_path / "data")
    config = tmp_path / "c.yaml"
    config.write_text(f"source: {{name: llava_cot, path: '{root}', quotas: {{chartqa: 0}}}}\ntools: []\n")
    result = CliRunner().invoke(main, ["build", "-c", str(config), "--dry-run"])
    assert result.exit_code == 0, result.output
    lines = {line.split()[0]: line for line in result.output.splitlines()[1:]}
    assert "skipped: over_quota 2" in lines["llava_cot/chartqa"]
    assert lines["llava_cot/scienceqa"].split()[1] == "1"
    assert "rejected 1, skipped 2   (no_image 1)" in lines["llava_cot"]
    assert lines["total"].split()[1] == "2"
