"""``AIServiceOrchestrator``: the five AI services as teachers, with fallbacks, retries, budgets and a cache.

Every task walks its provider chain (settings ``routes``): a provider without a
key, with an open circuit breaker, or past the budget is skipped; a failed call
falls through to the next; the offline advisor (``local``) ends every chain, so
a task always answers, and the answer says which provider gave it and why the
earlier ones did not (``attempts``; :func:`describe_attempts` puts them in one
sentence). Each provider's last error is kept in words (``cause`` of
:class:`~forgeml.ai.errors.ProviderError`, never text a server sent) and shown
by :meth:`AIServiceOrchestrator.status`. An answer given after a provider
failed is not cached: the next identical request tries the providers again.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import hashlib
import math
import time
from collections import deque
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal
from urllib.parse import urlparse

import numpy as np
from pydantic import BaseModel, Field, ValidationError

from ..specs import (
    ArchitectureCandidate,
    ArchitectureSuggestionsResponse,
    Citation,
    DroppedCandidate,
    ModelAnalysisResponse,
    ModelSpec,
    ProviderAttempt,
    Recommendation,
    ResearchInsightsResponse,
    SyntheticDataResponse,
    TrainingContext,
    TrainingMetrics,
)
from . import prompts
from .cache import ResponseCache, request_key
from .cost import CostLedger
from .data import CLASSIFIER_TYPES, check_synthetic, parse_sample, summarise_for_prompt
from .errors import BadOutput, BudgetExceeded, CircuitOpen, ProviderError, ProviderTimeout, ProviderUnavailable
from .local import LocalAdvisor
from .providers.base import Message, RemoteProvider
from .resilience import CircuitBreaker, backoff_delay
from .schemas import AnalysisDraft, ArchitectureDraft, ResearchDraft, SyntheticDraft
from .settings import AISettings

__all__ = ["AIServiceOrchestrator", "AIStatus", "AuditRecord", "ProviderStatus", "attempt_cause", "describe_attempts"]

OFFLINE_MODEL = "offline-advisor"
_SEVERITY = ("diverging", "overfitting", "plateau", "underfitting", "noisy", "healthy", "unknown")


@dataclass
class AuditRecord:
    """One provider call (or cache hit): what was asked, what came back, what it cost. Never a key."""

    time: float
    task: str
    provider: str
    model: str
    latency_ms: float
    input_tokens: int
    output_tokens: int
    cost_usd: float
    outcome: str
    cache_hit: bool = False
    prompt: str = ""
    output: str = ""


@dataclass
class _Stats:
    calls: int = 0
    errors: int = 0
    latencies: deque = None
    last_error: str | None = None  # the cause in words (ProviderError.cause): never a server's text or a key
    last_error_at: float | None = None
    consecutive_errors: int = 0

    def __post_init__(self):
        self.latencies = deque(maxlen=20)

    def failed(self, cause: str) -> None:
        self.errors += 1
        self.consecutive_errors += 1
        self.last_error, self.last_error_at = cause, time.time()


class ProviderStatus(BaseModel):
    """One provider in ``GET /v1/ai/status``: its configuration and health. Never a key."""

    configured: bool = Field(description="an API key is set")
    enabled: bool = Field(description="not turned off (FORGEML_<PROVIDER>_ENABLED)")
    model: str
    base_url_host: str | None = Field(default=None, description="the host calls go to (no path, no key)")
    calls: int = Field(description="calls made since the server started (retries and repairs count)")
    errors: int = Field(description="calls that failed since the server started")
    recent_latency_ms: float | None = Field(default=None, description="mean latency of the last 20 calls")
    breaker: Literal["closed", "open", "half-open"] = Field(
        description="the circuit breaker: 'open' after repeated errors (calls are skipped until retry_at), "
        "'half-open' while one trial call may go out, 'closed' otherwise"
    )
    last_error: str | None = Field(
        default=None,
        description="the cause of the last failed call, in words, e.g. '401 unauthorized: the API key was "
        "rejected', '429 rate limited', '503 service unavailable', 'connection refused', 'timed out after 30 s', "
        "'invalid response: not JSON'; null when no call has failed. Never text a server sent, never a key",
    )
    last_error_at: float | None = Field(default=None, description="when the last call failed (Unix time)")
    consecutive_errors: int = Field(default=0, description="failed calls in a row since the last success")
    retry_at: float | None = Field(
        default=None, description="while the breaker is open: when a trial call will be let through (Unix time)"
    )
    cost_usd: float = 0.0
    input_tokens: int = 0
    output_tokens: int = 0


class AIStatus(BaseModel):
    """``GET /v1/ai/status``: every provider (and ``local``, the offline advisor), the routes and the spend."""

    providers: dict[str, ProviderStatus]
    routes: dict[str, list[str]] = Field(description="task -> the providers asked, in order; 'local' ends each")
    budget_usd: float | None = None
    spent_usd: float = 0.0
    consensus: bool = False
    cache: Literal["disk", "memory", "off"]


_ONLY_PROVIDERS: contextvars.ContextVar[frozenset | None] = contextvars.ContextVar(
    "forgeml_only_providers", default=None
)


class AIServiceOrchestrator:
    """Route AI tasks to providers. ``AIServiceOrchestrator()`` reads its settings from the environment;
    pass ``settings=`` or keyword overrides (any :class:`AISettings` field) to change them.

    ``providers=`` injects ready-made provider objects (by name), e.g. for tests.
    """

    def __init__(
        self, settings: AISettings | None = None, *, providers=None, local: LocalAdvisor | None = None, **overrides
    ):
        self.settings = settings if settings is not None else AISettings.from_env(**overrides)
        if settings is not None and overrides:
            self.settings = settings.model_copy(update=overrides)
        if providers is None:
            from .models import build_provider

            providers = {name: build_provider(name, cfg) for name, cfg in self.settings.providers.items()}
        self._providers: dict[str, RemoteProvider] = dict(providers)
        self.local = local if local is not None else LocalAdvisor()
        self.ledger = CostLedger(dict(self.settings.prices), self.settings.budget_usd)
        s = self.settings
        self._breakers = {name: CircuitBreaker(s.breaker_threshold, s.breaker_cooldown) for name in self._providers}
        self._stats = {name: _Stats() for name in [*self._providers, "local"]}
        self._audit: deque[AuditRecord] = deque(maxlen=1000)
        self.listeners: list = []  # callables given each AuditRecord (e.g. the server's metrics)
        self.cache = None
        if s.cache_enabled:
            path = Path(s.cache_dir) / "ai_cache.sqlite" if s.cache_dir is not None else None
            self.cache = ResponseCache(
                path,
                max_entries=s.cache_max_entries,
                max_age=s.cache_max_age,
                audit_max_rows=s.audit_max_rows,
                audit_max_age=s.audit_max_age,
            )

    # ------------------------------------------------------------------ status
    def status(self) -> dict:
        """Each provider's configuration and health (never a key), the routes, and the spend so far: a dict
        that fits :class:`AIStatus`. A provider's ``last_error`` is the cause of its last failed call in words."""
        providers = {}
        for name, provider in self._providers.items():
            cfg = provider.config
            stats = self._stats[name]
            spend = self.ledger.by_provider.get(name)
            breaker = self._breakers[name]
            wait = breaker.seconds_until_retry()
            providers[name] = {
                "configured": cfg.api_key is not None and bool(cfg.api_key.get_secret_value()),
                "enabled": cfg.enabled,
                "model": cfg.model,
                "base_url_host": urlparse(cfg.base_url).hostname if cfg.base_url else None,
                "calls": stats.calls,
                "errors": stats.errors,
                "recent_latency_ms": round(sum(stats.latencies) / len(stats.latencies), 1) if stats.latencies else None,
                "breaker": breaker.state,
                "last_error": stats.last_error,
                "last_error_at": stats.last_error_at,
                "consecutive_errors": stats.consecutive_errors,
                "retry_at": round(time.time() + wait, 3) if wait else None,
                "cost_usd": round(spend.cost_usd, 6) if spend else 0.0,
                "input_tokens": spend.input_tokens if spend else 0,
                "output_tokens": spend.output_tokens if spend else 0,
            }
        local = self._stats["local"]
        providers["local"] = {
            "configured": True,
            "enabled": True,
            "model": OFFLINE_MODEL,
            "base_url_host": None,
            "calls": local.calls,
            "errors": local.errors,
            "recent_latency_ms": round(sum(local.latencies) / len(local.latencies), 1) if local.latencies else None,
            "breaker": "closed",
            "last_error": local.last_error,
            "last_error_at": local.last_error_at,
            "consecutive_errors": local.consecutive_errors,
            "retry_at": None,
            "cost_usd": 0.0,
            "input_tokens": 0,
            "output_tokens": 0,
        }
        return {
            "providers": providers,
            "routes": {task: self.settings.route(task) for task in self.settings.routes},
            "budget_usd": self.settings.budget_usd,
            "spent_usd": round(self.ledger.total_usd, 6),
            "consensus": self.settings.consensus,
            "cache": "disk" if self.cache is not None and self.cache.path else ("memory" if self.cache else "off"),
        }

    def route(self, task: str) -> list[str]:
        """The provider chain for ``task``, narrowed by :meth:`only_providers` where that is in effect."""
        chain = self.settings.route(task)
        only = _ONLY_PROVIDERS.get()
        return chain if only is None else [p for p in chain if p in only or p == "local"]

    @contextlib.contextmanager
    def only_providers(self, names):
        """Within the block (and tasks it starts), use only ``names`` (the offline advisor always stays last)."""
        token = _ONLY_PROVIDERS.set(frozenset(names) if names is not None else None)
        try:
            yield self
        finally:
            _ONLY_PROVIDERS.reset(token)

    def audit(self, limit: int = 100) -> list[dict]:
        """The latest call records, newest first."""
        return [asdict(r) for r in list(self._audit)[::-1][:limit]]

    async def aclose(self) -> None:
        for provider in self._providers.values():
            await provider.aclose()
        if self.cache is not None:
            self.cache.close()

    # -------------------------------------------------------------------- tasks
    async def generate_synthetic_data(
        self, model_type: str, existing_data_sample, target_count: int, *, labels=None, use_cache: bool = True
    ) -> SyntheticDataResponse:
        """New training samples like ``existing_data_sample`` (rows of numbers; for a classifier the last
        column is the label, or pass ``labels=``, or a list of ``{"features", "label"}`` objects)."""
        if target_count < 0:
            raise ValueError(f"target_count must be >= 0, got {target_count}")
        sample = parse_sample(model_type, existing_data_sample, labels)
        classifier = model_type.lower() in CLASSIFIER_TYPES
        notes = list(sample.notes)
        count = target_count
        if count > self.settings.max_synthetic:
            notes.append(f"requested {target_count} samples; capped at {self.settings.max_synthetic} (max_synthetic)")
            count = self.settings.max_synthetic
        payload = {
            "model_type": model_type,
            "sample": hashlib.sha256(
                np.ascontiguousarray(sample.features).tobytes() + repr(sample.label_set).encode()
            ).hexdigest(),
            "labels": None
            if sample.labels is None
            else hashlib.sha256(repr(sample.labels.tolist()).encode()).hexdigest(),
            "count": count,
        }

        async def remote(provider, deadline):
            return await self._remote_synthetic(
                provider, model_type, sample, classifier, target_count, count, notes, deadline
            )

        def local():
            result = self.local.synthetic_data(model_type, sample.features, sample.labels, count)
            kept, rejected = check_synthetic(result.samples, sample, classifier)
            return SyntheticDataResponse(
                provider="local",
                model=OFFLINE_MODEL,
                offline=True,
                samples=kept,
                requested=target_count,
                accepted=len(kept),
                rejected=len(rejected),
                rejections=rejected,
                notes=notes + list(result.notes),
            )

        return await self._run("synthetic_data", payload, remote, local, use_cache, SyntheticDataResponse)

    async def _remote_synthetic(self, provider, model_type, sample, classifier, requested, count, notes, deadline):
        s = self.settings
        notes = list(notes)
        asked = min(count, s.remote_chunk * s.max_remote_calls)
        if asked < count:
            notes.append(
                f"asked {provider.name} for {asked} samples ({s.max_remote_calls} calls of at most {s.remote_chunk}); "
                f"{count - asked} fewer than requested"
            )
        data, cut = summarise_for_prompt(sample, s.max_sample_rows, s.max_sample_bytes)
        notes.extend(n for n in cut if n not in notes)
        chunks = [min(s.remote_chunk, asked - i) for i in range(0, asked, s.remote_chunk)] or [0]

        async def one(n):
            system, user = prompts.synthetic_prompt(model_type, data, n, sample.label_set)
            return await self._structured_call(
                provider, "synthetic_data", system, user, SyntheticDraft, lambda d, r: d, deadline
            )

        drafts = await asyncio.gather(*(one(n) for n in chunks if n > 0))
        candidates = [c for d in drafts for c in d.samples]
        kept, rejected = check_synthetic(candidates, sample, classifier)
        if len(kept) > count:
            kept = kept[:count]
        return SyntheticDataResponse(
            provider=provider.name,
            model=provider.model,
            samples=kept,
            requested=requested,
            accepted=len(kept),
            rejected=len(rejected),
            rejections=rejected,
            notes=notes,
        )

    async def analyze_model_reasoning(
        self,
        model_description: str,
        performance_metrics,
        *,
        context: TrainingContext | dict | None = None,
        use_cache: bool = True,
    ) -> ModelAnalysisResponse:
        """Diagnose a training run from its metrics and recommend typed changes.

        ``context`` (a :class:`~forgeml.specs.TrainingContext` or a dict that validates as one) tells the analyst
        what the curves do not: the optimizer and its weight-decay mode, input and per-layer statistics, and the
        changes already tried with their verdicts. Every provider asked (and the offline advisor) gets it, and it
        is part of the cache key, so runs with different contexts never share an answer."""
        metrics = (
            performance_metrics
            if isinstance(performance_metrics, TrainingMetrics)
            else TrainingMetrics.model_validate(performance_metrics)
        )
        if context is not None and not isinstance(context, TrainingContext):
            context = TrainingContext.model_validate(context)
        payload = {"description": model_description, "metrics": metrics.model_dump_json()}
        if context is not None:  # without one, the key stays what it was before contexts existed
            payload["context"] = context.model_dump_json()

        def local():
            result = self.local.analyze(model_description, metrics, context)
            return ModelAnalysisResponse(
                provider="local",
                model=OFFLINE_MODEL,
                offline=True,
                diagnosis=result.diagnosis,
                evidence=result.evidence,
                recommendations=result.recommendations,
            )

        async def remote(provider, deadline):
            system, user = prompts.analysis_prompt(model_description, metrics, context)
            draft = await self._structured_call(
                provider, "analysis", system, user, AnalysisDraft, lambda d, r: d, deadline
            )
            return ModelAnalysisResponse(
                provider=provider.name,
                model=provider.model,
                diagnosis=draft.diagnosis,
                evidence=draft.evidence,
                recommendations=draft.recommendations,
            )

        if self.settings.consensus:
            return await self._consensus_analysis(payload, remote, local, use_cache)
        return await self._run("analysis", payload, remote, local, use_cache, ModelAnalysisResponse)

    async def get_latest_research_insights(
        self,
        domain: str,
        recency: str = "month",
        question: str | None = None,
        diagnosis: str | None = None,
        *,
        use_cache: bool = True,
    ) -> ResearchInsightsResponse:
        """Techniques from research for ``domain`` (and the run's ``diagnosis``), with citations."""
        payload = {"domain": domain, "recency": recency, "question": question, "diagnosis": diagnosis}

        def local():
            insights = self.local.research(domain, question=question, diagnosis=diagnosis)
            citations = _unique_citations(c for i in insights for c in i.citations)
            return ResearchInsightsResponse(
                provider="local",
                model=OFFLINE_MODEL,
                offline=True,
                domain=domain,
                insights=insights,
                citations=citations,
            )

        async def remote(provider, deadline):
            system, user = prompts.research_prompt(domain, recency, question, diagnosis)
            draft, reply = await self._structured_call(
                provider, "research", system, user, ResearchDraft, lambda d, r: (d, r), deadline
            )
            citations = _provider_citations(reply.extras) or _unique_citations(
                c for i in draft.insights for c in i.citations
            )
            return ResearchInsightsResponse(
                provider=provider.name,
                model=provider.model,
                domain=domain,
                insights=draft.insights,
                citations=citations,
                search_results=list(reply.extras.get("search_results") or []),
            )

        return await self._run("research", payload, remote, local, use_cache, ResearchInsightsResponse)

    async def suggest_architectures(
        self,
        model_description: str,
        current: ModelSpec | None = None,
        input_size: int | list[int] = 784,
        num_classes: int = 10,
        k: int = 3,
        *,
        use_cache: bool = True,
    ) -> ArchitectureSuggestionsResponse:
        """``k`` candidate ``ModelSpec``s for the task; any that does not fit it is dropped with the reason."""
        if num_classes < 1 or k < 1:
            raise ValueError(f"num_classes and k must be positive, got {num_classes} and {k}")
        payload = {
            "description": model_description,
            "current": current.model_dump_json() if current is not None else None,
            "input_size": input_size,
            "num_classes": num_classes,
            "k": k,
        }

        def local():
            candidates = self.local.architectures(model_description, current, input_size, num_classes, k=k)
            kept, dropped = _check_candidates(
                ((c.spec.model_dump(), c.rationale) for c in candidates), input_size, num_classes
            )
            return ArchitectureSuggestionsResponse(
                provider="local", model=OFFLINE_MODEL, offline=True, candidates=kept, dropped=dropped
            )

        def validate(draft, reply):
            kept, dropped = _check_candidates(
                ((c.spec, c.rationale) for c in draft.candidates), input_size, num_classes
            )
            if not kept:
                reasons = "; ".join(d.reason for d in dropped) or "no candidates"
                raise ValueError(f"none of the candidates fits the task: {reasons}")
            return kept[:k], dropped

        async def remote(provider, deadline):
            system, user = prompts.architecture_prompt(model_description, current, input_size, num_classes, k)
            kept, dropped = await self._structured_call(
                provider, "architecture", system, user, ArchitectureDraft, validate, deadline
            )
            return ArchitectureSuggestionsResponse(
                provider=provider.name, model=provider.model, candidates=kept, dropped=dropped
            )

        return await self._run("architecture", payload, remote, local, use_cache, ArchitectureSuggestionsResponse)

    async def comprehensive_enhancement(
        self,
        model_description: str,
        training_data_sample,
        performance_metrics,
        *,
        model_type: str = "classifier",
        target_count: int | None = None,
        domain: str = "general",
    ):
        """Synthetic data, analysis and research at once; returns the three responses in that order."""
        metrics = (
            performance_metrics
            if isinstance(performance_metrics, TrainingMetrics)
            else TrainingMetrics.model_validate(performance_metrics or {})
        )
        count = target_count if target_count is not None else len(training_data_sample or [])
        return tuple(
            await asyncio.gather(
                self.generate_synthetic_data(model_type, training_data_sample, count),
                self.analyze_model_reasoning(model_description, metrics),
                self.get_latest_research_insights(domain),
            )
        )

    # ------------------------------------------------------------- the routing
    def _cache_key(self, task: str, payload: dict) -> str:
        usable = [
            p for p in self.route(task) if p == "local" or (p in self._providers and self._providers[p].configured)
        ]
        routed = [f"{p}:{self._providers[p].model}" if p in self._providers else p for p in usable]
        return request_key(task, {**payload, "route": routed})

    def _from_cache(self, task, key, response_cls):
        if self.cache is None:
            return None
        raw = self.cache.get(key)
        if raw is None:
            return None
        response = response_cls.model_validate_json(raw)
        response.cached = True
        self._record(
            AuditRecord(time.time(), task, response.provider, response.model, 0.0, 0, 0, 0.0, "cache hit", True)
        )
        return response

    def _to_cache(self, task, key, response) -> None:
        """Cache ``response``, unless a provider failed on the way to it (a rate limit, an outage): a degraded
        answer is not served again; the next identical request tries the providers afresh."""
        if any(a.outcome in _DEGRADED for a in response.attempts):
            return
        if self.cache is not None:
            self.cache.put(key, task, response.model_dump_json(), self.settings.cache_ttl.get(task, 3600))

    async def _run(self, task, payload, remote, local, use_cache, response_cls):
        key = self._cache_key(task, payload)
        if use_cache:
            hit = self._from_cache(task, key, response_cls)
            if hit is not None:
                return hit
        await self._warm_up(self.route(task))
        deadline = time.monotonic() + self.settings.task_deadline
        attempts: list[ProviderAttempt] = []
        for name in self.route(task):
            if name == "local":
                response = await self._run_local(task, local)
                attempts.append(ProviderAttempt(provider="local", outcome="answered", detail="the offline advisor"))
                break
            skip = self._skip_reason(name)
            if skip is not None:
                attempts.append(skip)
                continue
            try:
                response = await remote(self._providers[name], deadline)
            except BudgetExceeded as exc:
                attempts.append(_budget_attempt(name, exc))
                continue
            except ProviderError as exc:
                attempts.append(_failed_attempt(name, exc))
                continue
            attempts.append(ProviderAttempt(provider=name, outcome="answered"))
            break
        response.attempts = attempts
        self._to_cache(task, key, response)
        return response

    async def _warm_up(self, names) -> None:
        """Import the SDKs of the providers a task may call (in threads), before its deadline starts: an import
        that takes seconds on a busy machine must not eat the time the task has for its calls."""
        warm = [
            self._providers[n].warm_up()
            for n in names
            if n in self._providers and self._skip_reason(n) is None and hasattr(self._providers[n], "warm_up")
        ]
        if warm:
            await asyncio.gather(*warm)

    def _skip_reason(self, name: str) -> ProviderAttempt | None:
        provider = self._providers.get(name)
        if provider is None:
            return ProviderAttempt(provider=name, outcome="unknown", detail="no such provider")
        if not provider.config.enabled:
            return ProviderAttempt(provider=name, outcome="not_configured", detail="disabled")
        if not provider.configured:
            return ProviderAttempt(
                provider=name, outcome="not_configured", detail=f"no API key ({type(provider).key_env})"
            )
        if self._breakers[name].state == "open":
            return ProviderAttempt(provider=name, outcome="circuit_open", detail=self._circuit_words(name))
        return None

    def _circuit_words(self, name: str) -> str:
        """An open breaker in words: ``"circuit open: 429 rate limited (3 errors in a row), retrying after
        12:03:05"`` (local time)."""
        stats, breaker = self._stats[name], self._breakers[name]
        last = f": {stats.last_error}" if stats.last_error else ""
        words = f"circuit open{last} ({stats.consecutive_errors} errors in a row)"
        wait = breaker.seconds_until_retry()
        if wait:
            words += f", retrying after {time.strftime('%H:%M:%S', time.localtime(time.time() + wait))}"
        return words

    async def _run_local(self, task, local):
        start = time.perf_counter()
        stats = self._stats["local"]
        stats.calls += 1
        response = await asyncio.to_thread(local)  # CPU work stays off the event loop
        latency = (time.perf_counter() - start) * 1000
        stats.latencies.append(latency)
        self._record(AuditRecord(time.time(), task, "local", OFFLINE_MODEL, latency, 0, 0, 0.0, "ok"))
        return response

    async def _consensus_analysis(self, payload, remote, local, use_cache):
        key = self._cache_key("analysis", {**payload, "consensus": True})
        if use_cache:
            hit = self._from_cache("analysis", key, ModelAnalysisResponse)
            if hit is not None:
                return hit
        await self._warm_up(self.route("analysis"))
        deadline = time.monotonic() + self.settings.task_deadline
        attempts, calls, names = [], [], []
        for name in self.route("analysis"):
            if name == "local":
                continue
            skip = self._skip_reason(name)
            if skip is not None:
                attempts.append(skip)
                continue
            names.append(name)
            calls.append(remote(self._providers[name], deadline))
        results = await asyncio.gather(*calls, return_exceptions=True)
        answers = []
        for name, result in zip(names, results):
            if isinstance(result, BaseException):
                if isinstance(result, BudgetExceeded):
                    attempts.append(_budget_attempt(name, result))
                elif isinstance(result, ProviderError):
                    attempts.append(_failed_attempt(name, result))
                else:
                    raise result
            else:
                answers.append(result)
                attempts.append(ProviderAttempt(provider=name, outcome="answered"))
        answers.append(await self._run_local("analysis", local))
        attempts.append(ProviderAttempt(provider="local", outcome="answered", detail="the offline advisor"))
        merged = merge_analyses(answers)
        merged.attempts = attempts
        self._to_cache("analysis", key, merged)
        return merged

    # ----------------------------------------------------------- one provider
    async def _structured_call(self, provider, task, system, user, draft_cls, validate, deadline):
        """Ask ``provider`` for a ``draft_cls`` JSON object, with retries, one repair round and the budget check.

        When its breaker is half-open, the first call is the breaker's one trial; whatever ends this method
        (an answer, a failure, an unusable answer, the budget, a cancellation) resolves the trial, so a breaker
        never stays half-open with no trial allowed."""
        call = _Call(provider, task, system, user, draft_cls, validate, deadline, [Message("user", user)])
        try:
            return await self._call_with_retries(call)
        finally:
            self._release_trial(call)

    async def _call_with_retries(self, call: _Call):
        """The policy: within the deadline, with the breaker's permission and the budget's, send; a failure is
        recorded, then repaired once (bad output) or retried after a backoff (a retryable error) or raised; an
        answer that does not validate gets the same one repair round."""
        warm_up = getattr(call.provider, "warm_up", None)
        if warm_up is not None:
            await warm_up()  # the SDK's import, off the event loop and outside the call's timeout
        while True:
            remaining = self._time_left(call)
            self._take_permission(call)
            self._check_budget(call)
            reply, error, latency = await self._send(call, remaining)
            if error is not None:
                self._record_failure(call, error, latency)
                if isinstance(error, BadOutput) and self._repair(call, error.raw or "(no usable output)", error.detail):
                    continue
                delay = self._retry_delay(call, error)
                if delay is None:
                    raise error
                call.attempt += 1
                await asyncio.sleep(delay)
                continue
            result, invalid = self._validate_draft(call, reply, latency)
            if invalid is None:
                return result
            if self._repair(call, reply.raw_text, _short(invalid, 1500)):
                continue
            raise BadOutput(
                call.provider.name,
                f"the output failed validation after a repair request: {_short(invalid)}",
                raw=reply.raw_text,
                cause=_SCHEMA_MISFIT,
            ) from None

    def _time_left(self, call: _Call) -> float:
        """Seconds left before the task's deadline; past it, raise the call's last failure (what really went
        wrong) or, when nothing was tried yet, a ``ProviderTimeout`` saying the provider was not tried."""
        remaining = call.deadline - time.monotonic()
        if remaining > 0:
            return remaining
        if call.last_error is not None:
            raise call.last_error
        limit = self.settings.task_deadline
        raise ProviderTimeout(
            call.provider.name,
            f"the {call.task} deadline of {limit:g}s passed",
            cause=f"not tried: the {call.task} deadline of {limit:g} s had passed",
        )

    def _take_permission(self, call: _Call) -> None:
        """Ask the provider's breaker to let a call out, or raise ``CircuitOpen``. Permission given by a
        half-open breaker is its one trial, held by ``call`` until a success, a failure or
        :meth:`_release_trial`; a repair or a retry within the trial needs no second permission."""
        if call.trial_held:
            return
        breaker = self._breakers[call.provider.name]
        half_open = breaker.state == "half-open"
        if not breaker.allow():
            raise CircuitOpen(call.provider.name, "circuit breaker open", cause=self._circuit_words(call.provider.name))
        call.trial_held = half_open

    def _release_trial(self, call: _Call) -> None:
        """Give back a half-open trial that ``call`` still holds (it ended neither in success nor failure)."""
        if call.trial_held:
            self._breakers[call.provider.name].release_trial()
            call.trial_held = False

    def _check_budget(self, call: _Call) -> None:
        """Raise ``BudgetExceeded`` before sending when the call's worst case would pass the budget."""
        s = self.settings
        prompt_chars = len(call.system) + sum(len(m.content) for m in call.messages)
        if not self.ledger.can_afford(call.provider.model, prompt_chars, s.max_output_tokens):
            raise BudgetExceeded(
                f"budget of ${s.budget_usd:.4f} would be exceeded (spent ${self.ledger.total_usd:.4f}); "
                f"not calling {call.provider.name}"
            )

    async def _send(self, call: _Call, remaining: float):
        """One request to the provider, within the call timeout (and what is left of the deadline): returns
        ``(reply, None, latency_ms)``, or ``(None, error, latency_ms)`` with any failure as a ``ProviderError``."""
        s, provider = self.settings, call.provider
        stats = self._stats[provider.name]
        timeout = min(s.call_timeout, remaining)
        start = time.perf_counter()
        stats.calls += 1
        reply = error = None
        try:
            reply = await asyncio.wait_for(
                provider.complete(
                    system=call.system,
                    messages=list(call.messages),
                    schema=call.draft_cls,
                    schema_name=call.task,
                    timeout=timeout,
                    max_output_tokens=s.max_output_tokens,
                ),
                timeout=timeout + 1.0,  # a client that ignores its own timeout is cut off a second later
            )
        except TimeoutError:
            error = ProviderTimeout(provider.name, f"no answer within {timeout:.1f}s", timeout=timeout)
        except ProviderError as exc:
            error = exc
        except Exception as exc:  # noqa: BLE001 - a client that breaks on a strange reply is a failed call
            error = _unexpected(provider, exc)
        latency = (time.perf_counter() - start) * 1000
        stats.latencies.append(latency)
        return reply, error, latency

    def _record_failure(self, call: _Call, error: ProviderError, latency: float) -> None:
        """Book a failed request: the provider's stats, the tokens an unusable reply still cost, the call log,
        and (unless the model merely answered badly) a failure for the breaker, which ends a held trial."""
        name, model = call.provider.name, call.provider.model
        call.last_error = error
        self._stats[name].failed(error.cause)
        spent = getattr(error, "usage", None)
        if spent is not None:
            self.ledger.record(name, model, spent.input_tokens, spent.output_tokens, spent.reported_cost_usd)
        self._log_call(
            call.task,
            name,
            model,
            latency,
            f"error: {type(error).__name__}: {error.detail}",
            prompt=call.user,
            output=getattr(error, "raw", ""),
        )
        if not isinstance(error, BadOutput):
            self._breakers[name].record_failure()
            call.trial_held = False

    @staticmethod
    def _repair(call: _Call, said: str, problem: str) -> bool:
        """The one repair round: unless it was used, show the model what it ``said`` and what was wrong with it
        (``problem``) and return True (ask again); otherwise return False."""
        if call.repaired:
            return False
        call.messages += [Message("assistant", said), Message("user", prompts.repair_prompt(problem))]
        call.repaired = True
        return True

    def _retry_delay(self, call: _Call, error: ProviderError) -> float | None:
        """Seconds to wait before retrying after ``error`` (Retry-After when the server sent one, else jittered
        exponential backoff), or None: not retryable, retries used up, or the wait would pass the deadline."""
        s = self.settings
        if not error.retryable or call.attempt >= s.max_retries:
            return None
        delay = backoff_delay(call.attempt, s.backoff_base, s.backoff_max, error.retry_after)
        return delay if time.monotonic() + delay < call.deadline else None

    def _validate_draft(self, call: _Call, reply, latency: float):
        """Book an answer's cost, then check it against the draft schema and the task's own checks. Returns
        ``(result, None)`` after booking the success (breaker closed, trial ended), or ``(None, exc)`` after
        booking a schema misfit (no breaker failure: the service worked, the model answered badly)."""
        name = call.provider.name
        stats, usage = self._stats[name], reply.usage
        cost = self.ledger.record(
            name, reply.model or call.provider.model, usage.input_tokens, usage.output_tokens, usage.reported_cost_usd
        )
        log = dict(usage=usage, cost=cost, prompt=call.user, output=reply.raw_text)
        try:
            result = call.validate(call.draft_cls.model_validate(reply.data), reply)
        except (ValidationError, ValueError) as exc:
            stats.failed(_SCHEMA_MISFIT)
            call.last_error = BadOutput(name, f"the output failed validation: {_short(exc)}", cause=_SCHEMA_MISFIT)
            self._log_call(call.task, name, reply.model, latency, f"invalid output: {_short(exc)}", **log)
            return None, exc
        self._breakers[name].record_success()
        call.trial_held = False
        stats.consecutive_errors = 0
        self._log_call(call.task, name, reply.model, latency, "ok", **log)
        return result, None

    def _log_call(self, task, provider, model, latency, outcome, *, usage=None, cost=0.0, prompt="", output=""):
        """Audit one provider call; prompts and outputs are kept (truncated), keys never reach here."""
        tokens_in = usage.input_tokens if usage is not None else 0
        tokens_out = usage.output_tokens if usage is not None else 0
        record = AuditRecord(
            time.time(),
            task,
            provider,
            model,
            latency,
            tokens_in,
            tokens_out,
            cost,
            outcome,
            prompt=prompt[:4000],
            output=(output or "")[:4000],
        )
        self._record(record)

    def _record(self, record: AuditRecord) -> None:
        self._audit.append(record)
        for listener in self.listeners:
            listener(record)
        if self.cache is not None and self.cache.path is not None:
            self.cache.add_audit(asdict(record))


# ------------------------------------------------------------------ helpers
@dataclass
class _Call:
    """One structured call in progress: what is asked, the conversation so far, and where the policy stands."""

    provider: RemoteProvider
    task: str
    system: str
    user: str
    draft_cls: type[BaseModel]
    validate: object  # (draft, reply) -> the task's result; raises ValueError when the draft does not fit the task
    deadline: float  # time.monotonic() by which the task must be answered
    messages: list[Message]
    attempt: int = 0  # retries made
    repaired: bool = False  # the one repair round was used
    last_error: ProviderError | None = None
    trial_held: bool = False  # this call holds its half-open breaker's one trial


_DEGRADED = ("failed", "circuit_open", "budget_exceeded")  # attempt outcomes where a provider let the task down
_SCHEMA_MISFIT = "invalid response: did not fit the schema"
_CAUSE_END = " | "  # in a failed attempt's detail: the cause in words, then the error's type and message


def _failed_attempt(name: str, exc: ProviderError) -> ProviderAttempt:
    """``detail`` is the cause in words, then (after :data:`_CAUSE_END`) the error's type and message."""
    return ProviderAttempt(
        provider=name, outcome="failed", detail=f"{exc.cause}{_CAUSE_END}{type(exc).__name__}: {exc.detail}"
    )


def _unexpected(provider, exc: Exception) -> ProviderError:
    """A provider's client raised something other than a typed error. One that could not read the reply (a
    malformed body: an empty one, JSON of the wrong shape) is ``ProviderUnavailable`` with the cause
    ``"invalid response: malformed reply"``, retried like a 5xx; a missing SDK is ``"its SDK is not installed"``;
    anything else is ``"unexpected error (Type)"``. Either way the task goes on to the next provider."""
    from .providers._common import redact

    key = provider.config.api_key.get_secret_value() if provider.config.api_key is not None else None
    message = redact(f"{type(exc).__name__}: {_short(exc)}", key)
    if isinstance(exc, ImportError):  # require_sdk's message says what to install
        return ProviderError(provider.name, message, cause="its SDK is not installed")
    if isinstance(exc, ValueError | TypeError | AttributeError | LookupError):  # JSONDecodeError, ValidationError
        return ProviderUnavailable(
            provider.name, f"the reply could not be read: {message}", cause="invalid response: malformed reply"
        )
    return ProviderError(provider.name, message, cause=f"unexpected error ({type(exc).__name__})")


def _budget_attempt(name: str, exc: BudgetExceeded) -> ProviderAttempt:
    return ProviderAttempt(provider=name, outcome="budget_exceeded", detail=f"budget used up ({exc})")


def attempt_cause(attempt: ProviderAttempt) -> str:
    """What happened to one provider of a task, in words: ``"401 unauthorized: the API key was rejected"``,
    ``"circuit open: 429 rate limited (3 errors in a row), retrying after 12:03:05"``, ``"budget used up"``,
    ``"no API key (OPENAI_API_KEY)"``, ``"answered"``."""
    if attempt.outcome == "answered":
        return "answered"
    if attempt.outcome == "failed":
        return attempt.detail.split(_CAUSE_END, 1)[0] or "failed"
    if attempt.outcome == "budget_exceeded":
        return "budget used up"
    return attempt.detail or attempt.outcome.replace("_", " ")


def describe_attempts(attempts) -> str | None:
    """One sentence on how a task was answered when a configured provider let it down, else None: e.g.
    ``"the configured providers (anthropic, gemini) failed: anthropic 401 unauthorized: the API key was
    rejected; gemini connection refused; the offline advisor answered instead"`` or ``"anthropic 429 rate
    limited; gemini answered instead"``. Providers without a key (or turned off) are left out: the offline
    advisor answering for them is the plan, not a fallback."""
    tried = [a for a in attempts if a.provider != "local" and a.outcome not in ("not_configured", "unknown")]
    let_down = [a for a in tried if a.outcome in _DEGRADED]
    if not let_down:
        return None
    causes = "; ".join(f"{a.provider} {attempt_cause(a)}" for a in let_down)
    answered = [a.provider for a in attempts if a.outcome == "answered"]
    remote = [p for p in answered if p != "local"]
    if not remote:
        names = ", ".join(dict.fromkeys(a.provider for a in tried))
        many = len({a.provider for a in tried}) > 1
        subject = f"the configured providers ({names})" if many else f"the configured provider ({names})"
        return f"{subject} failed: {causes}; the offline advisor answered instead"
    return f"{causes}; {', '.join(remote)} answered instead"


def _short(exc, limit: int = 300) -> str:
    text = str(exc).replace("\n", " ")
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _unique_citations(citations) -> list[Citation]:
    seen, out = set(), []
    for c in citations:
        key = (c.title, c.url, c.arxiv_id)
        if key not in seen:
            seen.add(key)
            out.append(c)
    return out


def _provider_citations(extras: dict) -> list[Citation]:
    """Perplexity's own sources: ``search_results`` (title, url, date) and/or ``citations`` (URLs), all kept."""
    out = []
    for result in extras.get("search_results") or []:
        date = str(result.get("date") or "")
        year = int(date[:4]) if date[:4].isdigit() else None
        out.append(
            Citation(title=result.get("title") or result.get("url") or "source", url=result.get("url"), year=year)
        )
    known = {c.url for c in out}
    for url in extras.get("citations") or []:
        if url not in known:
            out.append(Citation(title=url, url=url))
    return out


def _check_candidates(items, input_size, num_classes):
    kept, dropped = [], []
    for raw, rationale in items:
        try:
            spec = ModelSpec.model_validate(raw)
            spec.check_task(input_size, num_classes)
        except (ValidationError, ValueError) as exc:
            dropped.append(DroppedCandidate(reason=_short(exc), raw=raw))
            continue
        kept.append(ArchitectureCandidate(spec=spec, rationale=rationale))
    return kept, dropped


def _action_value(action):
    for field in ("factor", "value", "p", "n", "max_norm", "x"):
        if hasattr(action, field):
            return field, getattr(action, field)
    return None, None


def merge_analyses(answers: list[ModelAnalysisResponse]) -> ModelAnalysisResponse:
    """One analysis from several: the majority diagnosis (ties go to the more severe), recommendations
    grouped by action with confidence raised by agreement, and conflicting values resolved conservatively
    (the smallest change: the learning-rate factor nearest 1, the median of other values)."""
    votes: dict[str, int] = {}
    for a in answers:
        votes[a.diagnosis] = votes.get(a.diagnosis, 0) + 1
    top = max(votes.values())
    diagnosis = min((d for d, v in votes.items() if v == top), key=_SEVERITY.index)
    groups: dict[str, list[tuple[Recommendation, str]]] = {}
    for a in answers:
        for rec in a.recommendations:
            groups.setdefault(rec.action.action, []).append((rec, a.provider))
    merged = []
    for name, items in groups.items():
        providers = sorted({p for _, p in items})
        field, _ = _action_value(items[0][0].action)
        chosen = items[0][0]
        if field is not None:
            values = [getattr(r.action, field) for r, _ in items]
            if name == "scale_learning_rate":
                target = min(values, key=lambda f: abs(math.log(f)))
            else:
                target = sorted(values)[(len(values) - 1) // 2]
            chosen = next(r for r, _ in items if getattr(r.action, field) == target)
        mean_conf = sum(r.confidence for r, _ in items) / len(items)
        confidence = min(1.0, mean_conf + 0.1 * (len(providers) - 1))
        rationale = chosen.rationale + (
            f" (agreed by {', '.join(providers)})" if len(providers) > 1 else f" ({providers[0]})"
        )
        merged.append(Recommendation(action=chosen.action, rationale=rationale, confidence=round(confidence, 3)))
    merged.sort(key=lambda r: -r.confidence)
    evidence = [e for a in answers for e in a.evidence]
    names = "+".join(a.provider for a in answers)
    return ModelAnalysisResponse(
        provider=names,
        model="consensus",
        offline=all(a.offline for a in answers),
        diagnosis=diagnosis,
        evidence=list(dict.fromkeys(evidence)),
        recommendations=merged,
    )
