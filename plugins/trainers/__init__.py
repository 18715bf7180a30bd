"""Built-in trainers."""

from __future__ import annotations

from collections.abc import Callable

from mmat_core import hookimpl
from mmat_core.components import Trainer


@hookimpl
def register_trainers(register: Callable[[type[Trainer]], None]) -> None:
    """Register the built-in trainers."""
