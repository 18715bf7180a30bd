"""The engine's sections of the configuration: ``engine`` (the rationale loop), ``reflection``
(stage 3's policy) and ``llm_engine`` (limits, retries, prices and batch mode of model calls).

They live beside the engine that reads them, so the engine never imports :mod:`mmat_core.config`
(which assembles them into :class:`~mmat_core.config.PipelineConfig` and re-exports them).

::

    llm_engine:
      concurrency: 64        # most calls in flight
      rpm: 500               # requests per minute (unset = no limit)
      tpm: 200000            # tokens per minute (unset = no limit)
      timeout_s: 120
      mode: online           # or batch (OpenAI Batch / Anthropic Message Batches, half price)
      prices:                # USD per 1M tokens, merged over the built-in table
        gpt-4o: {input: 2.5, output: 10}
      per_model:             # overrides for one backend:model
        "openai:gpt-4o-mini": {rpm: 5000}

Every field is documented in docs/llms.md.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

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


class EngineSettings(BaseModel):
    """How the rationale loop runs."""

    model_config = ConfigDict(extra="forbid")
    max_turns: int = Field(8, ge=1, le=64, description="turn cap of the rationale loop")
    repair_attempts: int = Field(2, ge=0, le=10, description="re-asks of a malformed step")
    concurrency: int = Field(32, ge=1, description="samples in flight at once")
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
