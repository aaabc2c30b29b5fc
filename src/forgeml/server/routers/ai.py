"""``/v1/ai/*``: the orchestrator's tasks over HTTP (rate-limited per client)."""

from __future__ import annotations

import asyncio
from typing import Literal

from fastapi import APIRouter, HTTPException, Query, Request

from ...ai.errors import AIError
from ..schemas import AnalyzeRequest, EnhanceRequest, SyntheticRequest

router = APIRouter(prefix="/v1/ai", tags=["ai"])


def _orchestrator(request: Request):
    return request.app.state.orchestrator


def _bad_input(exc: Exception) -> HTTPException:
    return HTTPException(422, f"{type(exc).__name__}: {exc}")


@router.get("/status")
async def ai_status(request: Request) -> dict:
    """Each provider: configured or offline, model, calls, errors, latency, cost so far. Never a key."""
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
    """Diagnose a training run from its metrics and recommend typed changes."""
    try:
        response = await _orchestrator(request).analyze_model_reasoning(
            body.model_description, body.performance_metrics
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


@router.post("/enhance")
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
