"""The paper's evaluation suite: which lmms-eval task and metric stand for each benchmark, and the table.

Every score is lmms-eval's own: this module only names the task, picks the metric out of
lmms-eval's results file and puts it on one 0-100 scale (some lmms-eval metrics are fractions,
some percentages). The paper's reference figures come from MMAT-SPEC.md ("Training and
evaluation"); what the spec does not give is printed as n/a.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from mmat_core.errors import MmatError


class ResultsError(MmatError):
    """lmms-eval's results file is missing or lacks a benchmark's metric."""


class BenchmarkSpec(BaseModel):
    """One column of the table: the lmms-eval task, the metric(s) read from its results, the scale."""

    model_config = ConfigDict(frozen=True)
    key: str
    title: str
    task: str
    #: Hub id of the dataset (the folder name under --data-root).
    repo_id: str = ""
    #: Metric names in lmms-eval's results (``"<metric>,<filter>"`` keys); several are averaged.
    metrics: tuple[str, ...]
    #: Multiply lmms-eval's value by this to get a 0-100 figure (1.0 where it already is a percentage).
    scale: float = 100.0


#: The eight benchmarks of the paper's Table 3, in its column order.
PAPER_BENCHMARKS: tuple[BenchmarkSpec, ...] = (
    BenchmarkSpec(key="mmstar", title="MMStar", task="mmstar", repo_id="Lin-Chen/MMStar", metrics=("average",)),
    BenchmarkSpec(key="mmmu", title="MMMU", task="mmmu_val", repo_id="lmms-lab-encoder/MMMU", metrics=("mmmu_acc",)),
    # MathVista testmini with lmms-eval's format prompt; answers are extracted by the judge model.
    BenchmarkSpec(key="mathvista", title="MathVista", task="mathvista_testmini_format", repo_id="AI4Math/MathVista",
                  metrics=("llm_as_judge_eval",), scale=1.0),
    BenchmarkSpec(key="mathvision", title="MathVision", task="mathvision_testmini", repo_id="MathLLMs/MathVision",
                  metrics=("mathvision_standard_eval",), scale=1.0),
    BenchmarkSpec(key="ai2d", title="AI2D", task="ai2d", repo_id="lmms-lab-encoder/ai2d", metrics=("exact_match",)),
    # lmms-eval's OCRBench score is the final score out of 1000 divided by 1000.
    BenchmarkSpec(key="ocrbench", title="OCRBench", task="ocrbench", repo_id="echo840/OCRBench",
                  metrics=("ocrbench_accuracy",)),
    BenchmarkSpec(key="realworldqa", title="RealWorldQA", task="realworldqa", repo_id="lmms-lab-encoder/RealWorldQA",
                  metrics=("exact_match",)),
    # VLMEvalKit (which the paper used) reports HallusionBench as the mean of aAcc, fAcc and qAcc.
    BenchmarkSpec(key="hallusionbench", title="HallusionBench", task="hallusion_bench_image",
                  repo_id="lmms-lab-encoder/HallusionBench", metrics=("aAcc", "fAcc", "qAcc"), scale=1.0),
)

#: Dyn-VQA, defined by mmat (package data ``lmms_tasks/dynvqa``); golden-query mode is the paper's column.
DYNVQA = BenchmarkSpec(key="dynvqa", title="Dyn-VQA", task="mmat_dynvqa_golden", metrics=("f1_recall",))
DYNVQA_QUESTION = BenchmarkSpec(key="dynvqa", title="Dyn-VQA", task="mmat_dynvqa", metrics=("f1_recall",))

#: The paper's InternVL2.5-8B figures, as far as MMAT-SPEC.md gives them (benchmark key or "average").
PAPER_REFERENCE: dict[str, dict[str, float]] = {
    "plain": {"average": 60.7, "dynvqa": 35.2},
    "rr": {"average": 63.4, "dynvqa": 44.0},
    "orr": {"average": 62.4},
}

MODES = ("plain", "rr", "orr")


def read_results(output_dir: Path) -> dict[str, dict[str, float | None]]:
    """The ``results`` block of the newest lmms-eval results file under ``output_dir`` (task -> metric key -> value)."""
    files = sorted(output_dir.rglob("*_results.json"), key=lambda p: p.stat().st_mtime)
    if not files:
        raise ResultsError(f"no lmms-eval results file (*_results.json) under {output_dir}")
    data = json.loads(files[-1].read_text(encoding="utf-8"))
    return data.get("results", {})


def metric_value(results: Mapping[str, Mapping[str, object]], spec: BenchmarkSpec, task: str | None = None) -> float:
    """The benchmark's 0-100 figure from lmms-eval's results (several metrics: their mean)."""
    name = task or spec.task
    block = results.get(name)
    if block is None:
        raise ResultsError(f"lmms-eval's results have no task {name!r}; tasks present: {', '.join(sorted(results)) or 'none'}")
    values = []
    for metric in spec.metrics:
        keys = [key for key in block if key == metric or key.startswith(metric + ",")]
        keys = [key for key in keys if "_stderr" not in key]
        if not keys:
            raise ResultsError(f"task {name!r} has no metric {metric!r} in lmms-eval's results; keys: {', '.join(block)}")
        value = block[keys[0]]
        # lmms-eval's MathVista aggregation returns None when no answer is right: that is a score of 0.
        values.append(0.0 if value is None else float(value))  # type: ignore[arg-type]
    return round(sum(values) / len(values) * spec.scale, 2)


class SuiteRow(BaseModel):
    """One row of the table: a label and a figure (or None) per benchmark key, plus the average."""

    label: str
    scores: dict[str, float | None]

    def average(self, keys: Sequence[str]) -> float | None:
        """Mean over ``keys``; None when any is missing."""
        values = [self.scores.get(key) for key in keys]
        if any(value is None for value in values) or not values:
            return None
        return round(sum(v for v in values if v is not None) / len(values), 2)


def reference_rows(modes: Sequence[str]) -> list[SuiteRow]:
    """The paper's InternVL2.5-8B rows for ``modes`` (figures not in the spec stay None = n/a)."""
    rows = []
    for mode in modes:
        figures = PAPER_REFERENCE.get(mode, {})
        label = "InternVL2.5-8B (paper)" if mode == "plain" else f"InternVL2.5-8B + {mode.upper()} (paper)"
        rows.append(SuiteRow(label=label, scores=dict(figures)))
    return rows


def render_table(rows: Sequence[SuiteRow], references: Sequence[SuiteRow], benchmarks: Sequence[BenchmarkSpec],
                 extra: Sequence[BenchmarkSpec] = ()) -> str:
    """The paper's layout as Markdown: benchmarks as columns, then the average, then extra columns (Dyn-VQA).

    The average is over the eight benchmarks; a reference row prints the paper's own average. With
    fewer than the eight the average is n/a in every row: it would not be the paper's figure.
    """
    keys = [spec.key for spec in benchmarks]
    full = sorted(keys) == sorted(spec.key for spec in PAPER_BENCHMARKS)
    header = ["model", *[spec.title for spec in benchmarks], "Avg", *[spec.title for spec in extra]]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|"]

    def cell(value: float | None) -> str:
        return "n/a" if value is None else f"{value:.1f}"

    for row in rows:
        cells = [cell(row.scores.get(k)) for k in keys] + [cell(row.average(keys) if full else None)]
        lines.append("| " + " | ".join([row.label, *cells, *[cell(row.scores.get(s.key)) for s in extra]]) + " |")
    for row in references:
        cells = [cell(row.scores.get(k)) for k in keys] + [cell(row.scores.get("average") if full else None)]
        lines.append("| " + " | ".join([row.label, *cells, *[cell(row.scores.get(s.key)) for s in extra]]) + " |")
    return "\n".join(lines)
