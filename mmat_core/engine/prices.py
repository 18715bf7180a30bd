"""Estimated prices of model calls: a table of USD per million tokens, overridable in the config.

The built-in figures are providers' list prices for standard (non-batch) use as the authors
knew them; they change, so treat every cost mmat shows as an estimate and put your own figures
under ``llm_engine.prices``. A model found in no table costs 0 and is reported as unpriced, so a
missing price is visible rather than silently wrong. Batch APIs are billed at
``batch_discount`` (half) of the standard price.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from mmat_core.models import Usage


class Price(BaseModel):
    """USD per one million tokens."""

    model_config = ConfigDict(extra="forbid")
    input: float = Field(ge=0, description="USD per 1M prompt tokens")
    output: float = Field(ge=0, description="USD per 1M completion tokens")


#: Built-in list prices (USD per 1M tokens). Keys are model names or name prefixes.
DEFAULT_PRICES: dict[str, Price] = {
    "gpt-4o": Price(input=2.50, output=10.00),
    "gpt-4o-mini": Price(input=0.15, output=0.60),
    "gpt-4.1": Price(input=2.00, output=8.00),
    "gpt-4.1-mini": Price(input=0.40, output=1.60),
    "gpt-4.1-nano": Price(input=0.10, output=0.40),
    "o4-mini": Price(input=1.10, output=4.40),
    "claude-3-5-sonnet": Price(input=3.00, output=15.00),
    "claude-3-7-sonnet": Price(input=3.00, output=15.00),
    "claude-sonnet-4": Price(input=3.00, output=15.00),
    "claude-3-5-haiku": Price(input=0.80, output=4.00),
    "claude-haiku-4-5": Price(input=1.00, output=5.00),
    "claude-opus-4": Price(input=15.00, output=75.00),
}


class PriceTable:
    """Looks up a model's price: ``backend:model`` first, then the model name, then the longest
    matching prefix (so ``gpt-4o-2024-08-06`` finds ``gpt-4o`` and ``gpt-4o-mini-x`` finds
    ``gpt-4o-mini``). Offline backends are free."""

    def __init__(self, overrides: dict[str, Price] | None = None, *, batch_discount: float = 0.5) -> None:
        self.prices: dict[str, Price] = {**DEFAULT_PRICES, **(overrides or {})}
        self.batch_discount = batch_discount
        self.unpriced: set[str] = set()

    def lookup(self, backend: str, model: str) -> Price | None:
        """The price of ``backend:model``, or None when no entry matches."""
        for key in (f"{backend}:{model}", model):
            if key in self.prices:
                return self.prices[key]
        best = max((k for k in self.prices if model.startswith(k)), key=len, default=None)
        return self.prices[best] if best else None

    def cost(self, backend: str, model: str, usage: Usage, *, offline: bool = False, batch: bool = False) -> float:
        """Estimated USD of one call's usage."""
        if offline:
            return 0.0
        price = self.lookup(backend, model)
        if price is None:
            self.unpriced.add(f"{backend}:{model}")
            return 0.0
        usd = (usage.prompt_tokens * price.input + usage.completion_tokens * price.output) / 1_000_000
        return usd * (self.batch_discount if batch else 1.0)
