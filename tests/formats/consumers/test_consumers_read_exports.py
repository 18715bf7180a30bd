"""The exports fed to their consumers' own code, in the consumers' own environments
(tests/consumers.py): ms-swift 4.6 (dataset loader + ``llava1_5_hf`` template encoding),
LLaMA-Factory 0.9.5 (loader, converter with ``media_dir``, ``llava`` template encoding), datasets
(``load_dataset`` on the bundle), the openai SDK's types. Each runs on two bundles made with
``--bundle`` whose run folder and source images were deleted and which were then moved: the
bundled sample build, and a multi-image, multi-turn fixture. ``mmat export --check`` runs the
same loaders for a user."""

from __future__ import annotations

import functools
import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from mmat_core.cli import main
from mmat_core.exporter import bundle_run
from tests.consumers import ROOT, consumer_python, run_in_consumer
from tests.formats.conftest import make_image_run

HERE = Path(__file__).parent
CHECKS = ROOT / "plugins" / "formatters" / "consumer_checks.py"
FORMATS = ["ms_swift", "llama_factory", "openai_chat", "internvl", "llava", "rr"]


def _moved_bundle(run: Path, work: Path, delete: list[Path]) -> Path:
    bundle_run(run, FORMATS, work / "bundle")
    for path in delete:
        shutil.rmtree(path)
    return Path(shutil.move(str(work / "bundle"), str(work / "moved" / "bundle")))


@pytest.fixture(scope="module")
def sample_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The bundled sample, built offline, bundled, its run deleted, the bundle moved."""
    work = tmp_path_factory.mktemp("sample")
    done = subprocess.run([sys.executable, "-m", "mmat_core", "build", "--out", str(work / "run")], cwd=work,
                          check=False, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-2000:]
    return _moved_bundle(work / "run", work, [work / "run"])


@pytest.fixture(scope="module")
def multi_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The multi-turn cases with real images, one with two, bundled, run and images deleted, moved."""
    work = tmp_path_factory.mktemp("multi")
    run = make_image_run(work / "run", work / "images")
    return _moved_bundle(run, work, [run, work / "images"])


BUNDLES = ["sample_bundle", "multi_bundle"]


def _json_out(done: subprocess.CompletedProcess[str]) -> Any:
    assert done.returncode == 0, done.stdout[-1500:] + done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@functools.cache
def _encode(consumer: str, script: str, *args: str) -> list[dict[str, Any]]:
    """One encoding run per consumer and bundle (each start of a consumer costs seconds)."""
    return _json_out(run_in_consumer(consumer, (HERE / script).read_text(), *args, cwd=HERE,
                                     env={"PYTHONPATH": str(HERE)}))


def _expected_rows(bundle: Path) -> list[int]:
    """Images per row, from the bundle's ms_swift file."""
    return [len(json.loads(line)["images"]) for line in (bundle / "ms_swift_rr.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("bundle_name", BUNDLES)
def test_ms_swift_loads_the_bundle_with_its_image_root(bundle_name: str, request: pytest.FixtureRequest) -> None:
    bundle = request.getfixturevalue(bundle_name)
    report = _json_out(run_in_consumer("swift", CHECKS.read_text(), "ms_swift", str(bundle / "ms_swift_rr.jsonl"), str(bundle)))
    assert report["ok"] and report["rows"] == len(_expected_rows(bundle))


@pytest.mark.parametrize("bundle_name", BUNDLES)
def test_ms_swift_template_encodes_every_row_with_one_image_token_run_per_image(bundle_name: str,
                                                                                 request: pytest.FixtureRequest) -> None:
    bundle = request.getfixturevalue(bundle_name)
    rows = _encode("swift", "swift_encode.py", str(bundle / "ms_swift_rr.jsonl"), str(bundle))
    assert [r["images"] for r in rows] == _expected_rows(bundle)
    assert all(r["image_tokens"] == 4 * r["images"] and r["system_in_text"] and r["label_tokens"] > 0 for r in rows)


@pytest.mark.parametrize("bundle_name", BUNDLES)
def test_llama_factory_loads_the_bundle_with_media_dir(bundle_name: str, request: pytest.FixtureRequest) -> None:
    bundle = request.getfixturevalue(bundle_name)
    report = _json_out(run_in_consumer("llamafactory", CHECKS.read_text(), "llama_factory", str(bundle), "mmat_rr", str(bundle)))
    assert report["ok"] and report["rows"] == len(_expected_rows(bundle))


@pytest.mark.parametrize("bundle_name", BUNDLES)
def test_llama_factory_template_encodes_every_row_like_ms_swift(bundle_name: str, request: pytest.FixtureRequest) -> None:
    bundle = request.getfixturevalue(bundle_name)
    rows = _encode("llamafactory", "llamafactory_encode.py", str(bundle), "mmat_rr", str(bundle))
    assert [r["images"] for r in rows] == _expected_rows(bundle)
    assert all(r["image_tokens"] == 4 * r["images"] and r["system_in_text"] and r["label_tokens"] > 0 for r in rows)
    swift = _encode("swift", "swift_encode.py", str(bundle / "ms_swift_rr.jsonl"), str(bundle))
    assert [r["label_tokens"] for r in rows] == [r["label_tokens"] for r in swift]  # the same assistant text trains


@pytest.mark.parametrize("bundle_name", BUNDLES)
def test_datasets_loads_the_bundle_folder_by_its_card(bundle_name: str, request: pytest.FixtureRequest) -> None:
    bundle = request.getfixturevalue(bundle_name)
    report = _json_out(subprocess.run([sys.executable, str(CHECKS), "hf_dataset", str(bundle)], check=False, capture_output=True,
                                      text=True, timeout=600))
    assert report["ok"] and report["rows"] == len(_expected_rows(bundle))


@pytest.mark.parametrize("bundle_name", BUNDLES)
def test_openai_chat_rows_validate_against_the_openai_types(bundle_name: str, request: pytest.FixtureRequest) -> None:
    bundle = request.getfixturevalue(bundle_name)
    report = _json_out(subprocess.run([sys.executable, str(CHECKS), "openai_chat", str(bundle / "openai_chat_rr.jsonl")],
                                      check=False, capture_output=True, text=True, timeout=600))
    assert report["ok"] and report["rows"] == len(_expected_rows(bundle))


def test_openai_types_check_catches_a_malformed_content_part(tmp_path: Path) -> None:
    bad = {"messages": [{"role": "user", "content": [{"type": "image", "url": "x"}]}, {"role": "assistant", "content": "a"}]}
    (tmp_path / "bad.jsonl").write_text(json.dumps(bad) + "\n")
    done = subprocess.run([sys.executable, str(CHECKS), "openai_chat", str(tmp_path / "bad.jsonl")], check=False, capture_output=True, text=True)
    assert done.returncode == 1 and not json.loads(done.stdout)["ok"]


def test_export_check_runs_each_consumer_in_its_python(tmp_path: Path) -> None:
    swift, factory = consumer_python("swift"), consumer_python("llamafactory")
    run = make_image_run(tmp_path / "run", tmp_path / "images")
    result = CliRunner().invoke(main, [
        "export", str(run), "-f", "ms_swift", "-f", "llama_factory", "-f", "openai_chat", "-f", "internvl",
        "--bundle", str(tmp_path / "b"), "--check",
        "--check-python", f"ms_swift={swift}", "--check-python", f"llama_factory={factory}"])
    assert result.exit_code == 0, result.output
    for name in ("ms_swift", "llama_factory", "openai_chat", "hf_dataset"):
        assert f"Check {name}: ok, 3 row(s)" in result.output, result.output
    assert "Check internvl: no consumer package to run: InternVL is not a pip package" in result.output


def test_export_check_says_when_the_consumer_is_not_installed(tmp_path: Path) -> None:
    run = make_image_run(tmp_path / "run", tmp_path / "images")
    result = CliRunner().invoke(main, ["export", str(run), "-f", "ms_swift", "--out", str(tmp_path / "o"), "--check"])
    assert result.exit_code == 0, result.output
    assert "Check ms_swift: NOT RUN: ms-swift is not installed in" in result.output
    assert "--check-python ms_swift=PYTHON" in result.output


def test_export_check_fails_when_the_consumer_refuses_rows(tmp_path: Path) -> None:
    run = make_image_run(tmp_path / "run", tmp_path / "images")
    shutil.rmtree(tmp_path / "images")  # the path-mode rows now point at nothing
    result = CliRunner().invoke(main, ["export", str(run), "-f", "ms_swift", "--out", str(tmp_path / "o"), "--check",
                                       "--check-python", f"ms_swift={consumer_python('swift')}"])
    assert result.exit_code == 1 and "Check ms_swift: FAILED" in result.output, result.output


@pytest.mark.parametrize("bundle_name", BUNDLES)
def test_internvl_and_llava_restated_loaders_read_the_moved_bundle(bundle_name: str, request: pytest.FixtureRequest) -> None:
    from tests.formats import upstream

    bundle = request.getfixturevalue(bundle_name)
    internvl = [json.loads(line) for line in (bundle / "internvl_rr.jsonl").read_text().splitlines()]
    for row in internvl:
        encoded = upstream.internvl_get_item(row, "internvl2_5", str(bundle))
        assert encoded.system.startswith("You are a visual assistant") and all(Path(p).is_file() for p in encoded.images)
    llava = [upstream.llava_get_item(row, str(bundle)) for row in json.loads((bundle / "llava_rr.json").read_text())]
    assert all(len(item.images) == 1 and Path(item.images[0]).is_file() for item in llava)
    several = sum(1 for n in _expected_rows(bundle) if n > 1)
    assert len(llava) == len(internvl) - several
