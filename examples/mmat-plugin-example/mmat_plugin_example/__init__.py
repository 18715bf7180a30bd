"""An example third-party plugin for mmat: one tool and one critic.

Everything mmat needs is the two hook implementations below and the entry point in this
distribution's pyproject.toml. The components live in ``components.py`` and are imported inside
the hooks: mmat loads every plugin's hook module to list commands (``mmat --help``), and a hook
module that imports only ``hookimpl`` keeps that fast.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from mmat_core import hookimpl

if TYPE_CHECKING:
    from mmat_core import Critic, Tool

__version__ = "0.2.0"


@hookimpl
def register_tools(register: Callable[[type[Tool]], None]) -> None:
    """Add the image_stats operator."""
    from mmat_plugin_example.components import ImageStatsTool

    register(ImageStatsTool)


@hookimpl
def register_critics(register: Callable[[type[Critic]], None]) -> None:
    """Add the thought_length critic."""
    from mmat_plugin_example.components import ThoughtLengthCritic

    register(ThoughtLengthCritic)
