"""``mmat eval``: run a model over a QA file with answers and score it.

A benchmark file is JSON Lines, one question a line::

    {"id": "q1", "question": "How many faces?", "answers": ["1"], "image": "img/astronaut.jpg",
     "constraint": "Answer the question using a single word or phrase.", "metric": "exact",
     "choices": null, "source": "mybench", "subset": null, "task_type": "vqa"}

``answer`` (one string) may stand for ``answers``, and ``images`` (a list) for ``image``;
relative image paths are resolved against the file's folder. Rows that do not validate, or whose
image is missing, are quarantined with a reason and the run goes on.

Each question is answered by :class:`mmat_plugins.agent.AgentRuntime` in the chosen mode (``plain``,
``rr`` or ``orr``) and scored with the ``answer_match`` metrics (the metric a row names, else the
one its source or task type calls for). Written to the output folder:

* ``predictions.jsonl``: per question: prediction, answers, metric, score, steps, operators, error;
* ``traces.jsonl``: the full Trace of each question;
* ``quarantine.jsonl``: rows that could not be evaluated;
* ``summary.json`` and ``summary.md``: accuracy overall and per source/subset.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mmat_plugins.agent.agent import AgentResult, AgentRuntime
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from mmat_core import prompts
from mmat_core.errors import ConfigError, first_validation_problem
from mmat_core.images import ImageError
from mmat_core.jsonl import BadLine, iter_jsonl
from mmat_core.models import Rejected, SourceSample
from mmat_core.writers import AtomicFile, dumps_line, write_json_atomic

ProgressCallback = Callable[[int, int], None]


class BenchItem(BaseModel):
    """One line of a benchmark file."""

    model_config = ConfigDict(extra="forbid")
    id: str | None = None
    question: str = Field(min_length=1)
    answers: list[str] = Field(default_factory=list)
    answer: str | None = None
    image: str | None = None
    images: list[str] = Field(default_factory=list)
    constraint: str = ""
    choices: list[str] | None = None
    metric: str | None = None
    source: str = "bench"
    subset: str | None = None
    task_type: str = "vqa"
    meta: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _merge_aliases(self) -> BenchItem:
        if self.answer is not None and self.answer not in self.answers:
            self.answers.insert(0, self.answer)
        if self.image and self.image not in self.images:
            self.images.insert(0, self.image)
        if not self.answers:
            raise ValueError("a benchmark row needs `answers` (a list) or `answer` (a string)")
        return self


class Prediction(BaseModel):
    """One line of ``predictions.jsonl``."""

    id: str
    source: str
    subset: str | None = None
    question: str
    prediction: str
    answers: list[str]
    metric: str
    score: float
    correct: bool
    mode: str
    steps: int = 0
    operators: list[str] = Field(default_factory=list)
    rag_queries: list[str] = Field(default_factory=list)
    error: str | None = None


class GroupScore(BaseModel):
    """Accuracy of one group (all, a source or a source/subset)."""

    count: int = 0
    correct: int = 0
    score_sum: float = 0.0
    failed: int = 0
    steps_sum: int = 0
    operator_calls: dict[str, int] = Field(default_factory=dict)

    @property
    def accuracy(self) -> float:
        """Share of questions scored as correct (score at least 0.5 for graded metrics)."""
        return self.correct / self.count if self.count else 0.0

    @property
    def mean_score(self) -> float:
        """Mean metric score (VQA accuracy and ANLS are graded, not 0/1)."""
        return self.score_sum / self.count if self.count else 0.0

    def add(self, prediction: Prediction) -> None:
        """Count one scored question."""
        self.count += 1
        self.correct += int(prediction.correct)
        self.score_sum += prediction.score
        self.failed += int(prediction.error is not None)
        self.steps_sum += prediction.steps
        for name in prediction.operators:
            self.operator_calls[name] = self.operator_calls.get(name, 0) + 1


@dataclass
class EvalResult:
    """What ``evaluate`` wrote and the scores."""

    out_dir: Path
    overall: GroupScore
    groups: dict[str, GroupScore]
    predictions: list[Prediction] = field(default_factory=list)
    rejected: list[Rejected] = field(default_factory=list)
    metric_source: str = ""


def read_bench(path: Path) -> tuple[list[SourceSample], list[Rejected]]:
    """Validate a benchmark file into samples; bad rows become Rejected rows."""
    from mmat_core.images import image_ref_from_file

    if not path.is_file():
        raise ConfigError(f"benchmark file not found: {path}", key="data")
    samples: list[SourceSample] = []
    rejected: list[Rejected] = []
    seen: set[str] = set()
    for number, data in iter_jsonl(path):
        origin = f"{path}:{number}"
        if isinstance(data, BadLine):
            rejected.append(Rejected(source="bench", row=origin, reason="not_json", detail=data.message, stage="eval"))
            continue
        try:
            item = BenchItem.model_validate(data)
        except ValidationError as exc:
            rejected.append(Rejected(source="bench", row=origin, reason="invalid_row", detail=first_validation_problem(exc),
                                     stage="eval"))
            continue
        sample_id = item.id or f"{path.stem}-{number}"
        if sample_id in seen:
            rejected.append(Rejected(source=item.source, row=origin, reason="duplicate_id", detail=sample_id, stage="eval"))
            continue
        try:
            refs = [image_ref_from_file(p if (p := Path(name)).is_absolute() else path.parent / p) for name in item.images]
        except ImageError as exc:
            rejected.append(Rejected(source=item.source, row=origin, reason=exc.reason, detail=exc.detail, stage="eval"))
            continue
        # The same separator the sources use, so the model sees the first turn it was trained on.
        constraint = prompts.constraint_suffix(item.constraint)
        seen.add(sample_id)
        samples.append(SourceSample(id=sample_id, source=item.source, subset=item.subset, question=item.question,
                                    answers=item.answers, choices=item.choices, constraint=constraint,
                                    task_type=item.task_type, metric=item.metric, images=refs, meta=item.meta))
    return samples, rejected


def metric_scorer() -> tuple[Callable[[str, SourceSample], tuple[str, float]], str]:
    """The scoring function and where it comes from: the ``answer_match`` metrics
    (:func:`mmat_core.metrics.score_answer`), so a benchmark is scored as the critic scores data."""
    from mmat_core.metrics import score_answer

    def scored(prediction: str, sample: SourceSample) -> tuple[str, float]:
        result = score_answer(prediction, sample)
        return result.metric, float(result.score)

    return scored, "mmat_core.metrics.score_answer (answer_match)"


def _prediction(result: AgentResult, sample: SourceSample, mode: str, scorer: Callable[[str, SourceSample], tuple[str, float]]) -> Prediction:
    trace = result.trace
    try:
        metric, score = scorer(result.answer, sample)
    except ValueError as exc:  # an unknown metric name in the row
        metric, score = sample.metric or "?", 0.0
        trace.notes.append(f"metric_error: {exc}")
    return Prediction(
        id=sample.id, source=sample.source, subset=sample.subset, question=sample.question, prediction=result.answer,
        answers=sample.answers, metric=metric, score=score, correct=score >= 0.5, mode=mode,
        steps=len(trace.steps), operators=[c.name for s in trace.steps for c in s.tool_calls],
        rag_queries=[s.rag_query for s in trace.steps if s.rag_query], error=trace.failure,
    )


async def evaluate_async(runtime: AgentRuntime, data: Path, out_dir: Path, *, limit: int | None = None,
                         concurrency: int = 4, progress: ProgressCallback | None = None) -> EvalResult:
    """Answer and score every question of ``data``; write predictions, traces and the summary."""
    samples, rejected = read_bench(Path(data))
    if limit is not None:
        samples = samples[:limit]
    scorer, metric_source = metric_scorer()
    semaphore = asyncio.Semaphore(max(1, concurrency))
    done = 0

    async def one(sample: SourceSample) -> AgentResult:
        nonlocal done
        async with semaphore:
            result = await runtime.run_sample(sample)
        done += 1
        if progress:
            progress(done, len(samples))
        return result

    try:
        results = await asyncio.gather(*(one(s) for s in samples))
    finally:
        await runtime.aclose()
    predictions = [_prediction(r, s, runtime.mode, scorer) for r, s in zip(results, samples)]
    overall = GroupScore()
    groups: dict[str, GroupScore] = {}
    for prediction in predictions:
        overall.add(prediction)
        keys = [prediction.source] + ([f"{prediction.source}/{prediction.subset}"] if prediction.subset else [])
        for key in keys:
            groups.setdefault(key, GroupScore()).add(prediction)
    out_dir.mkdir(parents=True, exist_ok=True)
    with AtomicFile(out_dir / "predictions.jsonl") as out:
        for prediction in predictions:
            out.write(dumps_line(prediction.model_dump(mode="json")))
    with AtomicFile(out_dir / "traces.jsonl") as out:
        for result in results:
            out.write(dumps_line(result.trace.model_dump(mode="json")))
    with AtomicFile(out_dir / "quarantine.jsonl") as out:
        for row in rejected:
            out.write(dumps_line(row.model_dump(mode="json")))
    result = EvalResult(out_dir, overall, groups, predictions, rejected, metric_source)
    write_json_atomic(out_dir / "summary.json", summary_document(result, runtime, data))
    with AtomicFile(out_dir / "summary.md") as out:
        out.write(summary_table(result, runtime.mode, runtime.model.name) + "\n")
    return result


def evaluate(runtime: AgentRuntime, data: Path, out_dir: Path, **kwargs: Any) -> EvalResult:
    """Blocking form of :func:`evaluate_async`."""
    return asyncio.run(evaluate_async(runtime, Path(data), Path(out_dir), **kwargs))


def _group_row(name: str, group: GroupScore) -> dict[str, Any]:
    return {"group": name, "count": group.count, "correct": group.correct, "accuracy": round(group.accuracy, 4),
            "mean_score": round(group.mean_score, 4), "failed": group.failed,
            "mean_steps": round(group.steps_sum / group.count, 3) if group.count else 0.0,
            "operator_calls": dict(sorted(group.operator_calls.items()))}


def summary_document(result: EvalResult, runtime: AgentRuntime, data: Path) -> dict[str, Any]:
    """``summary.json``."""
    return {
        "model": runtime.model.name,
        "mode": runtime.mode,
        "data": str(data),
        "tools": [t.name for t in runtime.tools],
        "search": runtime.search.name if runtime.search else None,
        "metrics": result.metric_source,
        "rejected": len(result.rejected),
        "overall": _group_row("all", result.overall),
        "groups": [_group_row(name, group) for name, group in sorted(result.groups.items())],
    }


def summary_table(result: EvalResult, mode: str, model: str) -> str:
    """The Markdown table printed by ``mmat eval`` and written to ``summary.md``."""
    lines = [
        f"Model `{model}`, mode `{mode}`; metrics: {result.metric_source}",
        "",
        "| group | n | correct | accuracy | mean score | mean steps | failed |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, group in [("all", result.overall)] + sorted(result.groups.items()):
        row = _group_row(name, group)
        lines.append(f"| {name} | {row['count']} | {row['correct']} | {row['accuracy']:.1%} | {row['mean_score']:.3f} "
                     f"| {row['mean_steps']:.2f} | {row['failed']} |")
    if result.rejected:
        lines.append(f"\n{len(result.rejected)} row(s) quarantined (see quarantine.jsonl)")
    return "\n".join(lines)
