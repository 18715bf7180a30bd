"""The ``answer_match`` critic: the final answer against the ground truth, pure code.

The paper never checks that a rationale's final answer is right (the generator was told it);
mmat does, with the metric of the benchmark each sample comes from (see
:mod:`mmat_plugins.critics.metrics`). A score below the threshold rejects the sample: reflection
cannot help, because the reasoning already ended on a wrong answer.
"""

from __future__ import annotations

from pydantic import Field, field_validator

from mmat_core.components import ComponentOptions, Critic, CriticContext
from mmat_core.models import Trace, Verdict
from mmat_core.metrics import (
    METRIC_ALIASES,
    MetricSettings,
    canonical_metric,
    normalise_text,
    score_answer,
)

__all__ = ["AnswerMatchCritic", "AnswerMatchOptions", "normalise"]

#: Kept for callers of the first version.
normalise = normalise_text


class AnswerMatchOptions(ComponentOptions):
    """Options of ``answer_match``."""

    threshold: float = Field(0.5, ge=0, le=1, description="a score at or above this passes")
    metric: str | None = Field(None, description="score every sample with this metric instead of each sample's own")
    anls_threshold: float = Field(0.5, gt=0, le=1, description="ANLS: normalised distance at which a match scores 0")
    relaxed_tolerance: float = Field(0.05, ge=0, description="relaxed accuracy: relative tolerance for numbers")
    numeric_tolerance: float = Field(0.0, ge=0, description="numeric: relative tolerance beyond 3-decimal rounding")
    infoseek_tolerance: float = Field(0.1, ge=0, description="InfoSeek: relative tolerance around a single number")

    @field_validator("metric")
    @classmethod
    def _known_metric(cls, value: str | None) -> str | None:
        if value is not None and canonical_metric(value) is None:
            raise ValueError(f"unknown metric {value!r}; allowed: {', '.join(sorted(METRIC_ALIASES))}")
        return value


class AnswerMatchCritic(Critic):
    """Rejects a sample whose final answer does not match the ground truth under its metric."""

    name = "answer_match"
    version = "2"
    description = "verify the final answer against the ground truth with the source's metric (no model call)"
    order = 10
    Options = AnswerMatchOptions

    def _settings(self) -> MetricSettings:
        options = self.options
        return MetricSettings(
            anls_threshold=options.anls_threshold,
            relaxed_tolerance=options.relaxed_tolerance,
            numeric_tolerance=options.numeric_tolerance,
            infoseek_tolerance=options.infoseek_tolerance,
        )

    async def review(self, trace: Trace, ctx: CriticContext) -> Verdict:
        """Score the final answer; pass at or above the threshold, reject below it."""
        if not (trace.final_answer or "").strip():
            return Verdict(critic=self.name, verdict="reject", reason="the dialogue has no final answer", score=0.0)
        try:
            result = score_answer(trace.final_answer, trace.sample, self.options.metric, self._settings())
        except ValueError as exc:
            # A source wrote a metric name mmat does not know: say so on every sample it affects.
            return Verdict(critic=self.name, verdict="reject", reason=f"sample {trace.sample.id}: {exc}", score=0.0)
        passed = result.score >= self.options.threshold
        reason = "" if passed else (
            f"final answer {trace.final_answer!r} scored {result.score:.2f} by {result.metric} against "
            f"{trace.sample.answers[0]!r} (threshold {self.options.threshold})"
        )
        return Verdict(
            critic=self.name,
            verdict="pass" if passed else "reject",
            reason=reason,
            score=round(result.score, 4),
            data={"metric": result.metric, "matched": result.matched},
        )
