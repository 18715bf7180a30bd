"""The local copies load with `datasets` exactly as lmms-eval loads a Hub dataset: folder + split name."""

from __future__ import annotations

from pathlib import Path

import pytest
from mmat_plugins.evaluation.lmms import suite
from mmat_plugins.evaluation.lmms.fixtures import BUILDERS


@pytest.mark.parametrize("spec", suite.PAPER_BENCHMARKS, ids=lambda spec: spec.key)
def test_each_fixture_loads_by_folder_and_split_with_decoded_images(data_root: Path, spec: suite.BenchmarkSpec) -> None:
    import datasets

    bench = BUILDERS[spec.key]()
    rows = datasets.load_dataset(str(data_root / spec.repo_id), split=bench.split)
    assert rows.num_rows == len(bench.rows) and set(rows.column_names) == set(bench.features)
    images = [name for name, feature in bench.features.items() if feature == {"_type": "Image"}]
    assert images and rows[0][images[0]].size == (160, 96)


def test_the_dataset_card_maps_the_split_to_its_parquet_file(data_root: Path) -> None:
    card = (data_root / "AI4Math" / "MathVista" / "README.md").read_text()
    assert "- split: testmini\n    path: data/testmini-*" in card
    assert (data_root / "AI4Math" / "MathVista" / "data" / "testmini-00000-of-00001.parquet").is_file()
