"""The ``hf-lora`` trainer: LoRA SFT of a Hugging Face vision-language model on RR or ORR data.

A plain PyTorch loop over ``AutoModelForImageTextToText`` with a peft LoRA adapter on the language
model. The loss covers assistant turns only (see :mod:`mmat_plugins.trainers.data`); the optional
Frobenius penalty adds ``lambda * ||B A||_F^2`` per LoRA layer, computed on r x r matrices so it
costs next to nothing. Checkpoints hold the adapter, optimizer, schedule, data position and RNG
states, so ``resume`` continues exactly where a run stopped.

Output folder::

    adapter/            the LoRA adapter and the processor (load with peft, or ``mmat infer``)
    merged/             base model with the adapter merged in (only with ``merge``)
    checkpoint-<step>/  resumable checkpoints (the newest ``save_total_limit``)
    train_log.jsonl     one line per logging step: step, loss, lr, tokens/s, penalty
    quarantine.jsonl    records that could not be trained on, with the reason
    train_result.json   the :class:`TrainResult`
"""

from __future__ import annotations

import json
import math
import random
import re
import shutil
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from mmat_plugins.trainers.data import (
    EncodeError,
    LoadedRecord,
    SampleEncoder,
    collate,
    data_files,
    iter_order,
    load_records,
)
from mmat_plugins.trainers.model_source import require_training_packages
from mmat_plugins.trainers.settings import TrainSettings, resolve_settings

from mmat_core.components import Trainer, TrainResult
from mmat_core.errors import ConfigError
from mmat_core.model_refs import check_model_source
from mmat_core.writers import AtomicFile, dumps_line, write_json_atomic

#: Module-name parts that mark the vision side of a VLM; "all-linear" leaves these frozen.
VISION_PARTS = ("vision", "visual", "image", "multi_modal_projector", "mm_projector", "connector", "merger", "vpm", "resampler")
LogCallback = Callable[[dict[str, Any]], None]


def pick_device(requested: str) -> str:
    """``auto`` -> cuda when a GPU is visible, else cpu."""
    import torch

    if requested != "auto":
        return requested
    return "cuda" if torch.cuda.is_available() else "cpu"


def pick_dtype(precision: str, device: str) -> Any:
    """The compute dtype: bf16 where the device supports it under ``auto`` (the paper trained in bf16)."""
    import torch

    if precision == "bf16":
        return torch.bfloat16
    if precision == "fp16":
        return torch.float16
    if precision == "fp32":
        return torch.float32
    if device.startswith("cuda") and torch.cuda.is_available() and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float32


def language_linear_modules(model: Any) -> list[str]:
    """Full names of the Linear layers of the language model (vision tower, projector, lm_head out)."""
    import torch

    names = []
    for name, module in model.named_modules():
        if not isinstance(module, torch.nn.Linear):
            continue
        lowered = name.lower()
        if name.endswith("lm_head") or any(part in lowered for part in VISION_PARTS):
            continue
        names.append(name)
    return names


def lora_targets(model: Any, target_modules: str | list[str]) -> str | list[str]:
    """peft's ``target_modules`` for the setting: all-linear of the language model, a list, or a regex."""
    if target_modules == "all-linear":
        names = language_linear_modules(model)
        if not names:
            raise ConfigError("found no Linear layer in the language model to put LoRA on; give target_modules", key="target_modules")
        # An anchored regex over exact names: suffix matching could also hit vision layers of the same name.
        return "^(" + "|".join(re.escape(name) for name in names) + ")$"
    return target_modules


def frobenius_penalty(model: Any) -> Any:
    """Sum over LoRA layers of ``||scale * B A||_F^2``, as ``trace((B^T B)(A A^T))`` on r x r matrices."""
    import torch

    total: Any = None
    for module in model.modules():
        lora_a = getattr(module, "lora_A", None)
        lora_b = getattr(module, "lora_B", None)
        if not isinstance(lora_a, torch.nn.ModuleDict) or not isinstance(lora_b, torch.nn.ModuleDict):
            continue
        for adapter in lora_a:
            if adapter not in lora_b:
                continue
            a = lora_a[adapter].weight.float()  # r x in
            b = lora_b[adapter].weight.float()  # out x r
            scale = float(module.scaling[adapter]) if hasattr(module, "scaling") else 1.0
            term = (scale**2) * torch.sum((b.T @ b) * (a @ a.T))
            total = term if total is None else total + term
    return total if total is not None else torch.zeros(())


def lr_lambda(settings: TrainSettings, total_steps: int) -> Callable[[int], float]:
    """Linear warm-up, then cosine or linear decay to zero (or constant)."""
    warmup = math.ceil(settings.warmup_ratio * total_steps)

    def factor(step: int) -> float:
        if warmup and step < warmup:
            return (step + 1) / warmup
        if settings.lr_scheduler == "constant":
            return 1.0
        progress = (step - warmup) / max(1, total_steps - warmup)
        progress = min(max(progress, 0.0), 1.0)
        if settings.lr_scheduler == "linear":
            return 1.0 - progress
        return 0.5 * (1.0 + math.cos(math.pi * progress))

    return factor


def latest_checkpoint(output_dir: Path) -> Path | None:
    """The checkpoint with the highest step in ``output_dir``."""
    found = [(int(p.name.split("-")[1]), p) for p in output_dir.glob("checkpoint-*") if p.name.split("-")[1].isdigit()]
    return max(found)[1] if found else None


class HFLoraTrainer(Trainer):
    """LoRA SFT with torch, transformers and peft, on CPU for tiny models and on CUDA when present."""

    name = "hf-lora"
    version = "1"
    description = "LoRA SFT of a Hugging Face VLM (AutoModelForImageTextToText) on RR/ORR data, loss on assistant turns"
    Options = TrainSettings

    def train(
        self,
        *,
        data: Path | Sequence[Path],
        model: str,
        output_dir: Path,
        preset: str | None = None,
        overrides: dict[str, Any] | None = None,
        resume: bool | str | Path = False,
        log: LogCallback | None = None,
    ) -> TrainResult:
        """Fine-tune ``model`` on ``data`` into ``output_dir``.

        ``overrides`` sets any :class:`TrainSettings` field on top of the preset and the component's
        options. ``resume`` is True (newest checkpoint in ``output_dir``) or a checkpoint folder.
        ``log`` receives each logged record (step, loss, lr, tokens_per_s, ...).
        """
        settings = resolve_settings(preset, self.options, overrides)
        require_training_packages("the hf-lora trainer")
        check_model_source(model)  # before transformers, which would retry an unreachable Hub for minutes
        output_dir = Path(output_dir)
        files = data_files(data)
        records, rejected = load_records(files, Path(settings.image_root) if settings.image_root else None)
        if not records:
            raise ConfigError(f"no trainable record in {', '.join(map(str, files))} ({len(rejected)} rejected)", key="data")
        checkpoint = self._checkpoint_to_resume(resume, output_dir)
        output_dir.mkdir(parents=True, exist_ok=True)
        return _Run(settings, records, rejected, model, output_dir, checkpoint, log).execute()

    @staticmethod
    def _checkpoint_to_resume(resume: bool | str | Path, output_dir: Path) -> Path | None:
        if resume is False or resume is None:
            return None
        if resume is True:
            found = latest_checkpoint(output_dir)
            if found is None:
                raise ConfigError(f"nothing to resume: no checkpoint-* folder in {output_dir}", key="resume")
            return found
        path = Path(resume)
        if not (path / "trainer_state.json").exists():
            raise ConfigError(f"{path} is not a checkpoint (no trainer_state.json)", key="resume")
        return path


class _Run:
    """One training run (state kept on the object so checkpointing can reach it)."""

    def __init__(self, settings: TrainSettings, records: list[LoadedRecord], rejected: list[Any], model_id: str,
                 output_dir: Path, checkpoint: Path | None, log: LogCallback | None) -> None:
        self.settings = settings
        self.records = records
        self.rejected = rejected
        self.model_id = model_id
        self.output_dir = output_dir
        self.checkpoint = checkpoint
        self.log_callback = log

    def _seed(self) -> None:
        import numpy as np
        import torch

        random.seed(self.settings.seed)
        np.random.seed(self.settings.seed % (2**32))
        torch.manual_seed(self.settings.seed)

    def _load(self) -> tuple[Any, Any]:
        from peft import LoraConfig, get_peft_model
        from transformers import AutoModelForImageTextToText, AutoProcessor

        s = self.settings
        try:
            processor = AutoProcessor.from_pretrained(self.model_id)
            model = AutoModelForImageTextToText.from_pretrained(self.model_id, dtype=self.dtype)
        except OSError as exc:
            raise ConfigError(f"cannot load model '{self.model_id}': {exc}", key="model") from None
        model.to(self.device)
        # The KV cache is useless in training and clashes with activation checkpointing.
        for config in (model.config, getattr(model.config, "text_config", None)):
            if config is not None and getattr(config, "use_cache", None):
                config.use_cache = False
        if s.gradient_checkpointing:
            # Non-reentrant checkpointing works with frozen inputs (no enable_input_require_grads needed).
            # transformers 5 renamed the method; older releases only have the old name.
            if hasattr(model, "activation_checkpointing_enable"):
                model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
            else:
                model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        config = LoraConfig(
            r=s.lora_rank,
            lora_alpha=s.lora_alpha,
            lora_dropout=s.lora_dropout,
            target_modules=lora_targets(model, s.target_modules),
            bias="none",
        )
        return processor, get_peft_model(model, config)

    def execute(self) -> TrainResult:
        import torch

        s = self.settings
        self.device = pick_device(s.device)
        self.dtype = pick_dtype(s.precision, self.device)
        self._seed()
        processor, model = self._load()
        tokenizer = getattr(processor, "tokenizer", processor)
        pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (tokenizer.eos_token_id or 0)
        encoder = SampleEncoder(processor, s.max_length)
        per_step = s.batch_size * s.grad_accum
        if s.max_steps is not None:
            # Like transformers' max_steps: it replaces the epoch count, repeating the data if needed.
            epochs = float(math.ceil(s.max_steps * per_step / len(self.records)))
            order = list(iter_order(len(self.records), epochs, s.seed))
            total_steps = s.max_steps
        else:
            order = list(iter_order(len(self.records), s.epochs, s.seed))
            total_steps = math.ceil(len(order) / per_step)
        params = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(params, lr=s.learning_rate, weight_decay=s.weight_decay)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(s, total_steps))
        step, position = 0, 0
        if self.checkpoint is not None:
            step, position = self._restore(model, optimizer, scheduler)
        quarantine_path = self.output_dir / "quarantine.jsonl"
        log_file = self.output_dir / "train_log.jsonl"
        # Closed in the `finally` below; a `with` would indent the whole loop once more.
        log_handle = open(log_file, "a" if self.checkpoint else "w", encoding="utf-8")  # noqa: SIM115
        use_autocast = self.dtype != torch.float32
        device_type = "cuda" if self.device.startswith("cuda") else "cpu"
        if device_type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        model.train()
        window_loss, window_tokens, window_trained, window_batches = 0.0, 0, 0, 0
        window_started = time.perf_counter()
        final_loss: float | None = None
        losses: list[float] = []
        total_tokens = 0
        run_started = time.perf_counter()
        try:
            while step < total_steps and position < len(order):
                optimizer.zero_grad(set_to_none=True)
                step_loss, step_penalty, micro = 0.0, 0.0, 0
                for _ in range(s.grad_accum):
                    batch, position = self._next_batch(order, position, encoder, pad_id)
                    if batch is None:
                        break
                    batch = {k: v.to(self.device) for k, v in batch.items()}
                    if "pixel_values" in batch and use_autocast:
                        batch["pixel_values"] = batch["pixel_values"].to(self.dtype)
                    with torch.autocast(device_type=device_type, dtype=self.dtype, enabled=use_autocast):
                        loss = model(**batch).loss
                    if s.frobenius_lambda > 0:
                        penalty = frobenius_penalty(model)
                        loss = loss + s.frobenius_lambda * penalty
                        step_penalty += float(penalty.detach())
                    (loss / s.grad_accum).backward()
                    step_loss += float(loss.detach())
                    micro += 1
                    window_tokens += int(batch["attention_mask"].sum())
                    window_trained += int((batch["labels"] != -100).sum())
                if micro == 0:
                    break
                torch.nn.utils.clip_grad_norm_(params, s.max_grad_norm)
                optimizer.step()
                scheduler.step()
                step += 1
                final_loss = step_loss / micro
                losses.append(final_loss)
                window_loss += final_loss
                window_batches += 1
                if step % s.logging_steps == 0 or step == total_steps or position >= len(order):
                    elapsed = max(time.perf_counter() - window_started, 1e-9)
                    total_tokens += window_tokens
                    record = {
                        "step": step,
                        "total_steps": total_steps,
                        "epoch": round(position / max(1, len(self.records)), 4),
                        "loss": round(window_loss / window_batches, 6),
                        "lr": scheduler.get_last_lr()[0],
                        "tokens_per_s": round(window_tokens / elapsed, 2),
                        "trained_tokens": window_trained,
                        "penalty": round(step_penalty / micro, 8) if s.frobenius_lambda > 0 else None,
                    }
                    log_handle.write(dumps_line(record))
                    log_handle.flush()
                    if self.log_callback:
                        self.log_callback(record)
                    window_loss, window_tokens, window_trained, window_batches = 0.0, 0, 0, 0
                    window_started = time.perf_counter()
                # The last step is checkpointed too, so a finished run can be extended with a larger max_steps.
                if s.save_steps and (step % s.save_steps == 0 or step == total_steps or position >= len(order)):
                    self._save_checkpoint(model, optimizer, scheduler, step, position)
        finally:
            log_handle.close()
            self._write_quarantine(quarantine_path)
        peak_memory = torch.cuda.max_memory_allocated() if device_type == "cuda" else None
        adapter_dir = self.output_dir / "adapter"
        model.save_pretrained(adapter_dir)
        processor.save_pretrained(adapter_dir)
        merged_dir = self._merge(model, processor) if s.merge else None
        result = TrainResult(
            output_dir=str(self.output_dir),
            steps=step,
            final_loss=final_loss,
            trainer="hf-lora",
            base_model=self.model_id,
            adapter_dir=str(adapter_dir),
            merged_dir=str(merged_dir) if merged_dir else None,
            log_file=str(log_file),
            device=self.device,
            dtype=str(self.dtype).replace("torch.", ""),
            records=len(self.records),
            rejected=len(self.rejected),
            tokens_per_s=round(total_tokens / max(time.perf_counter() - run_started, 1e-9), 2),
            peak_memory_bytes=peak_memory,
            settings=self.settings.model_dump(mode="json"),
        )
        write_json_atomic(self.output_dir / "train_result.json", result.model_dump(mode="json"))
        return result

    def _next_batch(self, order: list[int], position: int, encoder: SampleEncoder, pad_id: int) -> tuple[dict[str, Any] | None, int]:
        """The next ``batch_size`` encodable samples; records that fail to encode are quarantined."""
        samples = []
        while len(samples) < self.settings.batch_size and position < len(order):
            loaded = self.records[order[position]]
            position += 1
            try:
                samples.append(encoder.encode(loaded))
            except EncodeError as exc:
                self._reject(loaded, exc.reason, exc.detail)
        return (collate(samples, pad_id) if samples else None), position

    def _reject(self, loaded: LoadedRecord, reason: str, detail: str) -> None:
        from mmat_core.models import Rejected

        # Each record is met once per epoch: quarantine it once.
        if not any(r.row == loaded.origin for r in self.rejected):
            self.rejected.append(Rejected(source="training_data", row=loaded.origin, reason=reason, detail=detail, stage="train"))

    def _write_quarantine(self, path: Path) -> None:
        with AtomicFile(path) as out:
            for row in self.rejected:
                out.write(dumps_line(row.model_dump(mode="json")))

    def _save_checkpoint(self, model: Any, optimizer: Any, scheduler: Any, step: int, position: int) -> None:
        import torch

        final = self.output_dir / f"checkpoint-{step}"
        staging = self.output_dir / f".checkpoint-{step}.tmp"
        shutil.rmtree(staging, ignore_errors=True)
        model.save_pretrained(staging)
        torch.save({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()}, staging / "optimizer.pt")
        rng: dict[str, Any] = {"python": random.getstate(), "torch": torch.get_rng_state()}
        if torch.cuda.is_available():
            rng["cuda"] = torch.cuda.get_rng_state_all()
        torch.save(rng, staging / "rng_state.pt")
        state = {"step": step, "position": position, "base_model": self.model_id, "settings": self.settings.model_dump(mode="json")}
        (staging / "trainer_state.json").write_text(json.dumps(state, indent=2), encoding="utf-8")
        shutil.rmtree(final, ignore_errors=True)
        # Rename last, so a checkpoint folder under its real name is always complete.
        staging.rename(final)
        kept = sorted(self.output_dir.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
        for old in kept[: -self.settings.save_total_limit]:
            shutil.rmtree(old, ignore_errors=True)

    def _restore(self, model: Any, optimizer: Any, scheduler: Any) -> tuple[int, int]:
        import torch
        from peft import set_peft_model_state_dict
        from safetensors.torch import load_file

        assert self.checkpoint is not None
        state = json.loads((self.checkpoint / "trainer_state.json").read_text(encoding="utf-8"))
        weights = load_file(str(self.checkpoint / "adapter_model.safetensors"), device=self.device)
        set_peft_model_state_dict(model, weights)
        saved = torch.load(self.checkpoint / "optimizer.pt", map_location=self.device, weights_only=False)
        optimizer.load_state_dict(saved["optimizer"])
        scheduler.load_state_dict(saved["scheduler"])
        rng = torch.load(self.checkpoint / "rng_state.pt", weights_only=False)
        random.setstate(rng["python"])
        torch.set_rng_state(rng["torch"])
        if "cuda" in rng and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(rng["cuda"])
        return int(state["step"]), int(state["position"])

    def _merge(self, model: Any, processor: Any) -> Path:
        merged_dir = self.output_dir / "merged"
        merged = model.merge_and_unload()
        merged.save_pretrained(merged_dir)
        processor.save_pretrained(merged_dir)
        return merged_dir
