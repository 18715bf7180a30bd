"""Built-in trainers: ``hf-lora`` (torch + transformers + peft) and ``swift`` (the paper's ms-swift run),
and the command ``mmat tiny-model DIR`` (a tiny random model to try them on).

Both modules import torch, transformers and peft only inside ``train``, so registering them is cheap;
they are imported inside the hook, so importing this module is cheaper still.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from mmat_core import hookimpl

if TYPE_CHECKING:
    import click

    from mmat_core import Trainer


@hookimpl
def register_trainers(register: Callable[[type[Trainer]], None]) -> None:
    """Register the built-in trainers."""
    from mmat_plugins.trainers.hf_lora import HFLoraTrainer
    from mmat_plugins.trainers.swift import SwiftTrainer

    register(HFLoraTrainer)
    register(SwiftTrainer)


@hookimpl
def register_commands(cli: click.Group) -> None:
    """Add ``mmat tiny-model``."""
    from mmat_plugins.trainers.command import tiny_model

    cli.add_command(tiny_model)
