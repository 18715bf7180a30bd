"""Presets and the order in which settings are resolved."""

from __future__ import annotations

import pytest
from mmat_plugins.trainers.settings import PRESETS, TrainSettings, resolve_settings

from mmat_core.errors import ConfigError


def test_mmat_paper_preset_is_table_7() -> None:
    s = resolve_settings("mmat-paper")
    assert (s.epochs, s.batch_size, s.grad_accum, s.learning_rate, s.weight_decay, s.max_length, s.seed, s.deepspeed) == (
        1.0, 1, 1, 4e-5, 0.1, 16384, 42, "zero2")
    assert s.precision == "auto"  # bf16 wherever the device supports it


def test_explicit_options_beat_the_preset_and_overrides_beat_both() -> None:
    options = TrainSettings(learning_rate=1e-4, lora_rank=16)
    s = resolve_settings("smoke", options, {"lora_rank": 4})
    assert s.learning_rate == 1e-4 and s.lora_rank == 4
    assert s.max_length == PRESETS["smoke"]["max_length"]


def test_unknown_preset_lists_the_choices() -> None:
    with pytest.raises(ConfigError, match="unknown preset 'paper'. Available: mmat-paper, smoke"):
        resolve_settings("paper")


def test_bad_override_names_the_key() -> None:
    with pytest.raises(ConfigError, match="learning_rate"):
        resolve_settings(None, overrides={"learning_rate": -1})
    with pytest.raises(ConfigError, match="lerning_rate"):
        resolve_settings(None, overrides={"lerning_rate": 1e-4})
