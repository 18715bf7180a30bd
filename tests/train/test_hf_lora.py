"""The hf-lora trainer on a tiny random LLaVA-style model: it learns, saves, reloads, resumes and merges."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from mmat_plugins.trainers.hf_lora import HFLoraTrainer, frobenius_penalty

from mmat_core.components import TrainResult


def mean_loss(model: Any, processor: Any, files: tuple[Path, ...]) -> float:
    """Mean assistant-token loss over every record of ``files`` (no dropout, no gradient)."""
    import torch
    from mmat_plugins.trainers.data import SampleEncoder, load_records

    records, _ = load_records(list(files))
    encoder = SampleEncoder(processor, 4096)
    model.eval()
    losses = []
    with torch.no_grad():
        for loaded in records:
            batch = {k: v.unsqueeze(0) if k in ("input_ids", "labels", "attention_mask") else v
                     for k, v in encoder.encode(loaded).items()}
            losses.append(float(model(**batch).loss))
    return sum(losses) / len(losses)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory, tiny_model: Path, training_files: tuple[Path, Path]) -> TrainResult:
    """Three epochs over 16 RR + 16 ORR records, batch 4, with the merge and checkpoints on."""
    out = tmp_path_factory.mktemp("run")
    overrides = {"epochs": 3, "batch_size": 4, "save_steps": 10, "merge": True, "gradient_checkpointing": True}
    return HFLoraTrainer().train(data=list(training_files), model=str(tiny_model), output_dir=out, preset="smoke",
                                 overrides=overrides)


def test_training_lowers_the_loss_on_rr_and_orr_data(trained: TrainResult, tiny_model: Path,
                                                      training_files: tuple[Path, Path]) -> None:
    from peft import PeftModel
    from transformers import AutoModelForImageTextToText, AutoProcessor

    processor = AutoProcessor.from_pretrained(tiny_model)
    base = AutoModelForImageTextToText.from_pretrained(tiny_model)
    before = mean_loss(base, processor, training_files)
    tuned = PeftModel.from_pretrained(AutoModelForImageTextToText.from_pretrained(tiny_model), trained.adapter_dir)
    after = mean_loss(tuned, processor, training_files)
    assert after < before * 0.9


def test_run_reports_steps_and_final_loss(trained: TrainResult) -> None:
    assert trained.steps == 24  # ceil(32 records * 3 epochs / batch 4)
    assert trained.final_loss is not None and trained.records == 32 and trained.rejected == 0
    assert json.loads((Path(trained.output_dir) / "train_result.json").read_text())["steps"] == 24


def test_log_has_loss_and_tokens_per_second_every_step(trained: TrainResult) -> None:
    lines = [json.loads(line) for line in Path(trained.log_file).read_text().splitlines()]
    assert [line["step"] for line in lines] == list(range(1, 25))
    assert all(line["loss"] > 0 and line["tokens_per_s"] > 0 and line["trained_tokens"] > 0 for line in lines)
    assert lines[-1]["loss"] < lines[0]["loss"]


def test_adapter_holds_lora_weights_of_the_language_model_only(trained: TrainResult) -> None:
    from safetensors.torch import load_file

    keys = list(load_file(str(Path(trained.adapter_dir) / "adapter_model.safetensors")))
    assert keys and all("lora_" in key for key in keys)
    assert all("language_model" in key for key in keys)
    assert not any("vision_tower" in key or "projector" in key for key in keys)


def test_reloaded_adapter_and_merged_model_give_the_same_logits(trained: TrainResult, tiny_model: Path) -> None:
    import torch
    from peft import PeftModel
    from transformers import AutoModelForImageTextToText

    ids = torch.tensor([[5, 17, 42, 99, 7]])
    adapter = PeftModel.from_pretrained(AutoModelForImageTextToText.from_pretrained(tiny_model), trained.adapter_dir).eval()
    merged = AutoModelForImageTextToText.from_pretrained(trained.merged_dir).eval()
    base = AutoModelForImageTextToText.from_pretrained(tiny_model).eval()
    with torch.no_grad():
        tuned_logits = adapter(input_ids=ids).logits
        assert torch.allclose(tuned_logits, merged(input_ids=ids).logits, atol=1e-4)
        assert not torch.allclose(tuned_logits, base(input_ids=ids).logits, atol=1e-4)


def test_checkpoints_keep_only_the_newest(trained: TrainResult) -> None:
    names = sorted(p.name for p in Path(trained.output_dir).glob("checkpoint-*"))
    assert names == ["checkpoint-20", "checkpoint-24"]
    assert (Path(trained.output_dir) / "checkpoint-24" / "optimizer.pt").exists()


def test_resumed_run_ends_where_an_uninterrupted_run_ends(tmp_path: Path, tiny_model: Path,
                                                          training_files: tuple[Path, Path]) -> None:
    import torch
    from safetensors.torch import load_file

    settings = {"save_steps": 3, "lora_dropout": 0.1}
    straight = HFLoraTrainer().train(data=training_files[0], model=str(tiny_model), output_dir=tmp_path / "a",
                                     preset="smoke", overrides={**settings, "max_steps": 6})
    HFLoraTrainer().train(data=training_files[0], model=str(tiny_model), output_dir=tmp_path / "b", preset="smoke",
                          overrides={**settings, "max_steps": 3})
    resumed = HFLoraTrainer().train(data=training_files[0], model=str(tiny_model), output_dir=tmp_path / "b",
                                    preset="smoke", overrides={**settings, "max_steps": 6}, resume=True)
    assert resumed.steps == 6
    logged = [json.loads(line)["step"] for line in Path(resumed.log_file).read_text().splitlines()]
    assert logged == [1, 2, 3, 4, 5, 6]
    a = load_file(str(Path(straight.adapter_dir) / "adapter_model.safetensors"))
    b = load_file(str(Path(resumed.adapter_dir) / "adapter_model.safetensors"))
    assert all(torch.allclose(a[key], b[key], atol=1e-6) for key in a)


def test_resume_without_a_checkpoint_says_so(tmp_path: Path, tiny_model: Path, training_files: tuple[Path, Path]) -> None:
    from mmat_core.errors import ConfigError

    with pytest.raises(ConfigError, match="no checkpoint-"):
        HFLoraTrainer().train(data=training_files[0], model=str(tiny_model), output_dir=tmp_path, resume=True)


def test_frobenius_penalty_equals_the_squared_norm_of_each_lora_update(tiny_model: Path) -> None:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForImageTextToText

    model = get_peft_model(AutoModelForImageTextToText.from_pretrained(tiny_model),
                           LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]))
    torch.manual_seed(0)
    expected = torch.zeros(())
    for module in model.modules():
        if hasattr(module, "lora_B") and "default" in getattr(module, "lora_B", {}):
            torch.nn.init.normal_(module.lora_B["default"].weight)
            delta = module.scaling["default"] * module.lora_B["default"].weight @ module.lora_A["default"].weight
            expected = expected + (delta**2).sum()
    assert torch.allclose(frobenius_penalty(model), expected, rtol=1e-4)


def test_frobenius_penalty_is_logged_when_on(tmp_path: Path, tiny_model: Path, training_files: tuple[Path, Path]) -> None:
    result = HFLoraTrainer().train(data=training_files[1], model=str(tiny_model), output_dir=tmp_path, preset="smoke",
                                   overrides={"max_steps": 3, "frobenius_lambda": 0.01})
    lines = [json.loads(line) for line in Path(result.log_file).read_text().splitlines()]
    assert lines[0]["penalty"] == 0.0  # LoRA's B starts at zero
    assert lines[-1]["penalty"] > 0.0
