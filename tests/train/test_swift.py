"""The swift trainer: the paper's `swift sft` command, run through a fake `swift` that records its arguments."""

from __future__ import annotations

import json
import os
import stat
import sys
from pathlib import Path

import pytest
from mmat_plugins.trainers.swift import SwiftTrainer


@pytest.fixture
def fake_swift(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A `swift` executable on PATH that writes its argv and NPROC_PER_NODE to a JSON file."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    record = tmp_path / "swift_call.json"
    script = bin_dir / "swift"
    script.write_text(
        f"#!{sys.executable}\n"
        "import json, os, sys\n"
        f"json.dump({{'argv': sys.argv[1:], 'nproc': os.environ.get('NPROC_PER_NODE')}}, open({str(record)!r}, 'w'))\n"
        "print('fake swift: training done')\n"
    )
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    return record


def _flags(argv: list[str]) -> dict[str, str]:
    return {argv[i]: argv[i + 1] for i in range(1, len(argv) - 1) if argv[i].startswith("--")}


def test_runs_swift_sft_with_the_paper_hyperparameters(fake_swift: Path, tmp_path: Path, training_files: tuple[Path, Path]) -> None:
    result = SwiftTrainer().train(data=training_files[0], model="OpenGVLab/InternVL2_5-8B", output_dir=tmp_path / "out",
                                  preset="mmat-paper")
    argv = json.loads(fake_swift.read_text())["argv"]
    flags = _flags(argv)
    assert argv[0] == "sft"
    assert {k: flags[k] for k in ("--tuner_type", "--num_train_epochs", "--per_device_train_batch_size",
                                  "--gradient_accumulation_steps", "--learning_rate", "--weight_decay", "--max_length",
                                  "--torch_dtype", "--seed", "--deepspeed")} == {
        "--tuner_type": "lora", "--num_train_epochs": "1", "--per_device_train_batch_size": "1",
        "--gradient_accumulation_steps": "1", "--learning_rate": "4e-05", "--weight_decay": "0.1",
        "--max_length": "16384", "--torch_dtype": "bfloat16", "--seed": "42", "--deepspeed": "zero2"}
    assert flags["--model"] == "OpenGVLab/InternVL2_5-8B"
    assert result.ran is True and result.returncode == 0
    assert "fake swift: training done" in Path(result.log_file).read_text()


def test_dataset_is_written_in_ms_swift_layout(fake_swift: Path, tmp_path: Path, training_files: tuple[Path, Path]) -> None:
    result = SwiftTrainer().train(data=training_files[0], model="m", output_dir=tmp_path / "out")
    flags = _flags(json.loads(fake_swift.read_text())["argv"])
    lines = [json.loads(line) for line in Path(flags["--dataset"]).read_text().splitlines()]
    assert len(lines) == 16 == result.records
    first = lines[0]
    assert set(first) == {"messages", "images"}
    user = next(m for m in first["messages"] if m["role"] == "user")
    assert user["content"].startswith("<image>") and user["content"].count("<image>") == 1
    assert all(Path(p).is_absolute() and Path(p).exists() for p in first["images"])


def test_options_and_overrides_reach_the_command(fake_swift: Path, tmp_path: Path, training_files: tuple[Path, Path]) -> None:
    trainer = SwiftTrainer(lora_rank=16, nproc_per_node=8, extra_args=["--attn_impl", "flash_attn"])
    trainer.train(data=training_files[1], model="m", output_dir=tmp_path / "out", overrides={"learning_rate": 1e-4})
    call = json.loads(fake_swift.read_text())
    flags = _flags(call["argv"])
    assert flags["--lora_rank"] == "16" and flags["--learning_rate"] == "0.0001"
    assert call["argv"][-2:] == ["--attn_impl", "flash_attn"]
    assert call["nproc"] == "8"


def test_without_swift_it_writes_the_exact_command_instead(tmp_path: Path, training_files: tuple[Path, Path],
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    result = SwiftTrainer().train(data=training_files[0], model="m", output_dir=tmp_path / "out")
    script = Path(result.script).read_text()
    assert result.ran is False and result.command[:2] == ["swift", "sft"]
    assert "swift sft --model m --tuner_type lora" in script
    assert any("not found on PATH" in note for note in result.notes)


def test_frobenius_penalty_is_reported_as_not_applied(tmp_path: Path, training_files: tuple[Path, Path]) -> None:
    result = SwiftTrainer(run=False).train(data=training_files[0], model="m", output_dir=tmp_path / "out",
                                           overrides={"frobenius_lambda": 1e-4})
    assert any("frobenius_lambda is not applied" in note for note in result.notes)


def test_failing_swift_raises_with_the_log_path(tmp_path: Path, training_files: tuple[Path, Path],
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    from mmat_core.errors import MmatError

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "swift").write_text("#!/bin/sh\necho 'CUDA out of memory' >&2\nexit 3\n")
    (bin_dir / "swift").chmod(0o755)
    monkeypatch.setenv("PATH", str(bin_dir))
    with pytest.raises(MmatError, match=r"exited with status 3; see .*swift_sft.log"):
        SwiftTrainer().train(data=training_files[0], model="m", output_dir=tmp_path / "out")


def _swift_in_a_venv(tmp_path: Path, version: str | None) -> Path:
    """A `swift` console script whose interpreter reports ms-swift `version` (None: not installed)."""
    bin_dir = tmp_path / "venv" / "bin"
    bin_dir.mkdir(parents=True)
    python = bin_dir / "python"
    # The interpreter answers the version query the trainer sends it, like a venv with ms-swift.
    python.write_text(f"#!/bin/sh\n{'echo ' + version if version else 'exit 0'}\n")
    python.chmod(0o755)
    swift = bin_dir / "swift"
    swift.write_text(f"#!{python}\nimport sys\n")
    swift.chmod(0o755)
    return swift


def test_flags_follow_the_ms_swift_3_installed_beside_the_executable(tmp_path: Path, training_files: tuple[Path, Path]) -> None:
    swift = _swift_in_a_venv(tmp_path, "3.12.1")
    result = SwiftTrainer(run=False, swift_bin=str(swift)).train(data=training_files[0], model="m", output_dir=tmp_path / "out")
    assert result.command[4:6] == ["--train_type", "lora"]
    assert "flags written for ms-swift 3.x (ms-swift 3.12.1 installed)" in result.notes


def test_flags_follow_the_ms_swift_4_installed_beside_the_executable(tmp_path: Path, training_files: tuple[Path, Path]) -> None:
    swift = _swift_in_a_venv(tmp_path, "4.6.0")
    result = SwiftTrainer(run=False, swift_bin=str(swift)).train(data=training_files[0], model="m", output_dir=tmp_path / "out")
    assert result.command[4:6] == ["--tuner_type", "lora"]


def test_without_ms_swift_the_command_is_written_for_the_current_major(tmp_path: Path, training_files: tuple[Path, Path],
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    result = SwiftTrainer().train(data=training_files[0], model="m", output_dir=tmp_path / "out")
    assert result.command[4:6] == ["--tuner_type", "lora"]
    assert any("ms-swift 4.x (no ms-swift found" in note for note in result.notes)


def test_swift_version_option_overrides_the_installed_version(tmp_path: Path, training_files: tuple[Path, Path]) -> None:
    swift = _swift_in_a_venv(tmp_path, "4.6.0")
    result = SwiftTrainer(run=False, swift_bin=str(swift), swift_version="3").train(
        data=training_files[0], model="m", output_dir=tmp_path / "out")
    assert result.command[4:6] == ["--train_type", "lora"]
    assert "ms-swift 3.x" in Path(result.script).read_text()


def test_unknown_swift_version_is_refused_naming_the_allowed_ones() -> None:
    from mmat_core.errors import ConfigError

    with pytest.raises((ConfigError, ValueError), match="swift_version"):
        SwiftTrainer(swift_version="2")
