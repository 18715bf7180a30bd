"""`mmat train` from the command line."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from mmat_core.cli import main


def test_mmat_train_hf_lora_writes_an_adapter(tmp_path: Path, tiny_model: Path, training_files: tuple[Path, Path]) -> None:
    out = tmp_path / "run"
    result = CliRunner().invoke(main, ["train", "--trainer", "hf-lora", "--data", str(training_files[0].parent),
                                       "--model", str(tiny_model), "--out", str(out), "--preset", "smoke",
                                       "--max-steps", "2", "--set", "lora_rank=4"])
    assert result.exit_code == 0, result.output
    assert "step 2/2  loss" in result.output and "tokens/s" in result.output
    assert (out / "adapter" / "adapter_model.safetensors").exists()
    assert '"r": 4' in (out / "adapter" / "adapter_config.json").read_text()


def test_mmat_train_swift_prints_the_command_when_ms_swift_is_missing(tmp_path: Path, training_files: tuple[Path, Path],
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    result = CliRunner().invoke(main, ["train", "--trainer", "swift", "--data", str(training_files[1]),
                                       "--model", "OpenGVLab/InternVL2_5-2B", "--out", str(tmp_path / "run")])
    assert result.exit_code == 0, result.output
    assert "ms-swift is not installed here" in result.output
    assert "swift sft --model OpenGVLab/InternVL2_5-2B --tuner_type lora" in result.output


def test_unknown_trainer_lists_the_available_ones(tmp_path: Path, training_files: tuple[Path, Path]) -> None:
    result = CliRunner().invoke(main, ["train", "--trainer", "hf_lora", "--data", str(training_files[0]),
                                       "--model", "m", "--out", str(tmp_path)])
    assert result.exit_code != 0
    assert "Did you mean 'hf-lora'?" in str(result.exception)


def test_mmat_train_set_reaches_the_swift_options(tmp_path: Path, training_files: tuple[Path, Path]) -> None:
    result = CliRunner().invoke(main, ["train", "--trainer", "swift", "--data", str(training_files[1]), "--model", "m",
                                       "--out", str(tmp_path / "run"), "--set", "swift_version=3",
                                       "--set", "nproc_per_node=8", "--set", "run=false"])
    assert result.exit_code == 0, result.output
    script = (tmp_path / "run" / "swift" / "swift_sft.sh").read_text()
    assert "NPROC_PER_NODE=8 swift sft --model m --train_type lora" in script


def test_mmat_train_bad_swift_option_names_the_key(tmp_path: Path, training_files: tuple[Path, Path]) -> None:
    result = CliRunner().invoke(main, ["train", "--trainer", "swift", "--data", str(training_files[1]), "--model", "m",
                                       "--out", str(tmp_path / "run"), "--set", "swift_version=2"])
    assert result.exit_code != 0
    assert "swift_version" in str(result.exception) and "'3'" in str(result.exception)
