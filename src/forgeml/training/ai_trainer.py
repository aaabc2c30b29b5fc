"""``AIEnhancedTrainer``: training with AI services as teachers, in a closed loop within guardrails.

While an epoch trains (in a worker thread), the AI requests it launched run on
the event loop: synthetic data at the start, an analysis of the metric history
every ``optimization_guidance_frequency`` epochs, research every
``research_update_interval`` epochs. An answer is applied at the next epoch
boundary, within the guardrails of :class:`AIEnhancedConfig`; every change (or
refusal) is an :class:`AIEvent` with its before and after values, provider and
rationale. A provider failure never stops training (the orchestrator falls
back to the next provider, and at last to the offline advisor), and a
``provider_error`` event says which provider failed how and who answered
instead; a diverging loss restores the last good epoch and lowers the learning
rate instead of ending the run.
"""

from __future__ import annotations

import asyncio
import copy
import math
import time
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from ..backend.device import HOST_ARRAY, device_of, is_array, to_device, to_host
from ..data.dataloader import DataLoader
from ..data.dataset import ConcatDataset, Dataset, TensorDataset
from ..nn.dropout import Dropout
from ..nn.loss import CrossEntropyLoss
from ..optim import lr_scheduler
from ..specs import Citation, TrainingMetrics
from ..tensor import Tensor
from .trainer import Trainer, TrainingDivergedError

__all__ = ["AIEnhancedConfig", "AIEnhancedTrainer", "AIEvent", "EnhancedTrainingMetrics", "SyntheticDataStats"]

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


class AIEvent(BaseModel):
    """Something the AI layer did during training: advice applied or refused, an insight, data, a recovery, or
    (``provider_error``) a provider that failed, with its cause in words and who answered instead."""

    time: float
    epoch: int = Field(description="the epoch boundary at which the event happened")
    requested_epoch: int | None = Field(default=None, description="the epoch after which the AI was asked")
    task: str
    kind: Literal[
        "recommendation", "insight", "synthetic_data", "divergence", "provider_error", "diagnosis", "architecture"
    ]
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
            status = "applied" if e.applied else ("recorded" if e.kind in ("insight", "diagnosis") else "not applied")
            detail = f"{e.before} -> {e.after}" if e.applied and e.before is not None else e.reason
            lines.append(f"  epoch {e.epoch:3d} [{e.task}/{e.provider}] {what}: {status}. {detail}".rstrip())
        return "\n".join(lines)


# The trainer setting each action changes; at most one change per setting per guidance round.
_SETTING = {
    "scale_learning_rate": "learning_rate",
    "set_weight_decay": "weight_decay",
    "set_dropout": "dropout",
    "set_batch_size": "batch_size",
    "enable_grad_clipping": "grad_clipping",
    "set_label_smoothing": "label_smoothing",
    "switch_scheduler": "scheduler",
    "early_stop": "stopping",
    "restore_best_checkpoint": "weights",
}


def _within(value, bounds) -> bool:
    return bounds[0] <= value <= bounds[1]


class AIEnhancedTrainer(Trainer):
    """A :class:`Trainer` whose run is guided by AI services (see the module documentation).

    ``trainer.fit(train, val, epochs)`` is the synchronous form of
    ``await trainer.train_with_ai_guidance(train, val, epochs)``; both return
    :class:`EnhancedTrainingMetrics`. ``training_data`` and ``validation_data``
    are datasets or ``DataLoader``s. ``device``, ``amp`` and the other keyword
    arguments of :class:`Trainer` are passed through: the run, the candidates of
    :meth:`explore_architectures` and synthetic samples all live on that device.
    """

    def __init__(
        self,
        model,
        optimizer,
        config: AIEnhancedConfig | None = None,
        loss_fn=None,
        *,
        orchestrator=None,
        batch_size: int = 64,
        **trainer_kwargs,
    ) -> None:
        super().__init__(model, optimizer, loss_fn, **trainer_kwargs)
        self.config = config if config is not None else AIEnhancedConfig()
        self._orchestrator = orchestrator
        self.batch_size = batch_size
        self.events: list[AIEvent] = []
        self.synthetic = None
        self.diagnosis: str | None = None
        self._pending: list[tuple[str, int, asyncio.Task]] = []
        self._finished = False
        self._asked_at: int | None = None
        self._best_state = None
        self._best_key = None
        self._best_epoch = None
        self._recoveries = 0
        self._train_dataset = None
        self._val_data = None
        self._collate = None
        self._rebuild_loader = False

    # -------------------------------------------------------------- public API
    @property
    def orchestrator(self):
        if self._orchestrator is None:
            from ..ai import AIServiceOrchestrator, AISettings, LocalAdvisor
            from ..backend.random import default_generator

            settings = AISettings.from_env(consensus=self.config.consensus)
            enabled = set(self.config.enabled_providers())
            providers = {
                n: c.model_copy(update={"enabled": c.enabled and n in enabled}) for n, c in settings.providers.items()
            }
            # The offline advisor draws from a seed taken from ForgeML's generator: manual_seed makes runs repeatable.
            local = LocalAdvisor(seed=int(default_generator.numpy.integers(2**31)))
            self._orchestrator = AIServiceOrchestrator(
                settings.model_copy(update={"providers": providers}), local=local
            )
        return self._orchestrator

    def fit(self, training_data, validation_data=None, epochs: int = 10, test_data=None) -> EnhancedTrainingMetrics:
        """Run :meth:`train_with_ai_guidance` to completion (not from inside a running event loop)."""
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return asyncio.run(self.train_with_ai_guidance(training_data, validation_data, epochs, test_data))
        raise RuntimeError("fit() cannot run inside an event loop; use `await trainer.train_with_ai_guidance(...)`")

    async def train_with_ai_guidance(self, training_data, validation_data=None, epochs: int = 10, test_data=None):
        """Train for ``epochs`` epochs under AI guidance; returns :class:`EnhancedTrainingMetrics`.

        The seed's two-argument form ``train_with_ai_guidance(loader, num_epochs)`` is accepted too: a number
        in the place of ``validation_data`` is the epoch count.
        """
        if isinstance(validation_data, int) and not isinstance(validation_data, bool):
            epochs, validation_data = validation_data, None
        if epochs < 1:
            raise ValueError(f"epochs must be >= 1, got {epochs}")
        train_loader = self._train_loader(training_data)
        val_loader = self._eval_loader(validation_data)
        self._val_data = validation_data
        self.stop_training = False
        self._finished = False
        self._snapshot()
        if self._best_state is None and val_loader is not None:
            # The untrained weights are the first candidate for "best": a run that goes wrong from the start
            # (stuck at chance, say) can be restored to them.
            self._best_key = self.evaluate(val_loader)["loss"]
            self._best_state = {k: v.clone() for k, v in self.model.state_dict().items()}
            self._best_epoch = 0
        self._call("on_train_begin")
        if self.config.synthetic_data_ratio > 0:
            self._launch("synthetic_data", self._request_synthetic(self._train_dataset))
        try:
            done = 0
            while done < epochs and not self.stop_training:
                await self._apply_ready()
                if self._rebuild_loader:
                    train_loader = self._make_train_loader()
                    self._rebuild_loader = False
                metrics = await self._epoch(train_loader, val_loader)
                if metrics is None:
                    continue  # a diverged epoch, restored and retried at a lower learning rate
                done += 1
                self._after_epoch(metrics)
            self._finished = True  # answers still on their way are recorded, not applied: nothing is left to train
            await self._apply_ready(final=True)
        finally:
            for _, _, task in self._pending:
                task.cancel()
            self._pending.clear()
            self._call("on_train_end")
        return self._report(test_data)

    async def explore_architectures(
        self,
        k: int = 3,
        epochs_each: int = 2,
        training_data=None,
        validation_data=None,
        input_size=None,
        num_classes: int | None = None,
    ) -> list[dict]:
        """Ask for ``k`` candidate architectures (Grok's role in the seed), train each for ``epochs_each``
        epochs on the same data with a fresh optimizer like this one, and return a leaderboard: best
        validation accuracy (then loss) first. The data default to those of the last ``fit``."""
        from ..nn.spec import build

        train_data = training_data if training_data is not None else self._train_dataset
        val_data = validation_data if validation_data is not None else self._val_data
        if train_data is None:
            raise ValueError("explore_architectures needs training data (pass it, or call fit first)")
        dataset = train_data.dataset if isinstance(train_data, DataLoader) else train_data
        _, labels, shape = _sample_arrays(dataset, 2000)
        if input_size is None:
            input_size = int(shape[0]) if len(shape) == 1 else list(shape)
        if num_classes is None:
            if labels is None or labels.dtype.kind not in "iu":
                raise ValueError("explore_architectures needs num_classes for data without integer labels")
            num_classes = int(labels.max()) + 1
        try:
            current = self.model.to_spec(input_shape=input_size if isinstance(input_size, list) else [input_size])
        except (TypeError, AttributeError, ValueError):
            current = None
        response = await self.orchestrator.suggest_architectures(
            self._description(), current, input_size, num_classes, k
        )
        self._note_fallback("architecture", response)
        self._event(
            "architecture",
            "architecture",
            response.provider,
            reason=f"{len(response.candidates)} candidates, {len(response.dropped)} dropped",
        )
        board = []
        for i, candidate in enumerate(response.candidates):
            model = build(candidate.spec)
            optimizer = type(self.optimizer)(model.parameters(), **self.optimizer.defaults)
            trial = Trainer(
                model,
                optimizer,
                copy.deepcopy(self.loss_fn),
                device=self.device,
                amp=self.amp,
                autocast_dtype=self._autocast.fast_dtype if self._autocast is not None else None,
            )
            loader = (
                train_data
                if isinstance(train_data, DataLoader)
                else DataLoader(train_data, batch_size=self.batch_size, shuffle=True)
            )
            await asyncio.to_thread(trial.fit, loader, self._eval_loader(val_data), epochs_each)
            last = trial.history[-1]
            board.append(
                {
                    "rank": 0,
                    "candidate": i,
                    "spec": candidate.spec.model_dump(),
                    "rationale": candidate.rationale,
                    "parameters": model.num_parameters(),
                    "val_accuracy": last.val_accuracy,
                    "val_loss": last.val_loss,
                    "train_loss": last.train_loss,
                    "provider": response.provider,
                }
            )
        board.sort(
            key=lambda r: (-(r["val_accuracy"] or 0.0), r["val_loss"] if r["val_loss"] is not None else math.inf)
        )
        for rank, row in enumerate(board, 1):
            row["rank"] = rank
        return board

    # ------------------------------------------------------------- the epochs
    async def _epoch(self, train_loader, val_loader):
        self.epoch += 1
        self._call("on_epoch_begin", self.epoch)
        try:
            metrics = await asyncio.to_thread(self._run_epoch, train_loader, val_loader)  # the event loop stays free
        except TrainingDivergedError as exc:
            self.epoch -= 1
            self._recover(f"non-finite loss at step {exc.step}")
            return None
        best_loss = min((m.train_loss for m in self.history if math.isfinite(m.train_loss)), default=None)
        if best_loss is not None and metrics.train_loss > self.config.divergence_factor * best_loss:
            self.restore_last_good()
            self.epoch -= 1
            self._recover(
                f"train loss {metrics.train_loss:.4g} exploded past {self.config.divergence_factor}x the best {best_loss:.4g}"
            )
            return None
        return metrics

    def _recover(self, what: str) -> None:
        self._recoveries += 1
        if self._recoveries > self.config.max_divergence_recoveries:
            self._event("divergence", "divergence", "trainer", reason=f"{what}; recovery limit reached, stopping")
            self.stop_training = True
            return
        before = self.learning_rate
        for group in self.optimizer.param_groups:
            group["lr"] = group["lr"] * self.config.divergence_lr_factor
        self._event(
            "divergence",
            "divergence",
            "trainer",
            applied=True,
            before=before,
            after=self.learning_rate,
            reason=f"{what}: restored the last good epoch and lowered the learning rate",
            action={"action": "scale_learning_rate", "factor": self.config.divergence_lr_factor},
        )

    def _after_epoch(self, metrics) -> None:
        self.history.append(metrics)
        self._snapshot()
        key = metrics.val_loss if metrics.val_loss is not None else metrics.train_loss
        if math.isfinite(key) and (self._best_key is None or key < self._best_key):
            self._best_key = key
            self._best_state = {k: v.clone() for k, v in self.model.state_dict().items()}
            self._best_epoch = self.epoch
        self.log(self._describe(metrics))
        self._call("on_epoch_end", metrics)
        e = self.epoch
        if e % self.config.optimization_guidance_frequency == 0:
            self._launch(
                "analysis",
                self.orchestrator.analyze_model_reasoning(
                    self._description(), TrainingMetrics.from_history(self.history)
                ),
            )
        if e % self.config.research_update_interval == 0:
            self._launch(
                "research", self.orchestrator.get_latest_research_insights(self.config.domain, diagnosis=self.diagnosis)
            )

    # --------------------------------------------------------------- AI tasks
    def _launch(self, task: str, coro) -> None:
        self._pending.append((task, self.epoch, asyncio.ensure_future(coro)))

    async def _apply_ready(self, final: bool = False) -> None:
        if (self.config.wait_for_ai or final) and self._pending:
            await asyncio.wait([t for _, _, t in self._pending])
        keep = []
        for task_name, asked_at, task in self._pending:
            if not task.done():
                keep.append((task_name, asked_at, task))
                continue
            if task.cancelled():
                continue
            exc = task.exception()
            if exc is not None:
                self._event(task_name, "provider_error", "", reason=f"{type(exc).__name__}: {exc}; training continues")
                continue
            self._asked_at = asked_at
            self._note_fallback(task_name, task.result())
            getattr(self, f"_use_{task_name}")(task.result())
            self._asked_at = None
        self._pending = keep

    def _use_analysis(self, response) -> None:
        self.diagnosis = response.diagnosis
        self._event(
            "analysis",
            "diagnosis",
            response.provider,
            reason=f"{response.diagnosis}: " + "; ".join(response.evidence[:3]),
        )
        changed: set[str] = set()
        for rec in response.recommendations:
            self._apply(rec.action, "analysis", response.provider, rec.rationale, rec.confidence, changed)

    def _use_research(self, response) -> None:
        # A technique from research changes the run only when the last analysis found a problem to solve.
        problem = self.diagnosis not in (None, "healthy", "unknown")
        changed: set[str] = set()
        for insight in response.insights:
            if insight.action is not None and self.config.auto_apply and problem:
                self._apply(
                    insight.action,
                    "research",
                    response.provider,
                    insight.summary,
                    None,
                    changed,
                    citations=insight.citations,
                )
            else:
                why = (
                    insight.technique
                    if problem or insight.action is None
                    else f"{insight.technique} (no problem diagnosed to apply it to)"
                )
                self._event(
                    "research",
                    "insight",
                    response.provider,
                    action=insight.action.model_dump() if insight.action else None,
                    rationale=insight.summary,
                    reason=why,
                    citations=insight.citations,
                )

    def _use_synthetic_data(self, response) -> None:
        self.synthetic = SyntheticDataStats(
            requested=response.requested,
            accepted=response.accepted,
            rejected=response.rejected,
            provider=response.provider,
            rejection_reasons=[r.reason for r in response.rejections[:50]],
            notes=response.notes,
        )
        if response.accepted and not self._finished:
            self._mix_in(response.samples)
            self.synthetic.mixed_in_at_epoch = self.epoch
        self._event(
            "synthetic_data",
            "synthetic_data",
            response.provider,
            applied=bool(response.accepted),
            reason=f"{response.accepted} accepted, {response.rejected} rejected of {response.requested} requested",
        )

    # ------------------------------------------------------------ guardrails
    def _apply(self, action, task, provider, rationale, confidence, changed, citations=()) -> None:
        name = action.action
        setting = _SETTING[name]
        event = {
            "action": action.model_dump(),
            "rationale": rationale,
            "confidence": confidence,
            "citations": list(citations),
        }
        if not self.config.auto_apply:
            self._event(task, "recommendation", provider, reason="auto_apply is off: recorded only", **event)
            return
        if self._finished:
            self._event(task, "recommendation", provider, reason="arrived after the last epoch: recorded only", **event)
            return
        if setting in changed:
            self._event(task, "recommendation", provider, reason=f"{setting} was already changed this round", **event)
            return
        try:
            before, after = getattr(self, f"_do_{name}")(action)
        except _Refused as refusal:
            self._event(task, "recommendation", provider, reason=f"refused: {refusal}", **event)
            return
        changed.add(setting)
        self._event(
            task, "recommendation", provider, applied=True, before=before, after=after, reason="applied", **event
        )

    def _do_scale_learning_rate(self, action):
        low, high = self.config.lr_factor_range
        if not low <= action.factor <= high:
            raise _Refused(f"factor {action.factor} is outside the allowed range [{low}, {high}]")
        before = self.learning_rate
        after = before * action.factor
        if not self.config.min_learning_rate <= after <= self.config.max_learning_rate:
            raise _Refused(
                f"the learning rate {after:.3g} would leave [{self.config.min_learning_rate}, {self.config.max_learning_rate}]"
            )
        for group in self.optimizer.param_groups:
            group["lr"] = group["lr"] * action.factor
        if self.scheduler is not None and hasattr(self.scheduler, "base_lrs"):
            self.scheduler.base_lrs = [lr * action.factor for lr in self.scheduler.base_lrs]
        return before, after

    def _do_set_weight_decay(self, action):
        if not _within(action.value, self.config.weight_decay_range):
            raise _Refused(f"weight decay {action.value} is outside {self.config.weight_decay_range}")
        before = self.optimizer.param_groups[0].get("weight_decay")
        for group in self.optimizer.param_groups:
            group["weight_decay"] = action.value
        return before, action.value

    def _do_set_dropout(self, action):
        if not _within(action.p, self.config.dropout_range):
            raise _Refused(f"dropout {action.p} is outside {self.config.dropout_range}")
        layers = [m for m in self.model.modules() if isinstance(m, Dropout)]
        if not layers:
            raise _Refused("the model has no Dropout layer")
        before = layers[0].p
        for m in layers:
            m.p = action.p
        return before, action.p

    def _do_set_batch_size(self, action):
        if not _within(action.n, self.config.batch_size_range):
            raise _Refused(f"batch size {action.n} is outside {self.config.batch_size_range}")
        if self._train_dataset is None:
            raise _Refused("the training data is not a dataset this trainer can re-batch")
        before, self.batch_size = self.batch_size, action.n
        self._rebuild_loader = True
        return before, action.n

    def _do_enable_grad_clipping(self, action):
        if not _within(action.max_norm, self.config.grad_clip_range):
            raise _Refused(f"max_norm {action.max_norm} is outside {self.config.grad_clip_range}")
        before, self.max_grad_norm = self.max_grad_norm, action.max_norm
        return before, action.max_norm

    def _do_set_label_smoothing(self, action):
        if not _within(action.x, self.config.label_smoothing_range):
            raise _Refused(f"label smoothing {action.x} is outside {self.config.label_smoothing_range}")
        if not isinstance(self.loss_fn, CrossEntropyLoss):
            raise _Refused(f"label smoothing needs a CrossEntropyLoss, the loss is {type(self.loss_fn).__name__}")
        before, self.loss_fn.label_smoothing = self.loss_fn.label_smoothing, action.x
        return before, action.x

    def _do_switch_scheduler(self, action):
        cls = getattr(lr_scheduler, action.name, None)
        if cls is None:
            raise _Refused(f"unknown scheduler {action.name}")
        try:
            scheduler = cls(self.optimizer, **action.params)
        except (TypeError, ValueError) as exc:
            raise _Refused(f"{action.name}({action.params}) cannot be built: {exc}") from None
        before = type(self.scheduler).__name__ if self.scheduler is not None else None
        self.scheduler = scheduler
        self.scheduler_interval = "step" if action.name == "OneCycleLR" else "epoch"
        return before, action.name

    def _do_early_stop(self, action):
        self.stop_training = True
        return False, True

    def _do_restore_best_checkpoint(self, action):
        if self._best_state is None:
            raise _Refused("no best checkpoint yet")
        self.model.load_state_dict(self._best_state)
        where = "the initial weights" if self._best_epoch == 0 else f"the weights of epoch {self._best_epoch}"
        return f"the weights of epoch {self.epoch}", where

    # ------------------------------------------------------------ helpers
    def _note_fallback(self, task, response) -> None:
        """A ``provider_error`` event when a configured provider let ``task`` down on the way to ``response``:
        which provider failed how, and who answered instead (the offline advisor, or the next provider)."""
        from ..ai.orchestrator import describe_attempts

        note = describe_attempts(getattr(response, "attempts", None) or [])
        if note is not None:
            self._event(task, "provider_error", getattr(response, "provider", ""), reason=note)

    def _event(self, task, kind, provider, **fields) -> None:
        event = AIEvent(
            time=time.time(),
            epoch=self.epoch,
            requested_epoch=self._asked_at,
            task=task,
            kind=kind,
            provider=provider,
            **fields,
        )
        self.events.append(event)
        self.log(f"  [AI] epoch {event.epoch} {task}/{provider}: {kind} {event.action or ''} {event.reason}".rstrip())

    def _description(self) -> str:
        if self.config.model_description:
            base = self.config.model_description
        else:
            layers = ", ".join(type(m).__name__ for m in self.model.children()) or type(self.model).__name__
            base = f"{type(self.model).__name__} [{layers}] with {self.model.num_parameters():,} parameters"
        group = self.optimizer.param_groups[0]
        dropouts = [m.p for m in self.model.modules() if isinstance(m, Dropout)]
        parts = [
            f"optimizer={type(self.optimizer).__name__}",
            f"lr={group['lr']:.3g}",
            f"weight_decay={group.get('weight_decay', 0)}",
            f"batch_size={self.batch_size}",
        ]
        if dropouts:
            parts.append(f"dropout={dropouts[0]}")
        if self.max_grad_norm:
            parts.append(f"max_norm={self.max_grad_norm}")
        outputs = getattr(list(self.model.modules())[-1], "out_features", None)
        if isinstance(self.loss_fn, CrossEntropyLoss) and outputs:
            parts.append(f"num_classes={outputs}")
        return f"{base}; " + ", ".join(parts)

    def _train_loader(self, data):
        if isinstance(data, DataLoader):
            self._train_dataset = data.dataset
            self._collate = data.collate_fn
            self.batch_size = data.batch_size or self.batch_size
            return data
        if not isinstance(data, Dataset) and not hasattr(data, "__getitem__"):
            raise TypeError(f"training_data must be a Dataset or a DataLoader, got {type(data).__name__}")
        self._train_dataset = data
        self._collate = None
        return self._make_train_loader()

    def _make_train_loader(self):
        """A shuffling loader over the training dataset at the current batch size (rebuilt when advice
        changes the batch size or mixes in synthetic data)."""
        return DataLoader(self._train_dataset, batch_size=self.batch_size, shuffle=True, collate_fn=self._collate)

    def _eval_loader(self, data):
        if data is None or isinstance(data, DataLoader):
            return data
        return DataLoader(data, batch_size=max(self.batch_size, 256))

    async def _request_synthetic(self, dataset):
        features, labels, _ = _sample_arrays(dataset, 400)
        classifier = labels is not None and labels.dtype.kind in "iu"
        target = round(self.config.synthetic_data_ratio * len(dataset))
        return await self.orchestrator.generate_synthetic_data(
            "classifier" if classifier else "regressor",
            features.tolist(),
            target,
            labels=labels.tolist() if labels is not None else None,
        )

    def _mix_in(self, samples) -> None:
        """Add accepted synthetic samples to the training data (never to validation), tagged by position."""
        base = self._train_dataset
        x0, y0 = base[0]
        shape = tuple(x0.shape)
        xs = np.asarray([s.features for s in samples], dtype=x0._data.dtype).reshape((len(samples),) + shape)
        y_dtype = y0._data.dtype if isinstance(y0, Tensor) else np.asarray(y0).dtype
        ys = np.asarray([s.label for s in samples]).astype(y_dtype)
        device = x0.device if isinstance(x0, Tensor) else None  # the real samples' device (a CUDA dataset stays there)
        synthetic = TensorDataset(Tensor(xs).to(device), Tensor(ys).to(device))
        self.synthetic_range = (len(base), len(base) + len(samples))
        if isinstance(base, TensorDataset) and len(base.tensors) == 2:
            from ..ops.shape import cat

            self._train_dataset = TensorDataset(
                cat([base.tensors[0], synthetic.tensors[0]]), cat([base.tensors[1], synthetic.tensors[1]])
            )
        else:
            self._train_dataset = ConcatDataset([base, synthetic])
        self._rebuild_loader = True

    def _report(self, test_data) -> EnhancedTrainingMetrics:
        best = None
        for m in self.history:
            key = m.val_loss if m.val_loss is not None else m.train_loss
            if math.isfinite(key) and (
                best is None or key < (best.val_loss if best.val_loss is not None else best.train_loss)
            ):
                best = m
        status = self.orchestrator.status() if self._orchestrator is not None else {"providers": {}, "spent_usd": 0.0}
        usage = {
            name: {
                k: v
                for k, v in info.items()
                if k in ("calls", "errors", "cost_usd", "input_tokens", "output_tokens", "model")
            }
            for name, info in status["providers"].items()
            if info.get("calls")
        }
        final = self.evaluate(self._eval_loader(test_data)) if test_data is not None else None
        return EnhancedTrainingMetrics(
            history=[m.as_dict() for m in self.history],
            events=list(self.events),
            synthetic=self.synthetic,
            provider_usage=usage,
            total_cost_usd=float(status.get("spent_usd") or 0.0),
            best_epoch=best.epoch if best else None,
            best_val_loss=best.val_loss if best else None,
            best_val_accuracy=best.val_accuracy if best else None,
            final_test=final,
            divergence_recoveries=self._recoveries,
            stopped_early=self.stop_training,
        )


class _Refused(Exception):
    """A recommendation outside the guardrails."""


def _sample_arrays(dataset, limit: int, seed: int = 0):
    """Up to ``limit`` rows of a dataset as (features [n, d] float64, labels [n] or None, sample shape)."""
    n = len(dataset)
    idx = np.sort(np.random.default_rng(seed).choice(n, size=min(n, limit), replace=False))
    if isinstance(dataset, TensorDataset) and len(dataset.tensors) == 2:
        x, y = _host_rows(dataset.tensors[0]._data, idx), _host_rows(dataset.tensors[1]._data, idx)
    else:
        items = [dataset[int(i)] for i in idx]
        x = np.stack([_host(a._data if isinstance(a, Tensor) else a) for a, _ in items])
        y = np.asarray([b.item() if isinstance(b, Tensor) else b for _, b in items])
    shape = x.shape[1:]
    return x.reshape(len(idx), -1).astype(np.float64), (y if y.dtype.kind in "iuf" else None), shape


def _host(value):
    """A NumPy view of ``value`` (a device array is copied to the host)."""
    return to_host(value) if is_array(value) else np.asarray(value)


def _host_rows(array, idx):
    """``array[idx]`` on the host: a device array is indexed where it is, and only those rows come back."""
    if type(array) is HOST_ARRAY:
        return array[idx]
    return to_host(array[to_device(idx, device_of(array))])
