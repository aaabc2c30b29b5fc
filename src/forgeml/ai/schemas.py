"""What a remote model is asked to return for each task (the "drafts").

The orchestrator validates a provider's JSON against these, checks the values
(sample shapes, known labels, layer sizes), and wraps the result in the public
response of :mod:`forgeml.specs` with its provenance.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from ..specs import Action, Diagnosis, Recommendation, ResearchInsight

__all__ = ["AnalysisDraft", "ArchitectureDraft", "CandidateDraft", "ResearchDraft", "SampleDraft", "SyntheticDraft"]


class _Draft(BaseModel):
    model_config = ConfigDict(extra="ignore")


class SampleDraft(_Draft):
    features: list[float]
    label: int | float | str | None = None


class SyntheticDraft(_Draft):
    samples: list[SampleDraft]


class AnalysisDraft(_Draft):
    diagnosis: Diagnosis
    evidence: list[str] = Field(default_factory=list)
    recommendations: list[Recommendation] = Field(
        default_factory=list,
        description="ranked, the most promising first; at most two are asked for, more are accepted (the trainer "
        "applies the limit)",
    )


class ResearchDraft(_Draft):
    insights: list[ResearchInsight]


class CandidateDraft(_Draft):
    spec: dict[str, Any] = Field(description="a ModelSpec: {'layers': [{'type': ..., 'args': {...}}, ...]}")
    rationale: str


class ArchitectureDraft(_Draft):
    candidates: list[CandidateDraft]


ActionDraft = Action  # the same typed vocabulary everywhere
