"""Settings of the AI layer: keyword arguments, then environment variables, then defaults.

Environment variables:

* keys: ``OPENAI_API_KEY``, ``ANTHROPIC_API_KEY``, ``PERPLEXITY_API_KEY``, ``GEMINI_API_KEY``, ``XAI_API_KEY``;
* per provider: ``FORGEML_<PROVIDER>_BASE_URL``, ``FORGEML_<PROVIDER>_MODEL``, ``FORGEML_<PROVIDER>_ENABLED``;
* routing: ``FORGEML_AI_ROUTE_<TASK>`` as a comma-separated chain (tasks: SYNTHETIC_DATA, ANALYSIS, RESEARCH,
  ARCHITECTURE), ``FORGEML_AI_CONSENSUS=1`` to ask several analysts;
* limits: ``FORGEML_AI_BUDGET_USD``, ``FORGEML_AI_TIMEOUT`` (per call), ``FORGEML_AI_DEADLINE`` (per task),
  ``FORGEML_AI_MAX_RETRIES``;
* circuit breaker: ``FORGEML_AI_BREAKER_THRESHOLD`` (failed calls in a row that open it),
  ``FORGEML_AI_BREAKER_COOLDOWN`` (seconds before a trial call);
* cache: ``FORGEML_AI_CACHE_DIR`` (else ``FORGEML_DATA_DIR``), ``FORGEML_AI_CACHE=0`` to turn it off,
  ``FORGEML_AI_CACHE_MAX_ENTRIES`` and ``FORGEML_AI_CACHE_MAX_AGE`` (seconds) to bound it;
* audit trail (beside the cache, on disk): ``FORGEML_AI_AUDIT_MAX_ROWS``, ``FORGEML_AI_AUDIT_MAX_AGE`` (seconds).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, field_validator

from .models import PRICES, PROVIDER_DEFAULTS
from .providers.base import ProviderConfig

__all__ = ["TASKS", "AISettings"]

TASKS = ("synthetic_data", "analysis", "research", "architecture")

DEFAULT_ROUTES = {
    "synthetic_data": ["openai", "gemini", "local"],
    "analysis": ["anthropic", "gemini", "local"],
    "research": ["perplexity", "local"],
    "architecture": ["xai", "anthropic", "local"],
}

# How long an identical request is answered from the cache, per task (seconds).
DEFAULT_CACHE_TTL = {"synthetic_data": 7 * 86400, "analysis": 86400, "research": 6 * 3600, "architecture": 7 * 86400}


class AISettings(BaseModel):
    """Everything the orchestrator needs; build it with :meth:`from_env` or directly."""

    model_config = ConfigDict(extra="forbid")

    providers: dict[str, ProviderConfig]
    routes: dict[str, list[str]] = Field(default_factory=lambda: {k: list(v) for k, v in DEFAULT_ROUTES.items()})
    call_timeout: float = Field(default=30.0, gt=0)
    task_deadline: float = Field(default=90.0, gt=0)
    max_retries: int = Field(default=3, ge=0, le=10)
    backoff_base: float = Field(default=0.5, ge=0)
    backoff_max: float = Field(default=20.0, ge=0)
    breaker_threshold: int = Field(default=3, ge=1)
    breaker_cooldown: float = Field(default=60.0, ge=0)
    budget_usd: float | None = Field(default=None, ge=0)
    prices: dict[str, tuple[float, float]] = Field(default_factory=lambda: dict(PRICES))
    cache_dir: Path | None = None
    cache_enabled: bool = True
    cache_ttl: dict[str, float] = Field(default_factory=lambda: dict(DEFAULT_CACHE_TTL))
    cache_max_entries: int = Field(
        default=10_000, ge=1, description="cached responses kept, at most (the oldest go first)"
    )
    cache_max_age: float = Field(
        default=7 * 86400, gt=0, description="seconds a cached response is served, at most (whatever its task's TTL)"
    )
    audit_max_rows: int = Field(default=100_000, ge=1, description="rows of the on-disk audit trail kept, at most")
    audit_max_age: float = Field(default=90 * 86400, gt=0, description="seconds an audit row is kept, at most")
    consensus: bool = False
    max_sample_rows: int = Field(default=200, ge=1)
    max_sample_bytes: int = Field(default=64_000, ge=1024)
    max_synthetic: int = Field(default=10_000, ge=1)
    remote_chunk: int = Field(default=100, ge=1, description="synthetic samples asked of a model per call")
    max_remote_calls: int = Field(default=5, ge=1, description="synthetic-data calls per request, at most")
    max_output_tokens: int = Field(default=4096, ge=256)

    @field_validator("routes")
    @classmethod
    def _routes(cls, routes):
        for task, chain in routes.items():
            if task not in TASKS:
                raise ValueError(f"unknown task {task!r} in routes; tasks are {TASKS}")
            if not chain:
                raise ValueError(f"the route for {task} is empty")
        return routes

    def route(self, task: str) -> list[str]:
        """The provider chain for ``task``; ``local`` always ends it."""
        chain = [p for p in self.routes.get(task, DEFAULT_ROUTES[task]) if p != "local"]
        return [*chain, "local"]

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides) -> AISettings:
        """Settings from ``env`` (``os.environ`` by default); keyword arguments take precedence."""
        env = os.environ if env is None else env
        providers = {}
        for name, defaults in PROVIDER_DEFAULTS.items():
            upper = name.upper()
            enabled = env.get(f"FORGEML_{upper}_ENABLED", "1").strip().lower() not in ("0", "false", "no", "off")
            key = env.get(defaults["key_env"]) or None
            providers[name] = ProviderConfig(
                name=name,
                api_key=key,
                base_url=env.get(f"FORGEML_{upper}_BASE_URL") or defaults.get("base_url"),
                model=env.get(f"FORGEML_{upper}_MODEL") or defaults["model"],
                enabled=enabled,
            )
        values: dict = {"providers": providers}
        routes = {}
        for task in TASKS:
            raw = env.get(f"FORGEML_AI_ROUTE_{task.upper()}")
            if raw:
                routes[task] = [p.strip().lower() for p in raw.split(",") if p.strip()]
        if routes:
            values["routes"] = {**{k: list(v) for k, v in DEFAULT_ROUTES.items()}, **routes}
        numeric = {
            "FORGEML_AI_BUDGET_USD": ("budget_usd", float),
            "FORGEML_AI_TIMEOUT": ("call_timeout", float),
            "FORGEML_AI_DEADLINE": ("task_deadline", float),
            "FORGEML_AI_MAX_RETRIES": ("max_retries", int),
            "FORGEML_AI_BREAKER_THRESHOLD": ("breaker_threshold", int),
            "FORGEML_AI_BREAKER_COOLDOWN": ("breaker_cooldown", float),
            "FORGEML_AI_CACHE_MAX_ENTRIES": ("cache_max_entries", int),
            "FORGEML_AI_CACHE_MAX_AGE": ("cache_max_age", float),
            "FORGEML_AI_AUDIT_MAX_ROWS": ("audit_max_rows", int),
            "FORGEML_AI_AUDIT_MAX_AGE": ("audit_max_age", float),
        }
        for var, (field, kind) in numeric.items():
            if env.get(var):
                try:
                    values[field] = kind(env[var])
                except ValueError:
                    raise ValueError(f"{var}={env[var]!r} is not a valid {kind.__name__}") from None
        cache_dir = env.get("FORGEML_AI_CACHE_DIR") or env.get("FORGEML_DATA_DIR")
        if cache_dir:
            values["cache_dir"] = Path(cache_dir)
        if env.get("FORGEML_AI_CACHE", "1").strip().lower() in ("0", "false", "no", "off"):
            values["cache_enabled"] = False
        if env.get("FORGEML_AI_CONSENSUS", "0").strip().lower() in ("1", "true", "yes", "on"):
            values["consensus"] = True
        values.update(overrides)
        return cls(**values)
