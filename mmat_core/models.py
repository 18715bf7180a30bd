"""The data model: every record that crosses a boundary of mmat is one of these pydantic models.

The :class:`Trace` is the one canonical record of a sample. RR, ORR and every export format are
views computed from a Trace; nothing is generated twice to produce another format. Images are
referenced by the hash of their bytes (:class:`ImageRef`), never embedded.

JSON Schemas for the models that are written to disk live in ``schemas/`` and are generated from
this module (``mmat schemas --write``); a test fails when the two drift.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from pydantic import VERSION as PYDANTIC_VERSION
from pydantic import BaseModel, ConfigDict, Field

#: Version of the Trace layout; bumped when a stored Trace could no longer be read back.
TRACE_SCHEMA_VERSION = 1

Signal = Literal["continue", "end", "reflection"]
VerdictKind = Literal["pass", "fix", "reject"]
TraceStatus = Literal["kept", "reflected", "flagged", "dropped", "failed"]
#: The statuses of samples that go into the training data.
KEPT_STATUSES = frozenset({"kept", "reflected", "flagged"})
#: Whether mmat's models build their validators on first use instead of when their module is
#: imported (pydantic's ``defer_build``): listing commands import every record and every
#: component's Options and validate none of them. Only from pydantic 2.14 on, whose first build
#: holds a lock; before it, a thread could validate with the parent class's validator while
#: another thread built the model's own.
DEFER_BUILD = tuple(int(part) for part in PYDANTIC_VERSION.split(".")[:2]) >= (2, 14)


class Record(BaseModel):
    """Base for stored records: unknown fields are an error, so typos in files surface at once."""

    model_config = ConfigDict(extra="forbid", defer_build=DEFER_BUILD)


class ImageRef(Record):
    """A content-addressed reference to one image: the bytes' hash plus where to load them."""

    sha256: str = Field(description="hex SHA-256 of the image file's bytes")
    path: str | None = Field(default=None, description="where the bytes can be loaded from")
    width: int | None = None
    height: int | None = None
    format: str | None = Field(default=None, description="PIL format name, e.g. PNG or JPEG")


class SourceSample(Record):
    """One QA pair, normalised from a source collection (stage 1)."""

    id: str = Field(description="stable across runs: derived from source, subset and row identity")
    source: str
    subset: str | None = None
    question: str
    answers: list[str] = Field(min_length=1, description="accepted answers, canonical first")
    choices: list[str] | None = Field(default=None, description="options of a multiple-choice question")
    constraint: str = Field(
        default="",
        description="response-style suffix appended to the question, leading separator included",
    )
    task_type: str = Field(default="vqa", description="vqa, docvqa, chart, table, math, multiple_choice, ...")
    metric: str | None = Field(default=None, description="answer_match metric; None picks one from task_type")
    images: list[ImageRef] = Field(default_factory=list)
    licence: str | None = None
    tags: list[str] = Field(default_factory=list)
    meta: dict[str, Any] = Field(default_factory=dict)

    @property
    def answer(self) -> str:
        """The canonical ground-truth answer."""
        return self.answers[0]


class Rejected(Record):
    """A row that did not become a sample: it goes to the quarantine file with its reason."""

    source: str
    subset: str | None = None
    row: str = Field(description="where the row came from (file and line, or row id)")
    reason: str = Field(description="short machine-friendly reason, e.g. image_missing")
    detail: str = ""
    stage: str = "source"


class Usage(Record):
    """Tokens, estimated cost and time spent by one call or summed over many."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    latency_s: float = 0.0
    calls: int = 0
    cached_calls: int = 0

    def add(self, other: Usage) -> None:
        """Add another usage in place."""
        # Straight into the field values: what pydantic's __setattr__ would do for these plain
        # fields (set the value, mark it set), without its per-field dispatch. A run calls this
        # about twenty times a sample.
        mine, theirs = self.__dict__, other.__dict__
        mine["prompt_tokens"] += theirs["prompt_tokens"]
        mine["completion_tokens"] += theirs["completion_tokens"]
        mine["cost_usd"] += theirs["cost_usd"]
        mine["latency_s"] += theirs["latency_s"]
        mine["calls"] += theirs["calls"]
        mine["cached_calls"] += theirs["cached_calls"]
        self.__pydantic_fields_set__.update(_USAGE_FIELDS)

    def add_data(self, data: Mapping[str, Any]) -> None:
        """Add a usage given as the JSON dict mmat stored (a trace's ``usage``), without building
        a Usage for it: the export pass does this once per trace."""
        mine = self.__dict__
        for name in _USAGE_FIELDS:
            value = data.get(name)
            if value:
                mine[name] += value
        self.__pydantic_fields_set__.update(_USAGE_FIELDS)


_USAGE_FIELDS = ("prompt_tokens", "completion_tokens", "cost_usd", "latency_s", "calls", "cached_calls")


class ModelCall(Record):
    """One call to an LLM backend, as recorded in the Trace."""

    purpose: str = Field(description="rationale_step, final_answer, scene_graph, caption, critic_general, ...")
    backend: str
    model: str
    cache_key: str = ""
    cached: bool = False
    attempts: int = 1
    usage: Usage = Field(default_factory=Usage)
    error: str | None = None


class ToolCall(Record):
    """One operator executed by the engine, with its result as it went into the dialogue."""

    name: str
    version: str = ""
    args: dict[str, Any] = Field(default_factory=dict)
    result: str = Field(default="", description="the text that goes into the next user turn")
    data: dict[str, Any] | None = Field(default=None, description="structured output, e.g. boxes")
    error: str | None = None
    cached: bool = False
    latency_s: float = 0.0
    usage: Usage = Field(default_factory=Usage, description="model calls the tool made (image_caption)")


class SearchHit(Record):
    """One retrieved snippet."""

    title: str = ""
    snippet: str
    url: str | None = None
    score: float | None = None


class RagCall(Record):
    """One retrieval: the query the generator wrote and what came back."""

    query: str
    backend: str = ""
    hits: list[SearchHit] = Field(default_factory=list)
    result: str = Field(default="", description="the text that goes into the next user turn")
    error: str | None = None
    cached: bool = False
    latency_s: float = 0.0


class Step(Record):
    """One assistant step of the rationale dialogue, with the tool results that followed it."""

    kind: Literal["rationale", "reflection", "correction"] = "rationale"
    thought: str
    operators: list[str] = Field(default_factory=list)
    rag_query: str | None = None
    signal: Signal = "continue"
    tool_calls: list[ToolCall] = Field(default_factory=list)
    rag: RagCall | None = None
    observation: str = Field(default="", description="the user turn sent after this step")
    leaks_answer: bool = False
    model_call: ModelCall | None = None


class Verdict(Record):
    """What one critic said of a Trace."""

    critic: str
    verdict: VerdictKind
    reason: str = ""
    score: float | None = None
    data: dict[str, Any] = Field(default_factory=dict)
    round: int = 0
    model_call: ModelCall | None = None


class Provenance(Record):
    """Where a Trace came from: enough to tell offline data from model-written data."""

    mmat_version: str
    generator: str = Field(description="backend:model that wrote the rationale")
    offline: bool = Field(description="True when written by the deterministic offline backend")
    prompt_versions: dict[str, str] = Field(default_factory=dict)
    tool_versions: dict[str, str] = Field(default_factory=dict)
    source: str
    subset: str | None = None
    licence: str | None = None


class Trace(Record):
    """The canonical record of one sample: everything RR, ORR and the exports are computed from."""

    schema_version: int = TRACE_SCHEMA_VERSION
    id: str
    sample: SourceSample
    tools: list[str] = Field(default_factory=list, description="operators enabled in the run")
    steps: list[Step] = Field(default_factory=list)
    final_prompt: str = ""
    final_answer: str | None = None
    final_call: ModelCall | None = None
    verdicts: list[Verdict] = Field(default_factory=list)
    status: TraceStatus = "kept"
    failure: str | None = None
    provenance: Provenance
    usage: Usage = Field(default_factory=Usage)
    timings: dict[str, float] = Field(default_factory=dict)
    notes: list[str] = Field(default_factory=list, description="engine remarks, e.g. turn_cap_reached")

    @property
    def kept(self) -> bool:
        """Whether the sample goes into the training data."""
        return self.status in KEPT_STATUSES


class ChatMessage(Record):
    """One message of a training record."""

    role: Literal["system", "user", "assistant"]
    content: str


class TrainingRecord(Record):
    """One line of ``rr.jsonl`` or ``orr.jsonl``: ms-swift's layout plus id and provenance."""

    id: str
    messages: list[ChatMessage] = Field(min_length=2)
    images: list[str] = Field(default_factory=list)
    provenance: Provenance | None = None
    status: Literal["flagged"] | None = Field(
        default=None, description="present only on samples kept although a critic was not satisfied"
    )


class RRRecord(TrainingRecord):
    """A multi-turn Rationale-and-Reflection record."""


class ORRRecord(TrainingRecord):
    """A one-turn record: operator outputs prepended, thoughts joined, ``<ANSWER>`` last."""


class StageCounts(Record):
    """Yield of one source (or sub-dataset) through the stages."""

    read: int = 0
    rejected: int = Field(0, description="rows quarantined at the source")
    generated: int = Field(0, description="samples that went through stages 2 and 3")
    passed: int = Field(0, description="kept without a reflection")
    reflected: int = Field(0, description="kept after at least one reflection")
    reflected_by: dict[str, int] = Field(default_factory=dict, description="critic -> samples it had reflected")
    flagged: int = Field(0, description="kept, marked as failing (reflection.on_failure: keep_flagged)")
    regenerated: int = Field(0, description="samples whose rationale was regenerated at least once")
    failed_verification: int = Field(0, description="final answer rejected by answer_match (dropped or flagged)")
    dropped: int = 0
    failed: int = Field(0, description="errors: model calls or malformed steps")
    kept: int = Field(0, description="passed + reflected + flagged")
    reasons: dict[str, int] = Field(default_factory=dict, description="why rows were rejected, dropped, flagged or failed")
    cost_usd: float = Field(0.0, description="spent on every generated sample, kept or not")
    cost_per_kept_usd: float | None = Field(None, description="cost_usd / kept")


class RunManifest(Record):
    """``run.json``: what ran, with which components, how long it took and what it yielded."""

    mmat_version: str
    run_id: str
    started_at: str
    finished_at: str | None = None
    complete: bool = False
    config: dict[str, Any]
    config_hash: str
    components: dict[str, Any] = Field(description="family -> component name, plugin and version")
    plugins: list[dict[str, Any]] = Field(default_factory=list)
    counts: dict[str, int] = Field(
        default_factory=dict,
        description="finished, kept and status_* cover the whole run; read, rejected, generated, "
        "skipped_finished and the *_calls counts cover this invocation (a resume adds to the run)",
    )
    yield_by_source: dict[str, StageCounts] = Field(default_factory=dict)
    timings_s: dict[str, float] = Field(default_factory=dict)
    usage: Usage = Field(default_factory=Usage, description="summed over every stored trace of the run")
    usage_by_stage: dict[str, Usage] = Field(default_factory=dict, description="model calls of this invocation, by stage")
    outputs: dict[str, str] = Field(default_factory=dict, description="formatter -> file name")
    tool_errors: dict[str, int] = Field(default_factory=dict)
    stats: dict[str, Any] | None = Field(None, description="the figures `mmat stats` prints (mmat_core.stats.RunStats)")
