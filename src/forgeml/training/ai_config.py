"""``AIEnhancedConfig``: what the AI teachers of an ``AIEnhancedTrainer`` may do, how often, within which bounds."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = ["PROVIDERS", "AIEnhancedConfig"]

PROVIDERS = ("openai", "anthropic", "perplexity", "gemini", "xai")


class AIEnhancedConfig(BaseModel):
    """What the AI teachers may do, how often, and within which bounds. ``AIEnhancedConfig()`` is the
    seed's ``Default``: every provider enabled, guidance every 5 epochs, research every 10, no synthetic data."""

    model_config = ConfigDict(extra="forbid")

    openai_enabled: bool = True
    anthropic_enabled: bool = True
    perplexity_enabled: bool = True
    gemini_enabled: bool = True
    xai_enabled: bool = True
    synthetic_data_ratio: float = Field(default=0.0, ge=0.0, le=1.0, description="synthetic samples per real one")
    research_update_interval: int = Field(default=10, ge=1)
    optimization_guidance_frequency: int = Field(default=5, ge=1)
    auto_apply: bool = Field(
        default=True,
        description="apply recommendations (False: only record them); research actions apply only when the last analysis found a problem",
    )
    consensus: bool = Field(default=False, description="ask several analysts and merge their advice")
    domain: str = Field(default="general", description="computer_vision, nlp, tabular or general")
    model_description: str | None = None
    # guardrails: a recommendation outside these bounds is refused, and recorded as refused
    lr_factor_range: tuple[float, float] = (0.1, 2.0)
    min_learning_rate: float = Field(default=1e-7, gt=0)
    max_learning_rate: float = Field(default=1.0, gt=0)
    weight_decay_range: tuple[float, float] = (0.0, 0.1)
    dropout_range: tuple[float, float] = (0.0, 0.6)
    label_smoothing_range: tuple[float, float] = (0.0, 0.3)
    grad_clip_range: tuple[float, float] = (0.05, 100.0)
    batch_size_range: tuple[int, int] = (8, 2048)
    # divergence guard
    divergence_factor: float = Field(
        default=4.0, gt=1.0, description="a train loss this many times the best is exploding"
    )
    divergence_lr_factor: float = Field(default=0.3, gt=0.0, lt=1.0)
    max_divergence_recoveries: int = Field(default=3, ge=0)
    wait_for_ai: bool = Field(
        default=False,
        description="at each epoch boundary, wait for pending answers (deterministic; for tests and benchmarks)",
    )
    # one hypothesis at a time
    review_setup: bool = Field(
        default=True, description="ask for a review of the set-up (optimizer, inputs, schedule) before the first epoch"
    )
    max_changes_per_round: int = Field(default=2, ge=1, le=5, description="changes applied from one answer")
    keep_or_revert: bool = Field(
        default=True, description="put each round's changes on trial; revert them unless validation confirms"
    )
    trial_epochs: int | None = Field(
        default=None, ge=1, description="epochs a trial lasts (default: optimization_guidance_frequency)"
    )
    lr_range_test: bool = Field(
        default=False, description="run a learning-rate range test (Smith 2017) before the first epoch"
    )
    synthetic_ab_fraction: float = Field(
        default=0.25, gt=0.0, le=1.0, description="the share of an epoch each arm of the synthetic-data A/B trains"
    )

    @model_validator(mode="after")
    def _ranges(self) -> AIEnhancedConfig:
        for name in (
            "lr_factor_range",
            "weight_decay_range",
            "dropout_range",
            "label_smoothing_range",
            "grad_clip_range",
            "batch_size_range",
        ):
            low, high = getattr(self, name)
            if low > high:
                raise ValueError(f"{name} must be (low, high) with low <= high, got {(low, high)}")
        return self

    @classmethod
    def default(cls) -> AIEnhancedConfig:
        return cls()

    def enabled_providers(self) -> list[str]:
        return [p for p in PROVIDERS if getattr(self, f"{p}_enabled")]
