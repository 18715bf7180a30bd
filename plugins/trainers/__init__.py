"""Built-in trainers: ``hf-lora`` (torch + transformers + peft) and ``swift`` (the paper's ms-swift run).

Both modules import torch, transformers and peft only inside ``train``, so registering them is cheap.
"""

from __future__ import annotations

from collections.abc import Callable

from mmat_plugins.trainers.hf_lora import HFLoraTrainer
from mmat_plugins.trainers.swift import SwiftTrainer

from mmat_core import hookimpl
from mmat_core.components import Trainer


@hookimpl
def register_trainers(register: Callable[[type[Trainer]], None]) -> None:
    """Register the built-in trainers."""
    register(HFLoraTrainer)
    register(SwiftTrainer)
