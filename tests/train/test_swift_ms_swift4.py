"""The `swift sft` command the swift trainer writes, read by ms-swift 4.x itself (consumer venv `.consumers/swift`).

Each command goes through the parser that `swift sft` builds (`HfArgumentParser` over
`swift.arguments.SftArguments`, as `swift.utils.parse_args` does), so an unknown flag, a
misspelled choice or a value of the wrong type fails here as it would on the GPU machine. That
level loads no model. One command, on the tiny local model and without DeepSpeed (not installed in
the consumer venv), is also built into a full `SftArguments`: every check ms-swift runs before
training (model type from `config.json`, template, LoRA targets, the transformers
`TrainingArguments`) passes, still without loading weights. `NPROC_PER_NODE` goes through ms-swift's
own `get_torchrun_args`. Last, ms-swift 4.6's `swift sft` runs the trainer's command for real: two
LoRA steps of the tiny model on the CPU.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from mmat_plugins.trainers.swift import SwiftTrainer

from tests.consumers import consumer_python, run_in_consumer

# Runs inside the consumer venv: argv[1] is a JSON list of cases, the answer is one JSON line on stdout.
PARSE_WITH_MS_SWIFT = r"""
import json, os, sys
import swift
from swift.arguments import SftArguments
from swift.cli.main import get_torchrun_args
from swift.utils import parse_args
from swift.utils.utils import _patch_get_type_hints
from transformers import HfArgumentParser

with _patch_get_type_hints():
    parser = HfArgumentParser([SftArguments])
config_dir = os.path.join(os.path.dirname(swift.__file__), "config")
answers = {"version": swift.__version__}
for case in json.load(open(sys.argv[1])):
    argv = case["command"][2:]  # drop "swift sft"
    namespace, unknown = parser.parse_known_args(argv)
    values = {k: v for k, v in vars(namespace).items() if isinstance(v, (str, int, float, bool, list, type(None)))}
    answer = {"unknown": unknown, "values": values}
    if values.get("deepspeed"):
        answer["deepspeed_config"] = os.path.isfile(os.path.join(config_dir, values["deepspeed"] + ".json"))
    os.environ.pop("NPROC_PER_NODE", None)
    os.environ.update(case["env"])
    answer["torchrun"] = get_torchrun_args()
    if case.get("full"):
        args, rest = parse_args(SftArguments, argv)
        training = args.training_args
        answer["full"] = {"rest": rest, "model_type": args.model_type, "tuner_type": args.tuner_type,
                          "learning_rate": training.learning_rate, "max_steps": training.max_steps,
                          "weight_decay": training.weight_decay, "lora_rank": args.lora_rank,
                          "output_dir": args.output_dir}
    answers[case["name"]] = answer
print("ANSWER " + json.dumps(answers, default=str))
"""


def _command(trainer: SwiftTrainer, data: Path, out: Path, model: str = "OpenGVLab/InternVL2_5-8B", **kwargs: Any) -> dict[str, Any]:
    trainer.train(data=data, model=model, output_dir=out, **kwargs)
    written = json.loads((out / "swift" / "sft_args.json").read_text())
    return {"command": written["command"], "env": written["env"], "major": written["swift_major"]}


@pytest.fixture(scope="module")
def ms_swift_answers(tmp_path_factory: pytest.TempPathFactory, training_files: tuple[Path, Path],
                     tiny_model: Path) -> dict[str, Any]:
    """The commands of several runs, each parsed by ms-swift 4.6 in one consumer-venv process."""
    root = tmp_path_factory.mktemp("swift4")
    rr, orr = training_files
    cases = {
        "paper": _command(SwiftTrainer(run=False, swift_version="4"), rr, root / "paper", preset="mmat-paper"),
        "lora_deepspeed_nproc": _command(
            SwiftTrainer(run=False, swift_version="4", lora_rank=16, lora_alpha=64, lora_dropout=0.1,
                         target_modules=["q_proj", "v_proj"], nproc_per_node=8),
            orr, root / "lora", preset="mmat-paper",
            overrides={"deepspeed": "zero3", "max_steps": 100, "learning_rate": 1e-4, "precision": "fp16",
                       "gradient_checkpointing": False, "save_steps": 0}),
        "resume": _command(SwiftTrainer(run=False, swift_version="4"), rr, root / "resume",
                           resume=root / "paper" / "checkpoint-7"),
        "full_tiny": _command(SwiftTrainer(run=False, swift_version="4", extra_args=["--model_type", "llava1_5_hf"]),
                              rr, root / "full", model=str(tiny_model), preset="smoke", overrides={"max_steps": 3}),
    }
    cases_file = root / "cases.json"
    cases_file.write_text(json.dumps([{"name": name, **case, "full": name == "full_tiny"} for name, case in cases.items()]))
    done = run_in_consumer("swift", PARSE_WITH_MS_SWIFT, str(cases_file), cwd=root)
    line = next((ln for ln in done.stdout.splitlines() if ln.startswith("ANSWER ")), None)
    assert done.returncode == 0 and line, done.stderr[-3000:]
    return {"answers": json.loads(line[len("ANSWER "):]), "cases": cases}


def test_the_consumer_is_ms_swift_4(ms_swift_answers: dict[str, Any]) -> None:
    assert ms_swift_answers["answers"]["version"].startswith("4.")
    assert all(case["major"] == 4 for case in ms_swift_answers["cases"].values())


def test_paper_preset_command_has_no_flag_ms_swift_4_does_not_know(ms_swift_answers: dict[str, Any]) -> None:
    paper = ms_swift_answers["answers"]["paper"]
    assert paper["unknown"] == []
    values = paper["values"]
    assert {k: values[k] for k in ("tuner_type", "num_train_epochs", "per_device_train_batch_size",
                                   "gradient_accumulation_steps", "learning_rate", "weight_decay", "max_length",
                                   "torch_dtype", "seed", "lora_rank", "lora_alpha", "lora_dropout",
                                   "target_modules", "freeze_vit", "gradient_checkpointing", "deepspeed")} == {
        "tuner_type": "lora", "num_train_epochs": 1.0, "per_device_train_batch_size": 1,
        "gradient_accumulation_steps": 1, "learning_rate": 4e-05, "weight_decay": 0.1, "max_length": 16384,
        "torch_dtype": "bfloat16", "seed": 42, "lora_rank": 8, "lora_alpha": 32, "lora_dropout": 0.05,
        "target_modules": ["all-linear"], "freeze_vit": True, "gradient_checkpointing": True, "deepspeed": "zero2"}
    assert paper["deepspeed_config"] is True  # zero2 is one of ms-swift's shipped DeepSpeed configs


def test_lora_deepspeed_and_nproc_options_parse_as_set(ms_swift_answers: dict[str, Any]) -> None:
    answer = ms_swift_answers["answers"]["lora_deepspeed_nproc"]
    assert answer["unknown"] == []
    values = answer["values"]
    assert {k: values[k] for k in ("lora_rank", "lora_alpha", "lora_dropout", "target_modules", "deepspeed",
                                   "max_steps", "learning_rate", "torch_dtype", "gradient_checkpointing")} == {
        "lora_rank": 16, "lora_alpha": 64, "lora_dropout": 0.1, "target_modules": ["q_proj", "v_proj"],
        "deepspeed": "zero3", "max_steps": 100, "learning_rate": 1e-4, "torch_dtype": "float16",
        "gradient_checkpointing": False}
    assert answer["deepspeed_config"] is True


def test_nproc_per_node_becomes_ms_swift_torchrun_arguments(ms_swift_answers: dict[str, Any]) -> None:
    answers = ms_swift_answers["answers"]
    assert answers["lora_deepspeed_nproc"]["torchrun"] == ["--nproc_per_node", "8"]
    assert answers["paper"]["torchrun"] is None  # unset: ms-swift runs one process


def test_resume_checkpoint_parses(ms_swift_answers: dict[str, Any]) -> None:
    answer = ms_swift_answers["answers"]["resume"]
    assert answer["unknown"] == []
    assert answer["values"]["resume_from_checkpoint"].endswith("checkpoint-7")


def test_command_on_a_local_model_passes_every_ms_swift_check_before_training(ms_swift_answers: dict[str, Any]) -> None:
    full = ms_swift_answers["answers"]["full_tiny"]["full"]
    assert full["rest"] == []
    assert full["model_type"] == "llava1_5_hf" and full["tuner_type"] == "lora"
    assert full["learning_rate"] == 2e-3 and full["max_steps"] == 3 and full["lora_rank"] == 8


def test_ms_swift_4_trains_the_tiny_model_with_the_written_command(tmp_path: Path, training_files: tuple[Path, Path],
                                                                   tiny_model: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    swift = consumer_python("swift").with_name("swift")
    for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE"):
        monkeypatch.setenv(name, "1")
    monkeypatch.setenv("PYTHONPATH", "")  # the consumer's own packages only
    trainer = SwiftTrainer(swift_bin=str(swift), extra_args=["--model_type", "llava1_5_hf", "--report_to", "none"])
    result = trainer.train(data=training_files[0], model=str(tiny_model), output_dir=tmp_path / "out", preset="smoke",
                           overrides={"max_steps": 2})
    assert result.ran is True and result.returncode == 0
    assert "flags written for ms-swift 4.x (ms-swift 4.6.0 installed)" in result.notes  # read beside the executable
    assert result.steps == 2 and result.final_loss is not None and result.final_loss > 0
    assert Path(result.checkpoint, "adapter_model.safetensors").is_file()
