"""Built-in critics: the paper's two reflection judges, answer verification and quality scoring.

The critic classes are imported inside the hook, so importing this module stays cheap."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from mmat_core import hookimpl

if TYPE_CHECKING:
    from mmat_core import Critic


@hookimpl
def register_critics(register: Callable[[type[Critic]], None]) -> None:
    """Register the built-in critics."""
    from mmat_plugins.critics.answer_match import AnswerMatchCritic
    from mmat_plugins.critics.judges import GeneralCritic, MathCritic, QualityCritic

    register(AnswerMatchCritic)
    register(GeneralCritic)
    register(MathCritic)
    register(QualityCritic)
