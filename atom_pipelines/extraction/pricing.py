"""Token prices, for the cost estimates in partition metadata. USD per million tokens (input, cached
input, output), from OpenAI's public price list; a model not listed has no estimate ("unknown"), never 0."""

from __future__ import annotations

from atom_pipelines.extraction.outcomes import TokenUsage

PRICES_PER_MILLION: dict[str, tuple[float, float, float]] = {
    "gpt-4o-mini": (0.15, 0.075, 0.60),
    "gpt-4o": (2.50, 1.25, 10.00),
    "gpt-4.1-mini": (0.40, 0.10, 1.60),
    "gpt-4.1-nano": (0.10, 0.025, 0.40),
    "gpt-4.1": (2.00, 0.50, 8.00),
}


def price_for(model: str) -> tuple[float, float, float] | None:
    """The longest listed prefix of the model name (dated snapshots share their family's price)."""
    for name in sorted(PRICES_PER_MILLION, key=len, reverse=True):
        if model == name or model.startswith(name + "-"):
            return PRICES_PER_MILLION[name]
    return None


def cost_usd(model: str, usage: TokenUsage) -> float | None:
    price = price_for(model)
    if price is None:
        return None
    prompt_price, cached_price, output_price = price
    uncached = max(usage.prompt - usage.cached, 0)
    return (uncached * prompt_price + usage.cached * cached_price + usage.completion * output_price) / 1_000_000
