"""The record of an AI-guided run: events, synthetic-data statistics, and the run's report.

:class:`AIEvent` is one thing the AI layer did (advice applied, refused or
reverted, a verdict on a trial, an insight, data, a recovery, a provider that
failed); :class:`EnhancedTrainingMetrics` is what
``AIEnhancedTrainer.fit`` returns. Pydantic models, JSON-serialisable, so the
platform stores and serves them as they are.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from ..specs import ChangeRecord, Citation, TrainingMetrics

__all__ = ["AIEvent", "EnhancedTrainingMetrics", "SyntheticDataStats"]


class AIEvent(BaseModel):
    """Something the AI layer did during training: advice applied or refused, an insight, data, a recovery, or
    (``provider_error``) a provider that failed, with its cause in words and who answered instead."""

    time: float
    epoch: int = Field(description="the epoch boundary at which the event happened")
    requested_epoch: int | None = Field(default=None, description="the epoch after which the AI was asked")
    task: str
    kind: Literal[
        "recommendation",
        "insight",
        "synthetic_data",
        "divergence",
        "provider_error",
        "diagnosis",
        "architecture",
        "verdict",
        "experiment",
    ] = Field(description="'verdict': a change kept or reverted after its trial; 'experiment': an A/B or a range test")
    provider: str = ""
    action: dict[str, Any] | None = None
    applied: bool = False
    reason: str = ""
    before: Any = None
    after: Any = None
    rationale: str = ""
    confidence: float | None = None
    citations: list[Citation] = Field(default_factory=list)


class SyntheticDataStats(BaseModel):
    requested: int = 0
    accepted: int = 0
    rejected: int = 0
    provider: str = ""
    mixed_in_at_epoch: int | None = None
    rejection_reasons: list[str] = Field(default_factory=list)
    notes: list[str] = Field(default_factory=list)


class EnhancedTrainingMetrics(BaseModel):
    """The run: per-epoch history, every AI event, synthetic-data statistics, provider usage and cost,
    the best epoch and the final test figures. JSON-serialisable (NaN as strings)."""

    model_config = ConfigDict(ser_json_inf_nan="strings")

    history: list[dict[str, Any]] = Field(default_factory=list)
    events: list[AIEvent] = Field(default_factory=list)
    synthetic: SyntheticDataStats | None = None
    provider_usage: dict[str, dict[str, Any]] = Field(default_factory=dict)
    total_cost_usd: float = 0.0
    best_epoch: int | None = None
    best_val_loss: float | None = None
    best_val_accuracy: float | None = None
    final_test: dict[str, Any] | None = None
    divergence_recoveries: int = 0
    stopped_early: bool = False
    epochs_trained: float | None = Field(
        default=None,
        description="epochs of training spent, reverted trials and experiments (A/B arms, range tests) included",
    )
    changes: list[ChangeRecord] = Field(
        default_factory=list, description="every change applied on advice, with its trial's verdict"
    )

    def to_training_metrics(self) -> TrainingMetrics:
        return TrainingMetrics.from_history(self.history)

    def applied(self) -> list[AIEvent]:
        return [e for e in self.events if e.applied]

    def summary(self) -> str:
        """A readable account of the run and of what the AI did."""
        lines = [f"{len(self.history)} epochs; best epoch {self.best_epoch}"]
        if self.best_val_accuracy is not None:
            lines[0] += f" (val accuracy {self.best_val_accuracy:.2%}, val loss {self.best_val_loss:.4f})"
        if self.final_test:
            acc = self.final_test.get("accuracy")
            lines.append(
                f"test: loss {self.final_test['loss']:.4f}" + (f", accuracy {acc:.2%}" if acc is not None else "")
            )
        if self.synthetic:
            s = self.synthetic
            lines.append(
                f"synthetic data from {s.provider}: {s.accepted} accepted, {s.rejected} rejected of {s.requested} requested"
                + (f", mixed in after epoch {s.mixed_in_at_epoch}" if s.mixed_in_at_epoch is not None else "")
            )
        lines.append(
            f"AI events: {len(self.events)} ({len(self.applied())} changes applied); cost ${self.total_cost_usd:.4f}"
        )
        for e in self.events:
            what = e.action.get("action") if e.action else e.kind
            recorded = ("insight", "diagnosis", "verdict", "experiment")
            status = "applied" if e.applied else ("recorded" if e.kind in recorded else "not applied")
            detail = f"{e.before} -> {e.after}" if e.applied and e.before is not None else e.reason
            lines.append(f"  epoch {e.epoch:3d} [{e.task}/{e.provider}] {what}: {status}. {detail}".rstrip())
        for c in self.changes:
            lines.append(f"  change at epoch {c.epoch}: {c.action.get('action')} -> {c.verdict}. {c.reason}".rstrip())
        return "\n".join(lines)
