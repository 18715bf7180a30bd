"""The answer-matching metrics, as the critics family first published them.

They live in :mod:`mmat_core.metrics` (the core's evaluation uses them too, and the core never
imports a plugin); every public name is re-exported here so existing imports keep working.
"""

from __future__ import annotations

from mmat_core.metrics import (
    METRICS,
    METRIC_ALIASES,
    MetricResult,
    MetricSettings,
    NAME_METRICS,
    TASK_METRICS,
    anls,
    canonical_metric,
    choose_metric,
    clean_prediction,
    exact_match,
    infoseek_match,
    levenshtein,
    normalise_text,
    normalise_vqa,
    numeric_match,
    option_letter,
    option_match,
    parse_number,
    relaxed_accuracy,
    score_answer,
    vqa_accuracy,
)

__all__ = [
    "METRICS",
    "METRIC_ALIASES",
    "MetricResult",
    "MetricSettings",
    "NAME_METRICS",
    "TASK_METRICS",
    "anls",
    "canonical_metric",
    "choose_metric",
    "clean_prediction",
    "exact_match",
    "infoseek_match",
    "levenshtein",
    "normalise_text",
    "normalise_vqa",
    "numeric_match",
    "option_letter",
    "option_match",
    "parse_number",
    "relaxed_accuracy",
    "score_answer",
    "vqa_accuracy",
]
