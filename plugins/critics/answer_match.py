"""The ``answer_match`` critic: the final answer against the ground truth, pure code."""

from __future__ import annotations

import re
import string

from mmat_core.components import Critic, CriticContext
from mmat_core.models import Trace, Verdict

_ARTICLES = re.compile(r"\b(a|an|the)\b")


def normalise(text: str) -> str:
    """Lowercase, no punctuation, no articles, single spaces."""
    text = text.lower().translate(str.maketrans("", "", string.punctuation))
    return " ".join(_ARTICLES.sub(" ", text).split())


class AnswerMatchCritic(Critic):
    """Rejects a sample whose final answer does not match the ground truth."""

    name = "answer_match"
    version = "1"
    description = "verify the final answer against the ground truth with the source's metric (no model call)"
    order = 10

    async def review(self, trace: Trace, ctx: CriticContext) -> Verdict:
        """Compare the final answer with every accepted answer."""
        predicted = normalise(trace.final_answer or "")
        ok = any(predicted == normalise(answer) for answer in trace.sample.answers)
        return Verdict(
            critic=self.name,
            verdict="pass" if ok else "reject",
            reason="" if ok else f"final answer {trace.final_answer!r} does not match {trace.sample.answers[0]!r}",
            score=1.0 if ok else 0.0,
            data={"metric": "exact"},
        )
