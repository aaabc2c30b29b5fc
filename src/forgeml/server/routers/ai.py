"""``/v1/ai/*``: the orchestrator's tasks over HTTP (rate-limited per client)."""

from __future__ import annotations

import asyncio
from typing import Literal

from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.exceptions import RequestValidationError

from ...ai.errors import AIError
from ...ai.orchestrator import AIStatus
from ..schemas import AnalyzeRequest, EnhanceRequest, SyntheticRequest, error_responses

router = APIRouter(prefix="/v1/ai", tags=["ai"])


def _orchestrator(request: Request):
    return request.app.state.orchestrator


def _bad_input(exc: Exception) -> RequestValidationError:
    """A 422 in the documented shape (a list of errors, as every 422 gives them) for a body the orchestrator
    refused: the body is valid JSON of the right fields, but its data cannot be used (a ragged sample, say)."""
    return RequestValidationError([{"loc": ["body"], "msg": f"{type(exc).__name__}: {exc}", "type": "value_error"}])


@router.get("/status")
async def ai_status(request: Request) -> AIStatus:
    """Each provider: configured or offline, model, calls, errors, latency, cost so far, its circuit breaker,
    and the cause of its last failed call in words (``last_error``: "401 unauthorized: the API key was
    rejected", "429 rate limited", "connection refused", "timed out after 30 s", "invalid response: ...")
    with how many failed in a row and, while the breaker is open, when it retries (``retry_at``). Never a key,
    never text a provider sent."""
    return _orchestrator(request).status()


@router.get("/research")
async def research(
    request: Request,
    domain: str = Query("general", min_length=1, max_length=100),
    recency: Literal["day", "week", "month", "year"] = "month",
    question: str | None = Query(None, max_length=2000),
) -> dict:
    """Research insights for a domain, with citations."""
    response = await _orchestrator(request).get_latest_research_insights(domain, recency, question=question)
    return response.model_dump(mode="json")


@router.post("/analyze")
async def analyze(request: Request, body: AnalyzeRequest) -> dict:
    """Diagnose a training run from its metrics (and its training ``context``, when given) and recommend typed
    changes."""
    try:
        response = await _orchestrator(request).analyze_model_reasoning(
            body.model_description, body.performance_metrics, context=body.context
        )
    except (ValueError, TypeError) as exc:
        raise _bad_input(exc) from None
    return response.model_dump(mode="json")


@router.post("/synthetic-data")
async def synthetic_data(request: Request, body: SyntheticRequest) -> dict:
    """New samples like ``existing_data_sample`` (rows of numbers, the label last for a classifier)."""
    try:
        response = await _orchestrator(request).generate_synthetic_data(
            body.model_type, body.existing_data_sample, body.target_count
        )
    except (ValueError, TypeError) as exc:
        raise _bad_input(exc) from None
    return response.model_dump(mode="json")


@router.post("/enhance", responses=error_responses({502: "The AI services could not answer (every provider failed)."}))
async def enhance(request: Request, body: EnhanceRequest) -> dict:
    """``comprehensive_enhancement``: synthetic data (when a sample is given), analysis and research at once."""
    orchestrator = _orchestrator(request)
    cfg = body.config
    try:
        with orchestrator.only_providers(cfg.ai_providers):
            if body.training_data:
                ratio = cfg.synthetic_data_ratio
                count = max(1, round(len(body.training_data) * ratio)) if ratio else 0
                synthetic, analysis, research = await orchestrator.comprehensive_enhancement(
                    body.model_description,
                    body.training_data,
                    body.performance_metrics,
                    model_type=cfg.model_type,
                    target_count=count,
                    domain=cfg.domain,
                )
            else:  # nothing to imitate: analysis and research only
                synthetic = None
                analysis, research = await asyncio.gather(
                    orchestrator.analyze_model_reasoning(body.model_description, body.performance_metrics),
                    orchestrator.get_latest_research_insights(cfg.domain),
                )
    except (ValueError, TypeError) as exc:
        raise _bad_input(exc) from None
    except AIError as exc:
        raise HTTPException(502, f"the AI services could not answer: {exc}") from None
    providers = sorted({r.provider for r in (synthetic, analysis, research) if r is not None})
    return {
        "model_description": body.model_description,
        "requested_providers": cfg.ai_providers,
        "providers_used": providers,
        "synthetic_data": synthetic.model_dump(mode="json") if synthetic is not None else None,
        "analysis": analysis.model_dump(mode="json"),
        "research": research.model_dump(mode="json"),
    }
