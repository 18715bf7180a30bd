"""Built-in critics: the paper's two reflection judges, answer verification and quality scoring."""

from __future__ import annotations

from collections.abc import Callable

from mmat_core import hookimpl
from mmat_core.components import Critic
from mmat_plugins.critics.answer_match import AnswerMatchCritic
from mmat_plugins.critics.judges import GeneralCritic, MathCritic, QualityCritic


@hookimpl
def register_critics(register: Callable[[type[Critic]], None]) -> None:
    """Register the built-in critics."""
    register(AnswerMatchCritic)
    register(GeneralCritic)
    register(MathCritic)
    register(QualityCritic)
