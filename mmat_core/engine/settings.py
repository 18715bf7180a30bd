"""The engine's sections of the configuration: ``engine`` (the rationale loop), ``reflection``
(stage 3's policy) and ``llm_engine`` (limits, retries, prices and batch mode of model calls).

They live beside the engine that reads them, so the engine never imports :mod:`mmat_core.config`
(which assembles them into :class:`~mmat_core.config.PipelineConfig` and re-exports them).

::

    engine:
      concurrency: null      # samples in flight; unset = 2 x llm_engine.concurrency (see below)
    llm_engine:
      concurrency: 64        # most model calls in flight: the one concurrency setting to tune
      rpm: 500               # requests per minute (unset = no limit)
      tpm: 200000            # tokens per minute (unset = no limit)
      timeout_s: 120
      mode: online           # or batch (OpenAI Batch / Anthropic Message Batches, half price)
      prices:                # USD per 1M tokens, merged over the built-in table
        gpt-4o: {input: 2.5, output: 10}
      per_model:             # overrides for one backend:model
        "openai:gpt-4o-mini": {rpm: 5000}

Every field is documented in docs/llms.md.

Two settings count things in flight, and only one of them is the user's to tune:
``llm_engine.concurrency`` is how many model calls may be in flight at once (what a provider's
limits are about). ``engine.concurrency`` is how many *samples* are in flight, and each sample
makes about one model call at a time, so it caps the model calls too. Left unset, it follows:
:data:`SAMPLES_PER_CALL_SLOT` samples per call slot of the generator's backend, so the call slots
stay full while some samples are between calls (running a tool, waiting for a commit), and raising
``llm_engine.concurrency`` raises both. Set it only to bound the samples held in memory, or in
batch mode (where it is the number of requests per batch round); set below the call slots in
online mode it would hold calls below ``llm_engine.concurrency``, and :class:`ConcurrencyWarning`
says so (:func:`samples_in_flight`).
"""

from __future__ import annotations

import warnings
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, FieldSerializationInfo, field_serializer

from mmat_core.engine.gcpolicy import DEFAULT_THRESHOLD as DEFAULT_GC_THRESHOLD
from mmat_core.engine.prices import Price
from mmat_core.engine.scheduler import SchedulerSettings


class LLMEngineSettings(SchedulerSettings):
    """Scheduler limits (inherited) plus cost and execution mode for model calls."""

    model_config = ConfigDict(extra="forbid")
    mode: Literal["online", "batch"] = Field("online", description="online calls, or the providers' batch APIs")
    batch_max_requests: int = Field(10_000, ge=1, description="most requests in one submitted batch")
    batch_window_s: float = Field(2.0, ge=0, description="how long requests gather before a batch is submitted")
    batch_poll_s: float = Field(30.0, gt=0, description="seconds between polls of a submitted batch")
    batch_discount: float = Field(0.5, ge=0, le=1, description="batch price as a fraction of the standard price")
    prices: dict[str, Price] = Field(default_factory=dict, description="USD per 1M tokens by model (or backend:model)")
    per_model: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="scheduler overrides keyed by backend:model, e.g. {'openai:gpt-4o': {'rpm': 500}}"
    )
    progress: bool = Field(True, description="show the live progress display in `mmat build`")

    def scheduler_for(self, backend: str, model: str) -> SchedulerSettings:
        """The scheduler limits for one backend and model (``per_model`` overrides applied)."""
        base = self.model_dump(include=set(SchedulerSettings.model_fields))
        base.update(self.per_model.get(f"{backend}:{model}", {}))
        return SchedulerSettings.model_validate(base)

    def call_slots(self, backend: str, model: str | None = None) -> int:
        """The most model calls ``backend:model`` may have in flight (``per_model`` applied).
        With no model named (a backend left at its default model), the largest that any
        ``per_model`` entry of the backend allows, or ``concurrency``."""
        if model:
            return self.scheduler_for(backend, model).concurrency
        slots = [int(options["concurrency"]) for key, options in self.per_model.items()
                 if key.startswith(f"{backend}:") and isinstance(options.get("concurrency"), int)]
        return max([self.concurrency, *slots])


class EngineSettings(BaseModel):
    """How the rationale loop runs."""

    model_config = ConfigDict(extra="forbid")
    max_turns: int = Field(8, ge=1, le=64, description="turn cap of the rationale loop")
    repair_attempts: int = Field(2, ge=0, le=10, description="re-asks of a malformed step")
    concurrency: int | None = Field(
        None, ge=1, description="samples in flight at once; unset = twice the generator's llm_engine.concurrency "
        "(docs/llms.md, 'Concurrency')"
    )
    tool_workers: int = Field(2, ge=1, description="worker threads for CPU-bound tools")
    rag_top_k: int = Field(3, ge=1, le=50)
    temperature: float | None = None
    max_tokens: int | None = Field(1024, ge=1)
    cache_path: str | None = Field(None, description="shared cache file; default: cache.sqlite in the run directory")
    gc_threshold: int | None = Field(
        DEFAULT_GC_THRESHOLD, ge=0, description="allocations between Python's generation-0 garbage collections during a run "
        "(Python's default is 700; 0 or null leaves the collector as it is): see mmat_core/engine/gcpolicy.py"
    )
    final_answer: Literal["label", "model"] = Field(
        "label", description="the final assistant turn (and ORR's <ANSWER>): label = the dataset's label, no model call "
        "(the paper); model = the generator states the answer and answer_match verifies it (docs/formats.md)"
    )
    max_thought_chars: int = Field(16_000, ge=1, description="longer thoughts are re-asked (thought_too_long)")
    max_rag_query_chars: int = Field(500, ge=1, description="longer RAG queries are re-asked (rag_query_too_long)")
    max_question_chars: int = Field(
        20_000, ge=1, description="longer questions fail before any model call (question_too_long)"
    )
    max_tool_result_chars: int = Field(
        20_000, ge=1, description="a longer operator or RAG result becomes an error observation (result_too_long)"
    )

    @field_serializer("concurrency")
    def _concurrency_as_given(self, value: int | None, info: FieldSerializationInfo) -> int | None:
        # A derived value is written as unset: a resumed run (which reloads the stored config)
        # derives it again from its own llm_engine.concurrency instead of freezing the old figure.
        return value if "concurrency" in self.model_fields_set else None


class ReflectionSettings(BaseModel):
    """Stage-3 reflection policy."""

    model_config = ConfigDict(extra="forbid")
    max_rounds: int = Field(1, ge=0, le=5, description="reflection rounds per critic before a sample counts as failing")
    recheck: bool = Field(True, description="after a reflection, ask the same critic again to confirm the fix")
    on_failure: Literal["keep_flagged", "drop", "regenerate"] = Field(
        "drop", description="what happens to a sample that still fails: drop it, keep it flagged, or regenerate it"
    )
    regenerate_attempts: int = Field(1, ge=1, le=5, description="fresh rationales tried when on_failure is regenerate")
    after_regenerate: Literal["keep_flagged", "drop"] = Field(
        "drop", description="what happens when every regeneration still fails"
    )
    quality_threshold: float = Field(0.6, ge=0, le=1, description="quality critic's keep threshold unless it sets its own")


#: Samples in flight per model-call slot when ``engine.concurrency`` is unset. A sample spends
#: part of its time outside model calls (tools, retrieval, commits); with twice as many samples as
#: call slots the slots stay full while up to half of them are elsewhere, and the extra samples
#: only wait at the admission gate (a few kilobytes each).
SAMPLES_PER_CALL_SLOT = 2


class ConcurrencyWarning(UserWarning):
    """``engine.concurrency`` is set below ``llm_engine.concurrency`` in online mode: each sample
    makes about one model call at a time, so the lower figure is what binds."""


def samples_bind_calls(engine: EngineSettings, llm_engine: LLMEngineSettings, backend: str,
                       model: str | None = None) -> str | None:
    """When ``engine.concurrency`` holds the model calls below ``llm_engine.concurrency`` (set
    lower, online mode), the end-of-build advice that names it as the binding setting; else None.
    The scheduler cannot see it (its calls never wait), so it would call the server's latency
    the bound and advise raising ``llm_engine.concurrency``, which changes nothing."""
    slots = llm_engine.call_slots(backend, model)
    if llm_engine.mode != "online" or engine.concurrency is None or engine.concurrency >= slots:
        return None
    return (f"binding limit is engine.concurrency={engine.concurrency}: at most {engine.concurrency} samples, so about "
            f"{engine.concurrency} model calls, were in flight of llm_engine.concurrency={slots}; raise "
            "engine.concurrency or leave it unset (it follows llm_engine.concurrency)")


def samples_in_flight(engine: EngineSettings, llm_engine: LLMEngineSettings, backend: str,
                      model: str | None = None) -> int:
    """How many samples a build keeps in flight: ``engine.concurrency`` when set, else
    :data:`SAMPLES_PER_CALL_SLOT` times the generator's call slots. Warns
    (:class:`ConcurrencyWarning`) when a set value holds model calls below ``llm_engine.concurrency``."""
    slots = llm_engine.call_slots(backend, model)
    if engine.concurrency is None:
        return SAMPLES_PER_CALL_SLOT * slots
    if llm_engine.mode == "online" and engine.concurrency < slots:
        warnings.warn(
            f"engine.concurrency={engine.concurrency} keeps at most {engine.concurrency} samples in flight, and each "
            f"makes one model call at a time, so llm_engine.concurrency={slots} is never reached. Leave "
            "engine.concurrency unset (it follows llm_engine.concurrency) or lower llm_engine.concurrency to match "
            "(docs/llms.md, 'Concurrency').",
            ConcurrencyWarning, stacklevel=2,
        )
    return engine.concurrency
