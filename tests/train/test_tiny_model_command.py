"""`mmat tiny-model DIR`: the tiny random model the training example trains, made by a command."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from click.testing import CliRunner

from mmat_core.cli import main


def test_tiny_model_writes_a_folder_that_loads_as_an_image_text_model(tmp_path: Path, training_files: tuple[Path, Path]) -> None:
    from transformers import AutoConfig, AutoProcessor

    result = CliRunner().invoke(main, ["tiny-model", str(tmp_path / "tiny"), "--data", str(training_files[0])])
    assert result.exit_code == 0, result.output
    assert f"train on it with --model {tmp_path / 'tiny'}" in result.output
    assert AutoConfig.from_pretrained(tmp_path / "tiny").model_type == "llava"
    processor = AutoProcessor.from_pretrained(tmp_path / "tiny")
    assert "<image>" in processor.tokenizer.get_vocab()


def test_tiny_model_tokenizer_learns_the_data_texts(tmp_path: Path, training_files: tuple[Path, Path]) -> None:
    from transformers import AutoTokenizer

    runner = CliRunner()
    assert runner.invoke(main, ["tiny-model", str(tmp_path / "plain")]).exit_code == 0
    assert runner.invoke(main, ["tiny-model", str(tmp_path / "fitted"), "--data", str(training_files[0])]).exit_code == 0
    text = json.loads(training_files[0].read_text().splitlines()[0])["messages"][1]["content"]
    plain = AutoTokenizer.from_pretrained(tmp_path / "plain")(text)["input_ids"]
    fitted = AutoTokenizer.from_pretrained(tmp_path / "fitted")(text)["input_ids"]
    assert len(fitted) < len(plain)


def test_tiny_model_refuses_a_folder_that_holds_files(tmp_path: Path) -> None:
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    result = CliRunner().invoke(main, ["tiny-model", str(tmp_path / "busy")])
    assert result.exit_code != 0
    assert "already exists and is not an empty folder" in str(result.exception)
    assert (tmp_path / "busy" / "notes.txt").read_text() == "mine"


def test_tiny_model_is_a_command_of_the_trainers_plugin(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["-p", "no:trainers", "tiny-model", str(tmp_path / "tiny")])
    assert result.exit_code != 0
    assert "Unknown command 'tiny-model'" in result.output
    assert not (tmp_path / "tiny").exists()


def _mmat_without(module: str, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """`mmat ARGS` in a Python where `module` cannot be imported (``sys.modules[name] = None``
    is how Python marks a module as absent)."""
    code = (f"import sys\nsys.modules[{module!r}] = None\nfrom mmat_core.cli import run\n"
            f"sys.argv = ['mmat', *{list(args)!r}]\nrun()\n")
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True, timeout=120, check=False)


def test_tiny_model_without_torch_names_the_train_extra(tmp_path: Path) -> None:
    done = _mmat_without("torch", "tiny-model", str(tmp_path / "tiny"), cwd=tmp_path)
    assert done.returncode == 2
    assert "mmat tiny-model needs torch: pip install 'mmat[train]'" in done.stderr
    assert "Traceback" not in done.stderr


def test_hf_lora_without_peft_names_the_train_extra(tmp_path: Path, training_files: tuple[Path, Path]) -> None:
    done = _mmat_without("peft", "train", "--data", str(training_files[0]), "--model", str(tmp_path),
                         "--out", str(tmp_path / "run"), cwd=tmp_path)
    assert done.returncode == 2
    assert "the hf-lora trainer needs peft: pip install 'mmat[train]'" in done.stderr
    assert not (tmp_path / "run").exists()
