"""The ``llm_engine`` section of the configuration: limits, retries, prices and batch mode.

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

from pydantic import ConfigDict, Field

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
