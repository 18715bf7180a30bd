"""A build's figures, and the same figures beside the MMAT-1M paper's.

:class:`StatsTally` is fed each stored trace once, as the JSON dict the run store holds (never a
validated :class:`~mmat_core.models.Trace`, never a list of them), so it runs in the build's
one pass over the store and, for ``mmat stats``, in a pass of its own that decodes only the keys it
reads. Its :class:`RunStats` goes into ``run.json`` (``stats``).

What is counted, and over which samples:

* ``by_source``: generated and kept samples per source and per ``source/subset``;
* the data figures (operator calls, RAG calls, reflections, rationale steps, quality scores)
  describe the **kept** samples, the training data, as the paper's figures describe its released
  data; a step is one assistant step of the rationale loop (``kind: rationale``): reflection and
  correction steps and the final answer turn are not steps;
* reflections per critic are those spliced into the current rationale (verdicts marked
  ``spliced``), so a critic that asked twice counts twice;
* a sample's quality score is the last ``quality`` verdict with a score on its current rationale;
* tokens and cost are everything every generated sample spent (dropped and failed ones too),
  divided by the kept samples: what one training sample cost.

:func:`compare_to_paper` turns the figures into shares and puts each beside the paper's
(:mod:`mmat_core.paper_figures`); :func:`departs` says when a figure is far enough from the
paper's to be marked.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Literal, TypedDict

from pydantic import BaseModel, ConfigDict, Field

from mmat_core import paper_figures as paper
from mmat_core.errors import MmatError
from mmat_core.models import KEPT_STATUSES
from mmat_core.trace_queries import attempt_of_notes

#: The run.json key holding the figures.
MANIFEST_KEY = "stats"
#: A figure departs from the paper's when it differs by at least this much (absolute, as a share
#: or a per-sample rate) ...
DEPART_MIN_DIFFERENCE = 0.01
#: ... and its ratio to the paper's figure falls outside this range ...
DEPART_RATIO = (2 / 3, 3 / 2)
#: ... or they are at least this far apart whatever the ratio (70% against 100% departs).
DEPART_ALWAYS = 0.10


class StatsError(MmatError):
    """``mmat stats`` cannot read what it was given; the message names the path."""


# -- the figures -----------------------------------------------------------------------------------


class SourceStats(BaseModel):
    """Samples of one source or ``source/subset``."""

    model_config = ConfigDict(extra="forbid")

    generated: int = Field(0, description="stored traces (every status)")
    kept: int = Field(0, description="kept, reflected or flagged: in the training data")


class RunStats(BaseModel):
    """``run.json``'s ``stats``: the figures of a build that the paper also publishes."""

    model_config = ConfigDict(extra="forbid")

    generated: int = Field(0, description="stored traces of the run (every status)")
    kept: int = Field(0, description="traces in the training data; the data figures below count these")
    by_source: dict[str, SourceStats] = Field(default_factory=dict, description="source and source/subset -> samples")
    operator_calls: dict[str, int] = Field(default_factory=dict, description="operator -> calls in kept samples")
    operator_errors: dict[str, int] = Field(default_factory=dict, description="operator -> calls that returned an error")
    rag_calls: int = Field(0, description="retrievals in kept samples")
    rag_errors: int = 0
    reflections: dict[str, int] = Field(default_factory=dict, description="critic -> reflections spliced into kept samples")
    steps: dict[str, int] = Field(default_factory=dict, description="rationale steps -> kept samples with that many")
    quality_scores: dict[str, int] = Field(default_factory=dict, description="score to one decimal -> kept samples")
    prompt_tokens: int = Field(0, description="every generated sample's, kept or not")
    completion_tokens: int = 0
    cost_usd: float = 0.0
    tokens_per_kept: float | None = None
    cost_per_kept_usd: float | None = None
    not_traces: int = Field(0, description="stored rows that are not traces (an imported RR/ORR file): not counted")


# -- reading stored traces -----------------------------------------------------------------------


class _ToolCallView(TypedDict, total=False):
    name: str
    error: str | None


class _RagView(TypedDict, total=False):
    error: str | None


class _StepView(TypedDict, total=False):
    kind: str
    tool_calls: list[_ToolCallView]
    rag: _RagView | None


class _VerdictView(TypedDict, total=False):
    critic: str
    score: float | None
    data: dict[str, Any]


class _SampleView(TypedDict, total=False):
    source: str
    subset: str | None


class _UsageView(TypedDict, total=False):
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float


class StatsView(TypedDict, total=False):
    """The keys of a stored trace that the figures read (everything else is skipped unread)."""

    sample: _SampleView
    steps: list[_StepView]
    verdicts: list[_VerdictView]
    status: str
    usage: _UsageView
    notes: list[str]


def stats_decoder() -> Callable[[bytes], dict[str, Any]]:
    """Stored trace JSON -> a dict holding only :class:`StatsView`'s keys.

    msgspec skips the other keys (thoughts, tool results, model calls, hits) without building
    objects for them; a trace it cannot decode into the view (a layout of another mmat) is parsed
    whole instead, so nothing is lost, only slower.
    """
    import msgspec

    from mmat_core.writers import loads

    decoder = msgspec.json.Decoder(StatsView)

    def decode(raw: bytes) -> dict[str, Any]:
        try:
            return decoder.decode(raw)  # type: ignore[return-value]
        except msgspec.ValidationError:
            return loads(raw)  # type: ignore[no-any-return]

    return decode


class StatsTally:
    """Counts the figures of :class:`RunStats`, one stored trace (its JSON dict) at a time."""

    def __init__(self) -> None:
        self.generated = self.kept = self.not_traces = 0
        self.by_source: dict[str, list[int]] = {}
        self.operator_calls: dict[str, int] = {}
        self.operator_errors: dict[str, int] = {}
        self.rag_calls = self.rag_errors = 0
        self.reflections: dict[str, int] = {}
        self.steps: dict[int, int] = {}
        self.quality: dict[str, int] = {}
        self.prompt_tokens = self.completion_tokens = 0
        self.cost_usd = 0.0

    def add_data(self, data: Mapping[str, Any]) -> None:
        """Count one stored trace given as its JSON dict (the full one or :class:`StatsView`)."""
        sample = data.get("sample")
        if not isinstance(sample, Mapping) or "steps" not in data:
            self.not_traces += 1
            return
        self.generated += 1
        kept = data.get("status", "kept") in KEPT_STATUSES
        self.kept += kept
        source = str(sample.get("source") or "(unknown)")
        subset = sample.get("subset")
        for key in (source, f"{source}/{subset}") if subset else (source,):
            counts = self.by_source.setdefault(key, [0, 0])
            counts[0] += 1
            counts[1] += kept
        usage = data.get("usage") or {}
        self.prompt_tokens += int(usage.get("prompt_tokens") or 0)
        self.completion_tokens += int(usage.get("completion_tokens") or 0)
        self.cost_usd += float(usage.get("cost_usd") or 0.0)
        if not kept:
            return
        steps = 0
        for step in data.get("steps") or ():
            if step.get("kind", "rationale") == "rationale":
                steps += 1
            for call in step.get("tool_calls") or ():
                name = str(call.get("name") or "?")
                self.operator_calls[name] = self.operator_calls.get(name, 0) + 1
                if call.get("error") is not None:
                    self.operator_errors[name] = self.operator_errors.get(name, 0) + 1
            rag = step.get("rag")
            if rag is not None:
                self.rag_calls += 1
                self.rag_errors += rag.get("error") is not None
        self.steps[steps] = self.steps.get(steps, 0) + 1
        verdicts = data.get("verdicts") or ()
        if verdicts:
            attempt = attempt_of_notes(data.get("notes") or ())
            score = None
            for verdict in verdicts:
                extra = verdict.get("data") or {}
                if int(extra.get("attempt", 0)) != attempt:
                    continue  # a verdict on a rationale that was regenerated since
                critic = str(verdict.get("critic") or "?")
                if extra.get("spliced"):
                    self.reflections[critic] = self.reflections.get(critic, 0) + 1
                if critic == "quality" and verdict.get("score") is not None:
                    score = float(verdict["score"])
            if score is not None:
                key = f"{min(max(round(score, 1), 0.0), 1.0):.1f}"
                self.quality[key] = self.quality.get(key, 0) + 1

    def result(self) -> RunStats:
        """The figures counted so far."""
        tokens = self.prompt_tokens + self.completion_tokens
        return RunStats(
            generated=self.generated,
            kept=self.kept,
            by_source={k: SourceStats(generated=v[0], kept=v[1]) for k, v in sorted(self.by_source.items())},
            operator_calls=dict(sorted(self.operator_calls.items())),
            operator_errors=dict(sorted(self.operator_errors.items())),
            rag_calls=self.rag_calls,
            rag_errors=self.rag_errors,
            reflections=dict(sorted(self.reflections.items())),
            steps={str(k): v for k, v in sorted(self.steps.items())},
            quality_scores=dict(sorted(self.quality.items())),
            prompt_tokens=self.prompt_tokens,
            completion_tokens=self.completion_tokens,
            cost_usd=round(self.cost_usd, 6),
            tokens_per_kept=round(tokens / self.kept, 1) if self.kept else None,
            cost_per_kept_usd=round(self.cost_usd / self.kept, 6) if self.kept else None,
            not_traces=self.not_traces,
        )


def stats_from_connection(db: sqlite3.Connection, seqs: list[int] | None = None) -> RunStats:
    """The figures of the traces in a run store's ``samples`` table (``seq > 0``, in order),
    streamed; ``seqs`` limits them to those positions (the viewer's estimate of a large run)."""
    decode = stats_decoder()
    tally = StatsTally()
    if seqs is None:
        for (raw,) in db.execute("SELECT CAST(trace AS BLOB) FROM samples WHERE seq > 0 ORDER BY seq"):
            tally.add_data(decode(raw))
    else:
        for start in range(0, len(seqs), 500):
            chunk = seqs[start:start + 500]
            marks = ",".join("?" * len(chunk))
            for (raw,) in db.execute(f"SELECT CAST(trace AS BLOB) FROM samples WHERE seq IN ({marks}) ORDER BY seq", chunk):
                tally.add_data(decode(raw))
    return tally.result()


def run_stats(run_dir: Path) -> RunStats:
    """The figures of the run in ``run_dir``, read from its store without writing to it."""
    from mmat_core.store import STORE_FILE

    store = run_dir / STORE_FILE
    if not store.is_file():
        raise StatsError(f"{run_dir} is not a run directory: it has no {STORE_FILE}. Give a directory written by `mmat build --out DIR`.")
    db = sqlite3.connect(f"file:{store}?mode=ro", uri=True)
    try:
        db.execute("PRAGMA busy_timeout=30000")  # a running build may hold a write lock for a moment
        return stats_from_connection(db)
    except sqlite3.DatabaseError as exc:
        raise StatsError(f"cannot read {store}: {exc}") from None
    finally:
        db.close()


def write_stats(run_dir: Path, stats: RunStats) -> Path | None:
    """Put ``stats`` into ``run_dir/run.json`` (atomically, every other key kept); None when the
    run has no run.json yet (it is written when a build finishes), or when another mmat process
    holds the run folder (a warning says so).

    The folder's lock is held from reading run.json to replacing it: a build resuming into the
    folder rewrites run.json as it finishes, and a read-modify-write beside it could put the old
    manifest back over the new one."""
    import logging

    from mmat_core.errors import RunInUseError
    from mmat_core.rundir import RunDirLock
    from mmat_core.writers import write_json_atomic

    path = run_dir / "run.json"
    if not path.is_file():
        return None
    try:
        lock = RunDirLock(run_dir, "mmat stats").acquire()
    except RunInUseError:
        logging.getLogger(__name__).warning(
            "%s is in use by another mmat process: run.json left alone, so the figures are printed but not "
            "stored; run `mmat stats` again once it has finished", run_dir)
        return None
    try:
        try:
            manifest = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise StatsError(f"cannot read {path}: {exc}") from None
        if not isinstance(manifest, dict):
            raise StatsError(f"{path} does not hold a JSON object: is it an mmat run manifest?")
        manifest[MANIFEST_KEY] = stats.model_dump(mode="json")
        return write_json_atomic(path, manifest)
    finally:
        lock.release()


# -- beside the paper ------------------------------------------------------------------------------


Section = Literal["collections", "sub-datasets", "steps", "operators", "reflections", "quality", "cost"]


class ComparisonRow(BaseModel):
    """One figure of a build beside the paper's."""

    model_config = ConfigDict(extra="forbid")

    section: Section
    figure: str = Field(description="mmat name of what is counted")
    label: str = Field("", description="the paper's name for it, where it has one")
    unit: Literal["share", "per_sample", "tokens", "usd"] = "share"
    build_count: float | None = Field(None, description="what the build counted (samples, calls, ...)")
    build: float | None = Field(None, description="the build's figure as a share or per-sample rate")
    paper_count: float | None = None
    paper: float | None = Field(None, description="the paper's figure in the same unit; None: not published")
    departs: bool = False
    note: str = ""


def departs(build: float | None, published: float | None) -> bool:
    """Whether a build's figure is far from the paper's: at least :data:`DEPART_MIN_DIFFERENCE`
    apart and outside :data:`DEPART_RATIO` of it, or at least :data:`DEPART_ALWAYS` apart. A
    figure the build did not measure departs."""
    if published is None:
        return False
    if build is None:
        return True
    if abs(build - published) < DEPART_MIN_DIFFERENCE:
        return False
    if published == 0 or abs(build - published) >= DEPART_ALWAYS:
        return True
    low, high = DEPART_RATIO
    return not low <= build / published <= high


def _row(section: Section, figure: str, build_count: float | None, build: float | None, paper_count: float | None,
         published: float | None, *, label: str = "", unit: str = "share", note: str = "",
         unknown_departs: bool = False) -> ComparisonRow:
    far = departs(build, published) if published is not None else unknown_departs
    return ComparisonRow(section=section, figure=figure, label=label, unit=unit, build_count=build_count, build=build,  # type: ignore[arg-type]
                         paper_count=paper_count, paper=published, departs=far, note=note)


def _share(part: float, whole: float) -> float | None:
    return part / whole if whole else None


def compare_to_paper(stats: RunStats) -> list[ComparisonRow]:
    """Every figure the paper publishes, the build's beside it, as shares of samples (collections,
    sub-datasets within their collection, steps, quality) or as rates per sample (operator calls,
    RAG calls, reflections); then tokens and cost per kept sample, which the paper does not give."""
    kept = stats.kept
    rows: list[ComparisonRow] = []
    sources = {k: v for k, v in stats.by_source.items() if "/" not in k}
    for name, collection in paper.COLLECTIONS.items():
        count = sources.get(name, SourceStats()).kept
        rows.append(_row("collections", name, count, _share(count, kept), collection.dialogues,
                         collection.dialogues / paper.DIALOGUES, label=collection.title))
    for name, counts in sources.items():
        if name not in paper.COLLECTIONS:
            rows.append(_row("collections", name, counts.kept, _share(counts.kept, kept), None, None,
                             note="not a collection of the paper", unknown_departs=counts.kept > 0))
    for name, collection in paper.COLLECTIONS.items():
        in_build = sources.get(name, SourceStats()).kept
        if not collection.subsets or not in_build:
            continue  # a collection the build lacks is marked once, above
        entries = sum(n for _, n in collection.subsets.values())
        for subset, (title, n) in collection.subsets.items():
            count = stats.by_source.get(f"{name}/{subset}", SourceStats()).kept
            rows.append(_row("sub-datasets", f"{name}/{subset}", count, _share(count, in_build), n, n / entries, label=title))
        for key, counts in stats.by_source.items():
            source, _, subset = key.partition("/")
            if source == name and subset and subset not in collection.subsets:
                rows.append(_row("sub-datasets", key, counts.kept, _share(counts.kept, in_build), None, None,
                                 note="not in the paper's mix", unknown_departs=counts.kept > 0))
    steps = {int(k): v for k, v in stats.steps.items()}
    others = sum(v for k, v in steps.items() if k < 2)
    if others:
        rows.append(_row("steps", "fewer than 2", others, _share(others, kept), None, None,
                         note="the paper lists no QA pair with fewer than 2 steps", unknown_departs=True))
    for bucket, published in paper.STEP_SHARES.items():
        count = sum(v for k, v in steps.items() if k >= 5) if bucket == "5+" else steps.get(int(bucket), 0)
        rows.append(_row("steps", bucket, count, _share(count, kept), round(published * paper.QA_PAIRS), published))
    for name, calls in paper.OPERATOR_CALLS.items():
        count = stats.operator_calls.get(name, 0)
        rows.append(_row("operators", name, count, _share(count, kept), calls, calls / paper.QA_PAIRS, unit="per_sample",
                         label="OVD" if name == "label_bbox" else ""))
    rows.append(_row("operators", "rag", stats.rag_calls, _share(stats.rag_calls, kept), paper.RAG_CALLS,
                     paper.RAG_CALLS / paper.QA_PAIRS, unit="per_sample", label="RAG"))
    for name, count in stats.operator_calls.items():
        if name not in paper.OPERATOR_CALLS:
            rows.append(_row("operators", name, count, _share(count, kept), None, None, unit="per_sample",
                             note="an operator the paper did not have"))
    for critic, published in paper.REFLECTIONS.items():
        count = stats.reflections.get(critic, 0)
        rows.append(_row("reflections", critic, count, _share(count, kept), published, published / paper.QA_PAIRS,
                         unit="per_sample"))
    for critic, count in stats.reflections.items():
        if critic not in paper.REFLECTIONS:
            rows.append(_row("reflections", critic, count, _share(count, kept), None, None, unit="per_sample",
                             note="a critic the paper did not have"))
    scored = sum(stats.quality_scores.values())
    high = sum(v for k, v in stats.quality_scores.items() if float(k) >= paper.HIGH_QUALITY_MIN)
    rows.append(_row("quality", f"score >= {paper.HIGH_QUALITY_MIN}", high if scored else None, _share(high, scored),
                     None, paper.QUALITY_HIGH_SHARE, label="scored high",
                     note=("the paper: over 89% scored high (no threshold given)" if scored
                           else "not measured: no quality verdicts in the kept samples; add the quality critic")))
    rows.append(_row("cost", "tokens per kept sample", stats.prompt_tokens + stats.completion_tokens, stats.tokens_per_kept,
                     None, None, unit="tokens", note="not reported by the paper"))
    rows.append(_row("cost", "cost per kept sample", stats.cost_usd, stats.cost_per_kept_usd, None, None, unit="usd",
                     note="not reported by the paper"))
    if not kept:
        for row in rows:
            if row.section != "cost":
                row.note = (row.note + "; " if row.note else "") + "no kept samples"
    return rows


# -- text ------------------------------------------------------------------------------------------

_SECTION_TITLES = {
    "collections": "Collections: share of kept samples (paper: share of its 902,965 dialogues, Table 1)",
    "sub-datasets": "Sub-datasets: share of their collection's kept samples (paper: of the collection's entries)",
    "steps": "Rationale steps per sample: share of kept samples",
    "operators": "Operator calls per kept sample (paper: calls / 1,090,263 QA pairs)",
    "reflections": "Reflections per kept sample",
    "quality": "Quality: share of scored kept samples",
    "cost": "Tokens and cost (everything spent / kept samples)",
}


def _value(unit: str, value: float | None) -> str:
    if value is None:
        return "-"
    if unit == "share":
        return f"{value * 100:.1f}%"
    if unit == "per_sample":
        return f"{value:.3f}"
    if unit == "usd":
        return f"${value:.4f}"
    return f"{value:,.0f}"


def _count(unit: str, value: float | None) -> str:
    if value is None:
        return ""
    if unit == "usd":
        return f"${value:,.4f}"
    return f"{value:,.0f}" if float(value).is_integer() else f"{value:,.4f}"


def comparison_lines(rows: list[ComparisonRow]) -> list[str]:
    """The comparison as a table per section; ``<<`` marks a figure that departs from the paper."""
    lines: list[str] = []
    width = max([24] + [len(r.figure) + (len(r.label) + 3 if r.label else 0) for r in rows])
    section = None
    for row in rows:
        if row.section != section:
            section = row.section
            lines += ["", _SECTION_TITLES[section],
                      f"  {'':<{width}} {'build':>12} {'':>9} {'paper':>9} {'diff':>9}"]
        name = f"{row.figure} ({row.label})" if row.label else row.figure
        diff = ""
        if row.build is not None and row.paper is not None:
            delta = row.build - row.paper
            diff = f"{delta * 100:+.1f} pts" if row.unit == "share" else f"{delta:+.3f}"
        mark = "  <<" if row.departs else ""
        note = f"  ({row.note})" if row.note else ""
        lines.append(f"  {name:<{width}} {_count(row.unit, row.build_count):>12} {_value(row.unit, row.build):>9} "
                     f"{_value(row.unit, row.paper):>9} {diff:>9}{mark}{note}")
    departing = sum(r.departs for r in rows)
    lines += ["", f"{departing} figure(s) depart from the paper (<<: at least {DEPART_MIN_DIFFERENCE:g} apart and "
              f"outside x{DEPART_RATIO[0]:.2f}-x{DEPART_RATIO[1]:.2f} of it, or {DEPART_ALWAYS:g} apart).", f"Paper figures: {paper.CITATION}."]
    return lines


def _bar(count: int, largest: int, width: int = 30) -> str:
    return "#" * max(1 if count else 0, round(width * count / largest)) if largest else ""


def stats_lines(stats: RunStats) -> list[str]:
    """The figures as text, for ``mmat stats`` without ``--compare``."""
    kept = stats.kept
    lines = [f"{stats.generated} sample(s) generated, {kept} kept; data figures count the kept samples."]
    if stats.not_traces:
        lines.append(f"{stats.not_traces} stored row(s) are not traces and were not counted.")
    width = max([24] + [len(k) for k in stats.by_source])
    lines += ["", "Samples", f"  {'source':<{width}} {'generated':>10} {'kept':>8} {'share':>7}"]
    for key, counts in stats.by_source.items():
        share = _value("share", _share(counts.kept, kept))
        lines.append(f"  {key:<{width}} {counts.generated:>10,} {counts.kept:>8,} {share:>7}")
    lines += ["", "Operator calls (per kept sample)"]
    for name, calls in [*stats.operator_calls.items(), ("rag", stats.rag_calls)]:
        errors = stats.rag_errors if name == "rag" else stats.operator_errors.get(name, 0)
        rate = _value("per_sample", _share(calls, kept))
        lines.append(f"  {name:<{width}} {calls:>10,} {rate:>8}" + (f"  ({errors} with an error)" if errors else ""))
    lines += ["", "Reflections (per kept sample)"]
    for critic, count in stats.reflections.items() or [("(none)", 0)]:
        lines.append(f"  {critic:<{width}} {count:>10,} {_value('per_sample', _share(count, kept)):>8}")
    largest = max(stats.steps.values(), default=0)
    lines += ["", "Rationale steps per kept sample"]
    lines += [f"  {k:>3} {v:>8,} {_value('share', _share(v, kept)):>7} {_bar(v, largest)}" for k, v in stats.steps.items()]
    scored = sum(stats.quality_scores.values())
    largest = max(stats.quality_scores.values(), default=0)
    lines += ["", f"Quality scores ({scored} kept sample(s) scored)"]
    lines += [f"  {k:>3} {v:>8,} {_value('share', _share(v, scored)):>7} {_bar(v, largest)}" for k, v in stats.quality_scores.items()]
    tokens = stats.prompt_tokens + stats.completion_tokens
    lines += ["", f"Tokens: {stats.prompt_tokens:,} prompt + {stats.completion_tokens:,} completion = {tokens:,}; "
              f"{_value('tokens', stats.tokens_per_kept)} per kept sample",
              f"Cost: ${stats.cost_usd:.4f}; {_value('usd', stats.cost_per_kept_usd)} per kept sample"]
    return lines


# -- picture ---------------------------------------------------------------------------------------


def plot_stats(stats: RunStats, path: Path, *, rows: list[ComparisonRow] | None = None) -> Path:
    """Draw the figures (with ``rows``, the paper's beside each) as a PNG at ``path``, written
    atomically. Needs matplotlib (``pip install 'mmat[plot]'``)."""
    try:
        import matplotlib
    except ImportError:
        raise StatsError("--plot needs matplotlib: pip install 'mmat[plot]'") from None
    matplotlib.use("Agg")  # no display needed, and no window opens
    import matplotlib.pyplot as plt

    from mmat_core.writers import AtomicFile

    rows = rows if rows is not None else _build_only_rows(stats)
    panels: list[tuple[str, list[ComparisonRow]]] = [
        (title, [r for r in rows if r.section == section])
        for section, title in (("collections", "Collections (share of samples)"), ("steps", "Rationale steps (share of samples)"),
                               ("operators", "Operator calls per sample"), ("reflections", "Reflections per sample"))
    ]
    panels = [(title, chosen) for title, chosen in panels if chosen]
    scored = sum(stats.quality_scores.values())
    figure, axes = plt.subplots(len(panels) + 1, 1, figsize=(9, 3.2 * (len(panels) + 1)), squeeze=False)
    with_paper = any(r.paper is not None for r in rows)
    for axis, (title, chosen) in zip(axes[:, 0], panels):
        names = [r.figure for r in chosen]
        positions = list(range(len(names)))
        step = 0.4 if with_paper else 0.8
        axis.bar([p - (step / 2 if with_paper else 0) for p in positions], [r.build or 0.0 for r in chosen], step,
                 label="this build", color="#3b6ea8")
        if with_paper:
            axis.bar([p + step / 2 for p in positions], [r.paper or 0.0 for r in chosen], step, label="paper", color="#c8873a")
        for position, row in zip(positions, chosen):
            if row.departs:
                axis.annotate("departs", (position, max(row.build or 0.0, row.paper or 0.0)), ha="center", va="bottom",
                              fontsize=7, color="#a33")
        axis.set_xticks(positions, names, rotation=20, ha="right", fontsize=8)
        axis.set_title(title, fontsize=10)
        axis.legend(fontsize=8)
    quality = axes[-1, 0]
    bins = [f"{i / 10:.1f}" for i in range(11)]
    quality.bar(bins, [_share(stats.quality_scores.get(b, 0), scored) or 0.0 for b in bins], color="#3b6ea8")
    quality.set_title(f"Quality scores ({scored} scored; paper: over {paper.QUALITY_HIGH_SHARE:.0%} high)", fontsize=10)
    figure.suptitle(f"{stats.kept} kept of {stats.generated} generated" + ("; paper: " + paper.CITATION if with_paper else ""),
                    fontsize=9)
    quality.set_ylim(0, 1)
    figure.tight_layout(rect=(0, 0, 1, 0.97))
    out = AtomicFile(path, "wb")  # a crash never leaves half a PNG under the name asked for
    try:
        figure.savefig(out.handle, format="png", dpi=100)
        out.commit()
    except BaseException:
        out.abort()
        raise
    finally:
        plt.close(figure)
    return path


def _build_only_rows(stats: RunStats) -> list[ComparisonRow]:
    """The build's figures in comparison rows with the paper's left out (a plot without --compare)."""
    rows = compare_to_paper(stats)
    keep = [r.model_copy(update={"paper": None, "departs": False}) for r in rows if r.build_count]
    return keep


def manifest_stats(tally: StatsTally | None, store: Any) -> dict[str, Any]:
    """run.json's ``stats`` at the end of a build: from the tally the build fed in its pass over
    the traces, else (a caller that made no such pass) counted from ``store`` (a RunStore)."""
    stats = tally.result() if tally is not None else stats_from_connection(store.connection())
    return stats.model_dump(mode="json")
