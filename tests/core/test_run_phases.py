"""The run phases (mmat_core.run) as a Python user composes them, and the critique API."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import pytest

from mmat_core import Pipeline
from mmat_core.components import FormatContext
from mmat_core.images import ImageStore
from mmat_core.models import Usage
from mmat_core.run import (
    EngineTotals,
    close,
    critique,
    decide_manifest,
    generate,
    prepare,
    publish_outputs,
    write_manifest,
)
from mmat_core.run.review import critique_config
from mmat_core.writers import SkipTrace


def small_pipeline() -> Pipeline:
    return Pipeline(source={"name": "sample", "subsets": ["chart"]}, llm="offline", tools=["ocr"], search=False,
                    critics=["answer_match"], formatters=["rr", "orr"])


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run written by Pipeline.run."""
    out = tmp_path_factory.mktemp("phases") / "run"
    small_pipeline().run(out)
    return out


def test_phases_composed_by_hand_write_what_pipeline_run_writes(built: Path, tmp_path: Path) -> None:
    pipeline, out = small_pipeline(), tmp_path / "by_hand"

    async def main() -> None:
        run = prepare(pipeline, out)
        try:
            generation_s = await generate(run)
            manifest = decide_manifest(pipeline, run.store, run.counts, run.engine_totals(),
                                       started_at=run.started_at, generation_s=generation_s)
            published = publish_outputs(pipeline, run.store, out, manifest, run.images)
            write_manifest(out, run.store, manifest, published, total_s=time.monotonic() - run.started)
        finally:
            await close(run)

    asyncio.run(main())
    for name in ("rr.jsonl", "orr.jsonl", "quarantine.jsonl"):
        assert (out / name).read_bytes() == (built / name).read_bytes(), name
    mine, theirs = json.loads((out / "run.json").read_text()), json.loads((built / "run.json").read_text())
    assert mine["counts"] == theirs["counts"] and mine["yield_by_source"] == theirs["yield_by_source"]
    assert mine["outputs"] == theirs["outputs"] and mine["complete"] is True


def test_run_json_total_time_covers_generation_and_publishing(built: Path) -> None:
    manifest = json.loads((built / "run.json").read_text())
    # finished_at is fixed when generation ends, before the outputs; the total includes publishing.
    assert manifest["timings_s"]["total"] >= manifest["timings_s"]["generation"]
    assert manifest["finished_at"] >= manifest["started_at"]


def test_formatters_find_a_blob_through_the_run_image_store(tmp_path: Path) -> None:
    from mmat_plugins.formatters.base import image_bytes

    images = ImageStore(tmp_path / "images")
    ref = images.put(b"\x89PNG fake bytes", ".png")
    data, _ = image_bytes({"sha256": ref.sha256, "path": "gone/elsewhere.png"}, FormatContext(images=images))
    assert data == b"\x89PNG fake bytes"


def test_without_an_image_store_a_blob_only_image_is_missing(tmp_path: Path) -> None:
    from mmat_plugins.formatters.base import image_bytes

    ref = ImageStore(tmp_path / "images").put(b"bytes", ".png")
    with pytest.raises(SkipTrace) as caught:
        image_bytes({"sha256": ref.sha256, "path": "gone/elsewhere.png"}, FormatContext())
    assert caught.value.reason == "image_missing"


def test_a_hash_that_is_not_a_sha256_names_no_blob(tmp_path: Path) -> None:
    images = ImageStore(tmp_path / "images")
    images.put(b"bytes")
    assert images.blob_paths("*") == [] and images.blob_paths("../" + "a" * 61) == []


def test_engine_totals_of_workers_add_up() -> None:
    one = EngineTotals(model_calls=3, cached_calls=1, usage_by_stage={"rationale": Usage(calls=3, prompt_tokens=30)},
                       tool_errors={"ocr": 1})
    two = EngineTotals(model_calls=2, rate_limited=4, usage_by_stage={"rationale": Usage(calls=2, prompt_tokens=20)},
                       tool_errors={"ocr": 2, "face_detection": 1})
    total = EngineTotals.sum([one, two])
    assert (total.model_calls, total.cached_calls, total.rate_limited) == (5, 1, 4)
    assert total.usage_by_stage["rationale"].prompt_tokens == 50
    assert total.tool_errors == {"ocr": 3, "face_detection": 1}


def test_critique_from_python_rescores_a_run_directory(built: Path, tmp_path: Path) -> None:
    config = critique_config(built, overrides={"critics": ["answer_match", "quality"]})
    report = critique(built, config, out=tmp_path / "rescored.jsonl")
    assert report.traces == 5
    assert dict(report.verdicts["quality"]) == {"pass": 5}
    assert len((tmp_path / "rescored.jsonl").read_text().splitlines()) == 5


def test_the_phase_examples_of_the_python_api_page_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    import re

    page = (Path(__file__).resolve().parents[2] / "docs" / "python-api.md").read_text(encoding="utf-8")
    section = page[page.index("## A run, phase by phase"):]
    section = section[:section.find("\n## ", 3)] if "\n## " in section[3:] else section
    blocks = re.findall(r"```python\n(.*?)```", section, re.DOTALL)
    assert len(blocks) == 2
    monkeypatch.chdir(tmp_path)
    for block in blocks:
        exec(compile(block, "docs/python-api.md", "exec"), {"__name__": "__docs__"})
    assert (tmp_path / "runs" / "phases-demo" / "run.json").is_file()
    printed = capsys.readouterr().out.splitlines()
    assert printed[0] == "5 samples generated"
    assert printed[-1] == "5 traces, {'reject': 5}"
