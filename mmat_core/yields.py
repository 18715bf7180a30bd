"""Yield accounting: what became of the samples of each source and sub-dataset.

A :class:`YieldTally` is fed every finished Trace and every quarantined row once, and produces
the ``yield_by_source`` of ``run.json`` (one :class:`~mmat_core.models.StageCounts` per source
and one per ``source/subset``). :func:`yield_table` renders it for the end of ``mmat build`` and
for ``mmat critique``.

How a trace is counted (its final state decides):

* ``generated``: every finished trace; ``kept`` = ``passed`` + ``reflected`` + ``flagged``;
  ``generated`` = ``kept`` + ``dropped`` + ``failed``.
* ``reflected_by``: per critic, traces whose current rationale holds a reflection it asked for.
* ``failed_verification``: traces whose last ``answer_match`` verdict rejected the final answer.
* ``reasons``: the failure's head (``answer_match``, ``quality``, ``general``, ``llm_error``,
  ``malformed_step``, ...) for dropped, flagged and failed traces, and the quarantine reason of
  rejected rows.
* ``cost_usd``: everything the traces spent (dropped ones and earlier attempts included), and
  ``cost_per_kept_usd`` that cost divided by the kept samples.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from mmat_core.models import Rejected, StageCounts, Trace
from mmat_core.trace_queries import attempt_of_notes


def yield_keys(source: str, subset: str | None) -> list[str]:
    """The rows a sample counts in: its source, and ``source/subset`` when it has a subset."""
    return [source, f"{source}/{subset}"] if subset else [source]


def failure_reason(failure: str | None) -> str | None:
    """The head of a failure string (``"answer_match: ..."`` -> ``answer_match``)."""
    if not failure:
        return None
    return failure.split(":", 1)[0].strip() or None


def _current_verdicts(data: Mapping[str, Any], attempt: int) -> list[Mapping[str, Any]]:
    """The verdicts on the trace's current rationale (as in ``trace_queries.current_verdicts``,
    read from the trace's JSON so the export pass needs no validated Trace)."""
    return [v for v in data.get("verdicts") or () if int((v.get("data") or {}).get("attempt", 0)) == attempt]


def failed_verification(current: list[Mapping[str, Any]]) -> bool:
    """Whether answer_match's last verdict among ``current`` rejected the final answer."""
    checks = [v for v in current if v.get("critic") == "answer_match"]
    return bool(checks) and checks[-1].get("verdict") == "reject"


class YieldTally:
    """Counts traces and quarantined rows by source and sub-dataset."""

    def __init__(self) -> None:
        self._counts: dict[str, StageCounts] = {}
        self._by_pair: dict[tuple[str, str | None], list[StageCounts]] = {}

    def _rows(self, source: str, subset: str | None) -> list[StageCounts]:
        rows = self._by_pair.get((source, subset))
        if rows is None:  # once per (source, sub-dataset): building a StageCounts a trace was a tenth of export
            rows = self._by_pair[(source, subset)] = [self._counts.setdefault(key, StageCounts())
                                                      for key in yield_keys(source, subset)]
        return rows

    def add_trace(self, trace: Trace) -> None:
        """Count one finished trace."""
        self.add_data(trace.model_dump(mode="json"))

    def add_data(self, data: Mapping[str, Any]) -> None:
        """Count one finished trace given as its JSON dict (what the run store holds)."""
        status = data.get("status", "kept")
        reason = failure_reason(data.get("failure")) if status in ("dropped", "flagged", "failed") else None
        attempt = attempt_of_notes(data.get("notes") or ())
        current = _current_verdicts(data, attempt)
        critics = list(dict.fromkeys(v["critic"] for v in current if (v.get("data") or {}).get("spliced")))
        verification_failed = failed_verification(current)
        regenerated = attempt > 0
        sample = data["sample"]
        cost = float((data.get("usage") or {}).get("cost_usd", 0.0))
        for counts in self._rows(sample["source"], sample.get("subset")):
            counts.generated += 1
            counts.cost_usd += cost
            if status == "failed":
                counts.failed += 1
            elif status == "dropped":
                counts.dropped += 1
            else:
                counts.kept += 1
                if status == "flagged":
                    counts.flagged += 1
                elif status == "reflected":
                    counts.reflected += 1
                else:
                    counts.passed += 1
            for critic in critics:
                counts.reflected_by[critic] = counts.reflected_by.get(critic, 0) + 1
            if verification_failed:
                counts.failed_verification += 1
            if regenerated:
                counts.regenerated += 1
            if reason:
                counts.reasons[reason] = counts.reasons.get(reason, 0) + 1

    def add_rejected(self, rejected: Rejected) -> None:
        """Count one row quarantined before generation."""
        for counts in self._rows(rejected.source, rejected.subset):
            counts.rejected += 1
            counts.reasons[rejected.reason] = counts.reasons.get(rejected.reason, 0) + 1

    def add_all(self, traces: Iterable[Trace] = (), rejected: Iterable[Rejected] = ()) -> YieldTally:
        """Count many traces and rows; returns self."""
        for trace in traces:
            self.add_trace(trace)
        for row in rejected:
            self.add_rejected(row)
        return self

    def result(self) -> dict[str, StageCounts]:
        """``yield_by_source`` for run.json, keys sorted; ``read`` and cost per kept filled in."""
        out: dict[str, StageCounts] = {}
        for key in sorted(self._counts):
            counts = self._counts[key].model_copy(deep=True)
            counts.read = counts.generated + counts.rejected
            counts.cost_usd = round(counts.cost_usd, 6)
            counts.cost_per_kept_usd = round(counts.cost_usd / counts.kept, 6) if counts.kept else None
            counts.reasons = dict(sorted(counts.reasons.items()))
            counts.reflected_by = dict(sorted(counts.reflected_by.items()))
            out[key] = counts
        return out


_COLUMNS = (("read", 6), ("rej", 5), ("gen", 6), ("pass", 6), ("refl", 5), ("flag", 5), ("fail-v", 6),
            ("drop", 5), ("fail", 5), ("kept", 6), ("$/kept", 9))


def yield_table(by_source: dict[str, StageCounts], indent: str = "  ") -> list[str]:
    """Lines of the yield table: one row per source and sub-dataset, then reflections by critic
    and the reasons, so a user sees where samples went and why."""
    width = max([28] + [len(key) for key in by_source])
    header = f"{indent}{'source':<{width}} " + " ".join(f"{name:>{size}}" for name, size in _COLUMNS)
    lines = [header]
    for key, c in by_source.items():
        per_kept = f"{c.cost_per_kept_usd:.4f}" if c.cost_per_kept_usd is not None else "-"
        values = (c.read, c.rejected, c.generated, c.passed, c.reflected, c.flagged, c.failed_verification,
                  c.dropped, c.failed, c.kept, per_kept)
        lines.append(f"{indent}{key:<{width}} " + " ".join(f"{v:>{size}}" for v, (_, size) in zip(values, _COLUMNS, strict=True)))
    for key, c in by_source.items():
        if "/" in key:
            continue  # sub-dataset details repeat their source's; list them once per source
        details = []
        if c.reflected_by:
            details.append("reflected by " + ", ".join(f"{k} {v}" for k, v in c.reflected_by.items()))
        if c.regenerated:
            details.append(f"regenerated {c.regenerated}")
        if c.reasons:
            details.append("reasons: " + ", ".join(f"{k} {v}" for k, v in c.reasons.items()))
        if details:
            lines.append(f"{indent}{key}: " + "; ".join(details))
    return lines
