"""Provider defaults in one table: model, base URL, key variable, and list prices.

Model names change every few months, so everything a provider takes from here
is overridable: per provider through ``ProviderConfig`` (or the environment,
``FORGEML_<PROVIDER>_MODEL`` and ``FORGEML_<PROVIDER>_BASE_URL``), and the
prices through the orchestrator's settings.

Defaults are each provider's current general-purpose tier as its documentation
describes it (late 2026), not its most expensive flagship: a teacher is called
many times during a training run.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover - typing only
    from .providers.base import ProviderConfig, RemoteProvider

__all__ = [
    "PRICES",
    "PROVIDER_DEFAULTS",
    "build_provider",
    "config_from_env",
    "price_for",
    "provider_classes",
]

# name -> {"model", "base_url", "key_env", "docs"}. "docs" is where the model list lives, for whoever updates this.
PROVIDER_DEFAULTS: dict[str, dict[str, str]] = {
    "openai": {
        "model": "gpt-6.1-terra",  # OpenAI's everyday tier: "balances intelligence and cost"
        "base_url": "https://api.openai.com/v1",
        "key_env": "OPENAI_API_KEY",
        "docs": "https://developers.openai.com/api/docs/models",
    },
    "anthropic": {
        "model": "claude-sonnet-5-5",  # "the best combination of speed and intelligence"
        "base_url": "https://api.anthropic.com",
        "key_env": "ANTHROPIC_API_KEY",
        "docs": "https://platform.claude.com/docs/en/about-claude/models/overview",
    },
    "perplexity": {
        "model": "sonar-pro",  # the Sonar search model for multi-source research with citations
        "base_url": "https://api.perplexity.ai",
        "key_env": "PERPLEXITY_API_KEY",
        "docs": "https://docs.perplexity.ai/getting-started/models",
    },
    "gemini": {
        "model": "gemini-3.8-flash",  # Google's GA "workhorse" model
        "base_url": "https://generativelanguage.googleapis.com",
        "key_env": "GEMINI_API_KEY",
        "docs": "https://ai.google.dev/gemini-api/docs/models",
    },
    "xai": {
        "model": "grok-4.7",  # xAI's current chat and reasoning model
        "base_url": "https://api.x.ai/v1",
        "key_env": "XAI_API_KEY",
        "docs": "https://docs.x.ai/docs/models",
    },
}

# model -> (USD per million input tokens, USD per million output tokens): approximate public list
# prices, standard tier, prompts under the long-context threshold. Perplexity also charges a
# per-request search fee, but it reports each call's total cost itself (Usage.reported_cost_usd).
PRICES: dict[str, tuple[float, float]] = {
    # OpenAI
    "gpt-6.1-terra": (1.00, 5.00),
    "gpt-6.1-sol": (2.00, 10.00),
    "gpt-6-astra": (10.00, 50.00),
    "gpt-6-luna": (0.10, 0.50),
    # Anthropic
    "claude-sonnet-5-5": (2.00, 10.00),
    "claude-opus-5-5": (4.00, 20.00),
    "claude-haiku-4-5": (1.00, 5.00),
    # Perplexity
    "sonar-pro": (3.00, 15.00),
    "sonar": (1.00, 1.00),
    # Google
    "gemini-3.8-flash": (0.75, 3.75),
    # xAI
    "grok-4.7": (2.00, 6.00),
}


def price_for(model: str, overrides: Mapping[str, tuple[float, float]] | None = None) -> tuple[float, float] | None:
    """``(input, output)`` USD per million tokens for ``model`` (overrides first), or None when unknown."""
    if overrides and model in overrides:
        return overrides[model]
    return PRICES.get(model)


def provider_classes() -> dict[str, type[RemoteProvider]]:
    """Provider name -> class, for every remote provider (``local`` is not one)."""
    from .providers.anthropic import AnthropicProvider
    from .providers.gemini import GeminiProvider
    from .providers.openai_compat import OpenAIProvider, PerplexityProvider, XAIProvider

    classes: list[type[RemoteProvider]] = [
        OpenAIProvider,
        AnthropicProvider,
        PerplexityProvider,
        GeminiProvider,
        XAIProvider,
    ]
    return {cls.name: cls for cls in classes}


def build_provider(name: str, config: ProviderConfig) -> RemoteProvider:
    """The provider called ``name``, set up with ``config``."""
    classes = provider_classes()
    try:
        cls = classes[name]
    except KeyError:
        raise ValueError(f"unknown provider {name!r}; known providers: {', '.join(sorted(classes))}") from None
    if config.name != name:
        raise ValueError(f"config is for provider {config.name!r}, not {name!r}")
    return cls(config)


def config_from_env(name: str, env: Mapping[str, str] | None = None, **overrides) -> ProviderConfig:
    """A ``ProviderConfig`` for ``name``: keyword arguments, then the environment, then the defaults.

    Reads the provider's own key variable (``OPENAI_API_KEY``, ...) and
    ``FORGEML_<NAME>_MODEL`` / ``FORGEML_<NAME>_BASE_URL``.
    """
    from .providers.base import ProviderConfig

    try:
        defaults = PROVIDER_DEFAULTS[name]
    except KeyError:
        raise ValueError(
            f"unknown provider {name!r}; known providers: {', '.join(sorted(PROVIDER_DEFAULTS))}"
        ) from None
    env = os.environ if env is None else env
    prefix = f"FORGEML_{name.upper()}_"
    values: dict[str, object] = {
        "name": name,
        "api_key": env.get(defaults["key_env"]) or None,
        "base_url": env.get(prefix + "BASE_URL") or defaults["base_url"],
        "model": env.get(prefix + "MODEL") or defaults["model"],
    }
    values.update(overrides)
    return ProviderConfig(**values)
