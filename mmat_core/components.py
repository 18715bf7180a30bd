"""Base classes of the components that plugins register, one per family.

A component is a class with a ``name`` (unique within its family), a ``version``, a one-line
``description`` and an ``Options`` pydantic model. The configuration names a component and gives
its options (``llm: {name: openai, model: gpt-4o}``); mmat validates the options against
``Options`` (unknown keys are an error) and instantiates the class with them.

Heavy libraries are imported inside methods, never at module level: registering a plugin must
stay cheap even when its component is never used.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal, Protocol, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from mmat_core.models import (
    DEFER_BUILD,
    ImageRef,
    ModelCall,
    Rejected,
    RunManifest,
    SearchHit,
    SourceSample,
    Trace,
    Usage,
    Verdict,
)

if TYPE_CHECKING:
    from mmat_core.engine.settings import ReflectionSettings
    from mmat_core.images import ImageStore
    from mmat_core.pipeline import Pipeline, RunResult

T = TypeVar("T")


class ComponentOptions(BaseModel):
    """Options of a component. Unknown keys are rejected so a typo in a config never passes silently."""

    model_config = ConfigDict(extra="forbid", defer_build=DEFER_BUILD)


class Component:
    """Common base: identity, options and provenance of every registered component."""

    #: The family the component belongs to (set by each base class below).
    family: ClassVar[str] = ""
    #: The name a configuration uses to pick this component.
    name: ClassVar[str] = ""
    #: The component's own version; it goes into provenance and cache keys.
    version: ClassVar[str] = "0"
    #: One line shown by ``mmat plugins`` and friends.
    description: ClassVar[str] = ""
    #: The options this component accepts.
    Options: ClassVar[type[ComponentOptions]] = ComponentOptions
    #: Filled in by the registry: the plugin (distribution) that registered the component.
    plugin: ClassVar[str] = ""

    def __init__(self, options: ComponentOptions | None = None, **kwargs: Any) -> None:
        self.options = options if options is not None else self.Options(**kwargs)

    @classmethod
    def options_schema(cls) -> dict[str, Any]:
        """JSON Schema of the component's options, for listings and docs."""
        return cls.Options.model_json_schema()

    def preflight(self, key: str) -> list[str]:
        """What this component still lacks to run, one line each, saying how to supply it.

        mmat asks every component of a build before any model call and before the run folder
        is created, and reports all the lines of all components in one ConfigError, each after
        ``KEY (NAME): ``. ``key`` is where the component sits in the configuration (``source``,
        ``tools[1]``), so a line can say exactly what to set (``--set tools[1].detector.model=PATH``).
        Must not call a model, read a dataset or download anything: look at the environment and
        the file system only. A problem found while building the component (a ConfigError from
        ``__init__``, such as a missing API key) is listed the same way; this method is for what a
        component can be built without but cannot run without (weights not on this machine, a
        file it will need). The default lacks nothing."""
        return []


# --------------------------------------------------------------------------------------------
# Stage 1: sources


@dataclass(frozen=True)
class SubsetPlan:
    """How many dialogues of one sub-dataset curation keeps: a cap and/or a seeded share."""

    quota: int | None = None
    ratio: float | None = None


class Source(Component):
    """A dataset source: streams :class:`SourceSample` objects (or :class:`Rejected` rows).

    Sources are iterators. They never load a whole collection, and they hold image bytes no
    longer than it takes to hash and check them.
    """

    family = "source"
    #: Licence carried into every sample's provenance.
    licence: ClassVar[str | None] = None
    #: Names of the sub-datasets a user can select with ``subset=`` / ``subsets=``.
    subsets: ClassVar[tuple[str, ...]] = ()
    #: The run's image store, set by the pipeline before :meth:`iter_rows` (None outside a run).
    #: A source that finds image bytes embedded in its rows writes them here, so the Trace can
    #: refer to a file by its content hash.
    image_store: ImageStore | None = None

    @abstractmethod
    def iter_rows(self) -> Iterator[SourceSample | Rejected]:
        """Yield one SourceSample per QA pair, or a Rejected row with its reason."""

    def curation_plan(self) -> dict[str | None, SubsetPlan]:
        """Quotas and seeded shares for the curator, by sub-dataset (key None: the whole source).

        The default plans nothing: every row the source yields goes on to curation unchanged."""
        return {}


# --------------------------------------------------------------------------------------------
# LLM backends


class ContentPart(BaseModel):
    """A part of a multimodal message: text, or an image given by reference."""

    model_config = ConfigDict(extra="forbid", defer_build=DEFER_BUILD)
    type: Literal["text", "image"]
    text: str | None = None
    image: ImageRef | None = None


class Message(BaseModel):
    """A chat message sent to a backend; content is a string or a list of parts."""

    model_config = ConfigDict(extra="forbid", defer_build=DEFER_BUILD)
    role: Literal["system", "user", "assistant"]
    content: str | list[ContentPart]

    def text(self) -> str:
        """The message's text, images left out."""
        if isinstance(self.content, str):
            return self.content
        return "".join(part.text or "" for part in self.content if part.type == "text")


class LLMRequest(BaseModel):
    """One model call as the engine asks for it."""

    model_config = ConfigDict(extra="forbid", defer_build=DEFER_BUILD)
    purpose: str = Field(description="rationale_step, final_answer, scene_graph, caption, critic_general, ...")
    messages: list[Message]
    prompt_version: str = ""
    temperature: float | None = None
    max_tokens: int | None = None
    response_schema: dict[str, Any] | None = None
    sample_id: str | None = None
    #: Structured facts the prompt was built from (question, answer, tool results). Real backends
    #: ignore it: only ``messages`` go on the wire. The offline backend reads it to answer
    #: deterministically. It is not part of the cache key because it is derived from the same data.
    context: dict[str, Any] = Field(default_factory=dict)


class LLMResponse(BaseModel):
    """What a backend answered."""

    model_config = ConfigDict(extra="forbid", defer_build=DEFER_BUILD)
    text: str
    model: str
    usage: Usage = Field(default_factory=Usage)
    finish_reason: str | None = None


class LLMBackend(Component):
    """A model endpoint. ``complete`` is called by the engine's scheduler, never directly."""

    family = "llm"
    #: True for backends whose output is not written by a model (provenance marks it).
    offline: ClassVar[bool] = False

    #: Options that change what the model answers (the server, the output mode): when they differ
    #: from their defaults they enter the cache key, so two vLLM servers serving different weights
    #: under one model name never share answers.
    answer_options: ClassVar[tuple[str, ...]] = ()

    @property
    def model(self) -> str:
        """The model name used in provenance and cache keys."""
        # getattr: each backend declares its own Options, and not every one has a ``model`` key.
        return str(getattr(self.options, "model", "") or self.name)

    def cache_identity(self) -> str:
        """How cache keys name this backend: its name, plus the ``answer_options`` that differ
        from their defaults (so keys made with default options stay stable)."""
        fields = type(self.options).model_fields
        changed = {key: getattr(self.options, key) for key in self.answer_options
                   if key in fields and getattr(self.options, key) != fields[key].default}
        if not changed:
            return self.name
        return self.name + json.dumps(changed, sort_keys=True, separators=(",", ":"))

    @abstractmethod
    async def complete(self, request: LLMRequest, images: ImageStore) -> LLMResponse:
        """Answer one request. On failure raise a :class:`mmat_core.LLMCallError` subclass
        (:class:`~mmat_core.RateLimited`, :class:`~mmat_core.Overloaded`,
        :class:`~mmat_core.CallTimeout`, :class:`~mmat_core.MalformedResponse` are retried by the
        scheduler; :class:`~mmat_core.PermanentError` is not)."""

    async def aclose(self) -> None:
        """Release connections. Called once at the end of a run."""


class LLMClient(Protocol):
    """What components get to make model calls: the engine's scheduled, cached client."""

    async def complete(self, request: LLMRequest) -> tuple[LLMResponse, ModelCall]:
        """Make (or reuse from cache) one call; returns the response and its record for the Trace."""
        ...


# --------------------------------------------------------------------------------------------
# Tools and retrieval


class ToolOutput(BaseModel):
    """The result of a tool: the text for the dialogue and, optionally, structured data."""

    model_config = ConfigDict(extra="forbid", defer_build=DEFER_BUILD)
    text: str
    data: dict[str, Any] | None = None
    usage: Usage = Field(default_factory=Usage)
    model_calls: list[ModelCall] = Field(default_factory=list)


@dataclass
class ToolContext:
    """Everything a tool may use for one call."""

    sample: SourceSample
    images: ImageStore
    llm: LLMClient | None = None
    #: Per-sample scratch space shared by tools (image_caption keeps its scene graph here).
    scratch: dict[str, Any] = field(default_factory=dict)
    #: Runs a blocking function in the engine's worker pool.
    run_blocking: Callable[..., Awaitable[Any]] | None = None

    @property
    def image(self) -> ImageRef | None:
        """The sample's first image, which the operators look at."""
        return self.sample.images[0] if self.sample.images else None

    async def blocking(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(*args)`` off the event loop."""
        if self.run_blocking is not None:
            return await self.run_blocking(fn, *args)
        import asyncio  # here, not at the top: listing components must not import asyncio

        return await asyncio.to_thread(fn, *args)


class Tool(Component):
    """An operator the generator can choose. Arguments from a model are validated against
    ``args_schema`` before ``run`` sees them; nothing is ever evaluated or passed to a shell."""

    family = "tool"
    #: How results are introduced in the dialogue: "Here are {label} results from the previous step".
    label: ClassVar[str] = ""
    #: JSON Schema of the arguments (most operators take none: they look at the sample's image).
    args_schema: ClassVar[dict[str, Any]] = {"type": "object", "properties": {}, "additionalProperties": False}
    #: Seconds before a call is abandoned and reported as an error observation.
    timeout_s: ClassVar[float] = 60.0
    #: Tools this one waits for when the generator calls both in one step (label_bbox reuses the
    #: objects image_caption found, so it runs after it). Names of tools not called are ignored.
    runs_after: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def result_label(cls) -> str:
        """The label used in the user-turn template."""
        return cls.label or cls.name.replace("_", " ")

    @classmethod
    def default_off_reason(cls, *, offline: bool) -> str | None:
        """Why a build that names no tools leaves this one out, with how to turn it on; None: it
        runs. Asked of the paper's operators when a configuration has no ``tools:``; ``offline``
        is true for the offline backend's build, which promises no key and no download. Must
        not download or import heavy libraries (look them up with ``importlib.util.find_spec``)."""
        return None

    @classmethod
    def default_options(cls, *, offline: bool) -> dict[str, Any]:
        """The options this tool gets in a build that names no tools (default: none)."""
        return {}

    def prepare(self) -> None:
        """Called once before a run, in the engine's thread: import native libraries or load
        models here rather than racing to do it in the worker threads."""

    def cache_extra(self, ctx: ToolContext) -> Any:
        """What the result depends on besides the tool, its version, the image and the arguments
        (part of the cache key). A question-focused tool returns the question here."""
        return None

    @abstractmethod
    async def run(self, args: dict[str, Any], ctx: ToolContext) -> ToolOutput:
        """Run the tool on the sample in ``ctx`` with validated ``args``."""

    async def run_batch(self, calls: Sequence[tuple[dict[str, Any], ToolContext]]) -> list[ToolOutput | BaseException]:
        """Run several calls, possibly of different samples, at once; the outputs come back in
        order, a failed call as its exception. Used by whatever gathers calls (the Ray executor's
        tool services). The default runs them concurrently with :meth:`run`; a tool whose model
        takes a batch (one forward pass for several images) overrides it. Its outputs must equal
        the single calls' (they share the cache)."""
        import asyncio

        return list(await asyncio.gather(*(self.run(args, ctx) for args, ctx in calls), return_exceptions=True))


class Detection(BaseModel):
    """One box a :class:`Detector` found, in pixels of the original image."""

    model_config = ConfigDict(extra="forbid", defer_build=DEFER_BUILD)
    label: str
    score: float
    box: list[float] = Field(min_length=4, max_length=4, description="[x1, y1, x2, y2] in pixels")


class DetectorOptions(ComponentOptions):
    """Options every detector backend takes (unknown keys are an error)."""

    threshold: float = Field(0.1, ge=0, le=1, description="drop boxes scored below this")


class Detector(Component):
    """An open-vocabulary object detector: the backend the ``label_bbox`` operator calls.

    ``label_bbox`` picks one by name with its ``detector`` option (``{name: transformers, model:
    ...}``); a plugin adds one through the ``register_detectors`` hook, under the same allow and
    block lists as every other component."""

    family = "detector"
    Options: ClassVar[type[ComponentOptions]] = DetectorOptions

    def identity(self) -> dict[str, Any]:
        """What identifies the detector's results (it enters label_bbox's cache key): the name and
        the options, less those that cannot change a box (credentials' variable, timeouts)."""
        return {"detector": self.name, **self.options.model_dump(mode="json", exclude={"api_key_env", "timeout_s"})}

    @abstractmethod
    async def detect(self, image: bytes, size: tuple[int, int], labels: list[str], ctx: ToolContext) -> list[Detection]:
        """Boxes for ``labels`` in ``image`` (``size`` is its width and height in pixels). Run
        blocking work with ``await ctx.blocking(fn, *args)``."""

    async def detect_batch(self, calls: Sequence[tuple[bytes, tuple[int, int], list[str], ToolContext]]
                           ) -> list[list[Detection] | BaseException]:
        """:meth:`detect` for several ``(image, size, labels, ctx)`` at once, in order, a failed
        one as its exception (``label_bbox``'s :meth:`Tool.run_batch`). The default detects them
        concurrently; a backend that runs a batch in one forward pass overrides it, with the
        single calls' results."""
        import asyncio

        return list(await asyncio.gather(*(self.detect(image, size, labels, ctx) for image, size, labels, ctx in calls),
                                         return_exceptions=True))

    async def aclose(self) -> None:
        """Release models or connections."""


class SearchBackend(Component):
    """A retrieval backend for RAG: a local corpus or a web search API."""

    family = "search"

    @abstractmethod
    async def search(self, query: str, k: int) -> list[SearchHit]:
        """Return up to ``k`` hits for ``query``, best first."""

    async def aclose(self) -> None:
        """Release connections."""

    @classmethod
    def unavailable_reason(cls) -> str | None:
        """Why a build that names no search backend cannot use this one now, with how to make it
        usable (the keys it looked for, the alternatives); None: it can. A real build asks the
        ``web`` backend, and runs RAG through it only when this is None. Must not reach the network."""
        return None

    @classmethod
    def build_index(cls, corpus: Path, out: Path, **options: Any) -> dict[str, Any]:
        """Index ``corpus`` into the file ``out`` ahead of a build (``mmat rag index``) and return
        what the index holds (at least ``passages``; ``embedding_model`` when it has one). A
        backend that searches a service has nothing to index and keeps this default."""
        from mmat_core.errors import ConfigError

        raise ConfigError(f"the {cls.name!r} search backend builds no index; `mmat rag index` is for a local corpus")


# --------------------------------------------------------------------------------------------
# Stage 3: critics


@dataclass
class CriticContext:
    """What a critic may use."""

    llm: LLMClient | None
    images: ImageStore
    round: int = 0
    #: The run's ``reflection`` settings (the quality critic takes its default threshold from
    #: them); None when a critic runs outside a build (``mmat critique`` on a file, a test).
    settings: ReflectionSettings | None = None


class Critic(Component):
    """Reviews a finished Trace and returns a verdict: pass, fix (reflect) or reject."""

    family = "critic"
    #: Lower runs first. Verification (pure code) before LLM judges.
    order: ClassVar[int] = 100

    def applies_to(self, trace: Trace) -> bool:
        """Whether this critic reviews the given trace (e.g. math critics on math sources only)."""
        return True

    @abstractmethod
    async def review(self, trace: Trace, ctx: CriticContext) -> Verdict:
        """Review the trace."""


# --------------------------------------------------------------------------------------------
# Stage 4: formatters


@dataclass
class ToolInfo:
    """What formatters and prompts need to know of an enabled tool."""

    name: str
    label: str
    description: str


@dataclass
class FormatContext:
    """Run-level facts a formatter may need (the RR system prompt lists the enabled tools)."""

    tools: list[ToolInfo] = field(default_factory=list)
    rag_enabled: bool = True
    #: Where relative image paths of the traces are resolved when a formatter reads image bytes.
    image_root: Path | None = None
    #: The run directory being formatted (None for traces that come from elsewhere).
    run_dir: Path | None = None
    #: The run's image store: the bytes of images known by their hash (None outside a run).
    images: ImageStore | None = None
    #: The run's manifest (run.json) as decided before the outputs are written; None when the
    #: run has none (an imported run, a run that never finished).
    manifest: RunManifest | None = None
    #: An RR system prompt to write verbatim instead of mmat's (an imported run keeps its own).
    rr_system: str | None = None


class TraceWriter(Protocol):
    """A streaming writer opened by a formatter for one run."""

    def write(self, trace: Trace) -> None:
        """Write one trace (formatters skip traces that are not kept)."""
        ...

    def close(self) -> list[Path]:
        """Finish and atomically publish the output; returns the files written."""
        ...

    def abort(self) -> None:
        """Discard partial output (nothing half-written may look whole)."""
        ...


class Formatter(Component):
    """Turns Traces into one output format (RR, ORR, an export for a training framework)."""

    family = "formatter"
    #: File name written in the output directory when the config does not name one.
    default_file: ClassVar[str] = ""
    #: True when :meth:`open`'s writer also accepts a Trace as its JSON dict (as the run store
    #: holds it): the export then skips pydantic validation of every row. Such a formatter must
    #: produce the same bytes for a Trace and for its dict.
    accepts_dicts: ClassVar[bool] = False
    #: True when the output is plain lines with no side files, so an export in several processes
    #: may write part files and join them (byte-identical to a one-process export).
    parallel_safe: ClassVar[bool] = False

    @abstractmethod
    def open(self, out_dir: Path, ctx: FormatContext) -> TraceWriter:
        """Open a streaming writer into ``out_dir``."""


class RecordFormatter(Formatter, ABC):
    """A formatter that writes one JSON object per kept Trace to a JSON Lines file."""

    @abstractmethod
    def record(self, trace: Trace, ctx: FormatContext) -> dict[str, Any] | None:
        """The JSON object for one trace, or None to leave it out."""

    def open(self, out_dir: Path, ctx: FormatContext) -> TraceWriter:
        """Open an atomic JSONL writer that calls :meth:`record` for each kept trace."""
        from mmat_core.writers import RecordWriter

        return RecordWriter(out_dir / self.file_name(), lambda trace: self.record(trace, ctx))

    def file_name(self) -> str:
        """The output file name (option ``file`` overrides the default)."""
        # getattr: a subclass's Options may or may not offer a ``file`` key.
        return str(getattr(self.options, "file", None) or self.default_file or f"{self.name}.jsonl")


# --------------------------------------------------------------------------------------------
# Trainers and executors


class TrainResult(BaseModel):
    """What a trainer reports."""

    model_config = ConfigDict(extra="allow", defer_build=DEFER_BUILD)
    output_dir: str
    steps: int = 0
    final_loss: float | None = None
    command: list[str] | None = None


class Trainer(Component):
    """Fine-tunes a model on RR or ORR data."""

    family = "trainer"

    @abstractmethod
    def train(
        self,
        *,
        data: Path | Sequence[Path],
        model: str,
        output_dir: Path,
        preset: str | None = None,
        overrides: dict[str, Any] | None = None,
        resume: bool | str | Path = False,
        log: Callable[[dict[str, Any]], None] | None = None,
    ) -> TrainResult:
        """Train on ``data`` (RR/ORR JSONL files) and return where the result went.

        ``preset`` names a settings bundle (``mmat-paper``); ``overrides`` win over the preset and
        the trainer's options; ``resume`` continues from the last (or a given) checkpoint; ``log``
        receives one dict per logged step (loss, tokens/s)."""


class Executor(Component):
    """Runs a pipeline: in this process, or spread over a cluster."""

    family = "executor"

    @abstractmethod
    def execute(self, pipeline: Pipeline, out_dir: Path) -> RunResult:
        """Run ``pipeline`` into ``out_dir`` and return its :class:`mmat_core.RunResult`."""


FAMILY_BASES: dict[str, type[Component]] = {
    "source": Source,
    "llm": LLMBackend,
    "tool": Tool,
    "search": SearchBackend,
    "detector": Detector,
    "critic": Critic,
    "formatter": Formatter,
    "trainer": Trainer,
    "executor": Executor,
}
