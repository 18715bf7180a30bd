"""Training hyperparameters shared by the trainers, and the named presets.

The ``mmat-paper`` preset is Table 7 of the MMAT-1M paper (MMAT-SPEC.md, "Training and evaluation"):
one epoch, batch 1, gradient accumulation 1, learning rate 4e-5, weight decay 0.1, max length
16384, bf16, seed 42, DeepSpeed ZeRO-2 (ms-swift). What the paper does not give (LoRA rank, alpha,
targets, the Frobenius lambda, the schedule) is a documented project default.

Settings are resolved in this order, later wins: the preset, the options given to the trainer
component (only those explicitly set), then the ``overrides`` passed to ``train``.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, ValidationError

from mmat_core.components import ComponentOptions
from mmat_core.errors import ConfigError


class TrainSettings(ComponentOptions):
    """Every knob of a LoRA SFT run. Defaults are the ``mmat-paper`` values."""

    epochs: float = Field(1.0, gt=0, description="passes over the data (the paper: 1)")
    max_steps: int | None = Field(None, ge=1, description="stop after this many optimizer steps (overrides epochs)")
    batch_size: int = Field(1, ge=1, description="samples per forward pass (the paper: 1)")
    grad_accum: int = Field(1, ge=1, description="gradient accumulation steps (the paper: 1)")
    learning_rate: float = Field(4e-5, gt=0, description="peak learning rate (the paper: 4e-5)")
    weight_decay: float = Field(0.1, ge=0, description="AdamW weight decay (the paper: 0.1)")
    warmup_ratio: float = Field(0.05, ge=0, le=1, description="share of steps with linear warm-up (not in the paper)")
    lr_scheduler: Literal["cosine", "linear", "constant"] = Field("cosine", description="decay after warm-up (not in the paper)")
    max_grad_norm: float = Field(1.0, gt=0, description="gradient clipping")
    max_length: int = Field(16384, ge=16, description="tokens per sample, image tokens included (the paper: 16384)")
    precision: Literal["auto", "bf16", "fp16", "fp32"] = Field(
        "auto", description="auto = bf16 on a GPU that supports it, else fp32 (the paper: bf16)"
    )
    seed: int = Field(42, description="seed of data order, LoRA init and dropout (the paper: 42)")
    lora_rank: int = Field(8, ge=1, description="LoRA rank r (not in the paper)")
    lora_alpha: int = Field(32, ge=1, description="LoRA alpha (not in the paper)")
    lora_dropout: float = Field(0.05, ge=0, lt=1)
    target_modules: str | list[str] = Field(
        "all-linear",
        description="'all-linear' = every Linear layer of the language model (vision tower, projector and "
        "lm_head left out), a list of module-name suffixes, or a regular expression",
    )
    frobenius_lambda: float = Field(
        0.0, ge=0, description="adds lambda * sum ||B A||_F^2 over LoRA layers to the loss; 0 turns it off (lambda not in the paper)"
    )
    gradient_checkpointing: bool = Field(True, description="recompute activations in the backward pass to save memory")
    logging_steps: int = Field(10, ge=1, description="log loss and tokens/s every N optimizer steps")
    save_steps: int = Field(500, ge=0, description="write a resumable checkpoint every N optimizer steps (0: none)")
    save_total_limit: int = Field(2, ge=1, description="checkpoints kept; older ones are deleted")
    merge: bool = Field(False, description="also write the base model with the adapter merged in")
    device: str = Field("auto", description="auto = cuda when present, else cpu; or any torch device string")
    image_root: str | None = Field(None, description="folder that relative image paths in the data are resolved against")
    deepspeed: Literal["zero2", "zero3", "none"] = Field("zero2", description="swift only: DeepSpeed stage (the paper: zero2)")


PRESETS: dict[str, dict[str, Any]] = {
    # Table 7 of the paper, written out in full so the preset documents itself.
    "mmat-paper": {
        "epochs": 1.0,
        "batch_size": 1,
        "grad_accum": 1,
        "learning_rate": 4e-5,
        "weight_decay": 0.1,
        "max_length": 16384,
        "precision": "auto",
        "seed": 42,
        "deepspeed": "zero2",
        "gradient_checkpointing": True,
    },
    # A CPU check on a tiny model: a larger learning rate so a few steps visibly move the loss.
    "smoke": {
        "learning_rate": 2e-3,
        "warmup_ratio": 0.0,
        "lr_scheduler": "constant",
        "max_length": 4096,
        "gradient_checkpointing": False,
        "logging_steps": 1,
        "save_steps": 0,
        "precision": "fp32",
        "deepspeed": "none",
    },
}

DEFAULT_PRESET = "mmat-paper"


def resolve_settings(
    preset: str | None,
    options: ComponentOptions | None = None,
    overrides: dict[str, Any] | None = None,
) -> TrainSettings:
    """The settings of one run: preset, then explicitly set component options, then overrides."""
    name = preset or DEFAULT_PRESET
    if name not in PRESETS:
        raise ConfigError(f"unknown preset '{name}'. Available: {', '.join(sorted(PRESETS))}", key="preset")
    values: dict[str, Any] = dict(PRESETS[name])
    if options is not None:
        # A trainer's own options (swift_bin, ...) are not training settings: only shared keys pass.
        values.update({key: getattr(options, key) for key in options.model_fields_set if key in TrainSettings.model_fields})
    values.update(overrides or {})
    try:
        return TrainSettings(**values)
    except ValidationError as exc:
        first = exc.errors()[0]
        key = ".".join(str(part) for part in first["loc"])
        allowed = ", ".join(sorted(TrainSettings.model_fields))
        raise ConfigError(f"{first['msg']} (settings: {allowed})", key=key) from None
