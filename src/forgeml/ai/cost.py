"""Token accounting, prices and the spending budget."""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["CostLedger", "ProviderSpend"]


@dataclass
class ProviderSpend:
    calls: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0


@dataclass
class CostLedger:
    """Running totals per provider, and the budget check made before a call is sent."""

    prices: dict[str, tuple[float, float]]  # model -> (USD per million input tokens, per million output tokens)
    budget_usd: float | None = None
    by_provider: dict[str, ProviderSpend] = field(default_factory=dict)

    @property
    def total_usd(self) -> float:
        return sum(s.cost_usd for s in self.by_provider.values())

    def price(self, model: str) -> tuple[float, float]:
        """The model's prices; an unknown model is priced like the most expensive known one (budgets stay safe)."""
        if model in self.prices:
            return self.prices[model]
        for known, price in self.prices.items():  # dated variants: "gpt-x-2026-01-01" priced as "gpt-x"
            if model.startswith(known):
                return price
        if not self.prices:
            return (0.0, 0.0)
        return max(self.prices.values(), key=lambda p: p[0] + p[1])

    def cost(self, model: str, input_tokens: int, output_tokens: int, reported: float | None = None) -> float:
        if reported is not None:
            return float(reported)
        p_in, p_out = self.price(model)
        return (input_tokens * p_in + output_tokens * p_out) / 1e6

    def can_afford(self, model: str, prompt_chars: int, max_output_tokens: int) -> bool:
        """Would a call of this size stay within the budget, at worst? (~4 characters per input token)."""
        if self.budget_usd is None:
            return True
        worst = self.cost(model, prompt_chars // 4 + 1, max_output_tokens)
        return self.total_usd + worst <= self.budget_usd

    def record(self, provider: str, model: str, input_tokens: int, output_tokens: int, reported: float | None) -> float:
        spend = self.by_provider.setdefault(provider, ProviderSpend())
        cost = self.cost(model, input_tokens, output_tokens, reported)
        spend.calls += 1
        spend.input_tokens += input_tokens
        spend.output_tokens += output_tokens
        spend.cost_usd += cost
        return cost
