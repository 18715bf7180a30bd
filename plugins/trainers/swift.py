"""The ``swift`` trainer: the ms-swift ``swift sft`` run the paper used (LoRA SFT, DeepSpeed ZeRO-2).

It writes, under ``<output_dir>/swift/``:

* ``train.jsonl``: the records in ms-swift's custom-dataset layout (``messages`` and ``images``,
  one ``<image>`` tag per image at the start of the first user turn, image paths made absolute);
* ``sft_args.json``: every argument, for the record;
* ``swift_sft.sh``: the exact command line, ready to run on a GPU machine.

When the ``swift`` executable is on PATH it runs the command (output in ``swift_sft.log``);
otherwise it prints the command and returns it, so the user can run it where ms-swift is
installed. The flags follow the installed ms-swift's major version (option ``swift_version``):
4.x names the LoRA switch ``--tuner_type lora``, 3.x ``--train_type lora``; every other flag the
trainer writes is spelled the same in both. Without ms-swift on this machine the command is
written for the current major version, 4.x.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from mmat_plugins.trainers.data import data_files, load_records
from mmat_plugins.trainers.settings import TrainSettings, resolve_settings
from pydantic import Field, ValidationError, field_validator

from mmat_core.components import Trainer, TrainResult
from mmat_core.errors import ConfigError, MmatError
from mmat_core.writers import AtomicFile, dumps_line, write_json_atomic

_DTYPES = {"auto": "bfloat16", "bf16": "bfloat16", "fp16": "float16", "fp32": "float32"}
#: The flag that picks LoRA, by ms-swift major version (4.0 renamed it).
_TUNER_FLAG = {3: "--train_type", 4: "--tuner_type"}
#: The major version a command is written for when no ms-swift is found: the current one on PyPI.
CURRENT_MAJOR = 4


class SwiftOptions(TrainSettings):
    """The shared training settings plus how to call ms-swift."""

    swift_bin: str = Field("swift", description="the ms-swift executable (name on PATH or a path)")
    nproc_per_node: int | None = Field(None, ge=1, description="GPUs per node (NPROC_PER_NODE); None: ms-swift decides")
    extra_args: list[str] = Field(default_factory=list, description="more `swift sft` flags, appended verbatim")
    run: bool = Field(True, description="run the command when the executable is found; False only writes it")
    swift_version: Literal["auto", "3", "4"] = Field(
        "auto", description="ms-swift major version to write flags for; auto: the installed one, else 4")

    @field_validator("swift_version", mode="before")
    @classmethod
    def _version_as_text(cls, value: Any) -> Any:
        """``--set swift_version=3`` arrives as the number 3."""
        return str(value) if isinstance(value, int) and not isinstance(value, bool) else value


class SwiftTrainer(Trainer):
    """Writes (and runs, when ms-swift is installed) the paper's ``swift sft`` LoRA command."""

    name = "swift"
    version = "1"
    description = "ms-swift `swift sft` LoRA SFT with DeepSpeed ZeRO-2, as in the paper; prints the command when ms-swift is absent"
    Options = SwiftOptions

    def train(
        self,
        *,
        data: Path | Sequence[Path],
        model: str,
        output_dir: Path,
        preset: str | None = None,
        overrides: dict[str, Any] | None = None,
        resume: bool | str | Path = False,
        log: Any = None,
    ) -> TrainResult:
        """Write the dataset, arguments and command; run it when ``swift`` is on PATH.

        ``overrides`` sets settings on top of the preset and options; ``resume`` (True or a
        checkpoint folder) becomes ``--resume_from_checkpoint``. ``log`` is accepted for a common
        signature with ``hf-lora`` (ms-swift logs to its own output).
        """
        # The swift-only options (swift_version, nproc_per_node, ...) may come as overrides too, so
        # `mmat train --set nproc_per_node=8` reaches them; the rest are training settings.
        own = {k: v for k, v in (overrides or {}).items() if k in SwiftOptions.model_fields and k not in TrainSettings.model_fields}
        settings = resolve_settings(preset, self.options, {k: v for k, v in (overrides or {}).items() if k not in own})
        try:
            options = SwiftOptions(**{**self.options.model_dump(), **own, **settings.model_dump()})
        except ValidationError as exc:
            first = exc.errors()[0]
            raise ConfigError(f"{first['msg']} (got {first.get('input')!r})", key=".".join(map(str, first["loc"]))) from None
        output_dir = Path(output_dir).resolve()
        files = data_files(data)
        records, rejected = load_records(files, Path(settings.image_root) if settings.image_root else None)
        if not records:
            raise ConfigError(f"no trainable record in {', '.join(map(str, files))} ({len(rejected)} rejected)", key="data")
        work = output_dir / "swift"
        work.mkdir(parents=True, exist_ok=True)
        dataset = work / "train.jsonl"
        with AtomicFile(dataset) as out:
            for loaded in records:
                out.write(dumps_line(swift_record(loaded.record.model_dump(mode="json"), [str(p.resolve()) for p in loaded.images])))
        with AtomicFile(output_dir / "quarantine.jsonl") as out:
            for row in rejected:
                out.write(dumps_line(row.model_dump(mode="json")))
        executable = shutil.which(options.swift_bin)
        major, how = swift_major(options.swift_version, executable)
        arguments = sft_arguments(options, model, dataset, output_dir, resume, major=major)
        command = [options.swift_bin, "sft", *arguments, *options.extra_args]
        env = {"NPROC_PER_NODE": str(options.nproc_per_node)} if options.nproc_per_node else {}
        write_json_atomic(work / "sft_args.json", {"command": command, "env": env, "swift_major": major,
                                                   "settings": settings.model_dump(mode="json")})
        script = work / "swift_sft.sh"
        prefix = "".join(f"{k}={shlex.quote(v)} " for k, v in env.items())
        with AtomicFile(script) as out:
            out.write(f"#!/bin/sh\n# Written by mmat's swift trainer: the paper's LoRA SFT run, flags of ms-swift {major}.x ({how}).\n")
            out.write(f"exec {prefix}{shlex.join(command)}\n")
        script.chmod(0o755)
        notes = [f"flags written for ms-swift {major}.x ({how})"]
        if settings.frobenius_lambda > 0:
            notes.append("ms-swift has no Frobenius penalty on LoRA updates: frobenius_lambda is not applied (use hf-lora)")
        result = TrainResult(
            output_dir=str(output_dir),
            command=command,
            trainer="swift",
            base_model=model,
            script=str(script),
            dataset=str(dataset),
            records=len(records),
            rejected=len(rejected),
            ran=False,
            notes=notes,
        )
        if executable is None or not options.run:
            if executable is None:
                result.notes.append(f"'{options.swift_bin}' not found on PATH: install ms-swift (pip install ms-swift) and run {script}")
            write_json_atomic(output_dir / "train_result.json", result.model_dump(mode="json"))
            return result
        log_path = work / "swift_sft.log"
        with open(log_path, "w", encoding="utf-8") as log_file:
            completed = subprocess.run(command, env={**os.environ, **env}, stdout=log_file, stderr=subprocess.STDOUT, check=False)
        result.ran = True
        result.returncode = completed.returncode
        result.log_file = str(log_path)
        if completed.returncode == 0:
            steps, final_loss, checkpoint = read_swift_log(output_dir)
            result.steps, result.final_loss = steps, final_loss
            if checkpoint:
                result.checkpoint = checkpoint
        write_json_atomic(output_dir / "train_result.json", result.model_dump(mode="json"))
        if completed.returncode != 0:
            raise MmatError(f"`swift sft` exited with status {completed.returncode}; see {log_path}")
        return result


def read_swift_log(output_dir: Path) -> tuple[int, float | None, str | None]:
    """Steps, last logged loss and last checkpoint of the newest run ms-swift wrote under
    ``output_dir`` (it adds a ``v<N>-<time>/`` folder holding ``logging.jsonl``); zeros when absent."""
    logs = sorted(output_dir.glob("v*-*/logging.jsonl"), key=lambda p: p.stat().st_mtime)
    steps, loss, checkpoint = 0, None, None
    if not logs:
        return steps, loss, checkpoint
    for line in logs[-1].read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if not isinstance(entry, dict):
            continue
        if isinstance(entry.get("loss"), (int, float)):
            loss = float(entry["loss"])
        progress = str(entry.get("global_step/max_steps", ""))
        if progress.partition("/")[0].isdigit():
            steps = int(progress.partition("/")[0])
        if isinstance(entry.get("global_step"), int):
            steps = entry["global_step"]
        if entry.get("last_model_checkpoint"):
            checkpoint = str(entry["last_model_checkpoint"])
    return steps, loss, checkpoint


def swift_record(record: dict[str, Any], images: list[str]) -> dict[str, Any]:
    """One line of ms-swift's dataset: messages with ``<image>`` tags, and absolute image paths."""
    messages = [{"role": m["role"], "content": m["content"]} for m in record["messages"]]
    if images:
        for message in messages:
            if message["role"] == "user":
                if "<image>" not in message["content"]:
                    message["content"] = "<image>" * len(images) + message["content"]
                break
    return {"messages": messages, "images": images}


def _number(value: float) -> str:
    """``1.0`` -> ``1``, ``4e-05`` stays as Python writes it (ms-swift parses both)."""
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def swift_major(choice: str, executable: str | None) -> tuple[int, str]:
    """The ms-swift major version to write flags for, and how it was chosen (for the notes).

    ``choice`` is the ``swift_version`` option. On ``auto`` the version is read from the
    environment the ``swift`` executable belongs to (its script's interpreter), else from this
    one; with no ms-swift anywhere it is the current major version.
    """
    if choice != "auto":
        return int(choice), "swift_version option"
    version = _version_beside(executable) if executable else None
    if version is None:
        from importlib import metadata  # here: listing the trainers must not import it

        try:
            version = metadata.version("ms-swift")
        except metadata.PackageNotFoundError:
            version = None
    if version is None:
        return CURRENT_MAJOR, "no ms-swift found: the current major version"
    major = int(version.split(".")[0]) if version.split(".")[0].isdigit() else CURRENT_MAJOR
    if major not in _TUNER_FLAG:
        # 5.x and later: assume the newest spelling we know; the note says which one was used.
        return max(_TUNER_FLAG), f"ms-swift {version} installed; flags of the newest known major"
    return major, f"ms-swift {version} installed"


def _version_beside(executable: str) -> str | None:
    """The ms-swift version of the Python that runs ``executable`` (a console script), or None."""
    try:
        with open(executable, "rb") as script:
            first = script.readline(512).decode("utf-8", "replace")
    except OSError:
        return None
    if not first.startswith("#!") or "python" not in first:
        return None
    interpreter = shlex.split(first[2:].strip())
    query = "import importlib.metadata as m\ntry:\n print(m.version('ms-swift'))\nexcept m.PackageNotFoundError:\n pass"
    try:
        done = subprocess.run([*interpreter, "-c", query], capture_output=True, text=True, timeout=60, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() or None


def sft_arguments(options: SwiftOptions, model: str, dataset: Path, output_dir: Path, resume: bool | str | Path,
                  *, major: int = CURRENT_MAJOR) -> list[str]:
    """The ``swift sft`` flags for the settings, spelled for ms-swift ``major`` (3 or 4)."""
    args = {
        "--model": model,
        _TUNER_FLAG[major]: "lora",
        "--dataset": str(dataset),
        "--output_dir": str(output_dir),
        "--num_train_epochs": _number(options.epochs),
        "--per_device_train_batch_size": str(options.batch_size),
        "--gradient_accumulation_steps": str(options.grad_accum),
        "--learning_rate": _number(options.learning_rate),
        "--weight_decay": _number(options.weight_decay),
        "--warmup_ratio": _number(options.warmup_ratio),
        "--lr_scheduler_type": options.lr_scheduler,
        "--max_grad_norm": _number(options.max_grad_norm),
        "--max_length": str(options.max_length),
        "--torch_dtype": _DTYPES[options.precision],
        "--seed": str(options.seed),
        "--lora_rank": str(options.lora_rank),
        "--lora_alpha": str(options.lora_alpha),
        "--lora_dropout": _number(options.lora_dropout),
        "--gradient_checkpointing": "true" if options.gradient_checkpointing else "false",
        "--logging_steps": str(options.logging_steps),
        "--save_total_limit": str(options.save_total_limit),
        "--freeze_vit": "true",
    }
    flat = [item for pair in args.items() for item in pair]
    targets = options.target_modules
    flat += ["--target_modules", *([targets] if isinstance(targets, str) else targets)]
    if options.save_steps:
        flat += ["--save_steps", str(options.save_steps)]
    if options.max_steps is not None:
        flat += ["--max_steps", str(options.max_steps)]
    if options.deepspeed != "none":
        flat += ["--deepspeed", options.deepspeed]
    if resume is True:
        latest = sorted(output_dir.glob("**/checkpoint-*"), key=lambda p: p.stat().st_mtime)
        if not latest:
            raise ConfigError(f"nothing to resume: no checkpoint-* folder under {output_dir}", key="resume")
        flat += ["--resume_from_checkpoint", str(latest[-1])]
    elif resume:
        flat += ["--resume_from_checkpoint", str(resume)]
    return flat

