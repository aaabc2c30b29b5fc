"""``AIEnhancedTrainer``: training with AI services as teachers, in a closed loop within guardrails.

While an epoch trains (in a worker thread), the AI requests it launched run on
the event loop: a review of the set-up before the first epoch, synthetic data,
an analysis of the run every ``optimization_guidance_frequency`` epochs (the
curves plus a :class:`~forgeml.specs.TrainingContext`: optimizer and weight-decay
mode, input statistics, per-layer gradient and update statistics, the changes
tried so far), research every ``research_update_interval`` epochs. An answer is
applied at the next epoch boundary through the guardrails of
:mod:`.guardrails`, at most ``max_changes_per_round`` changes at a time.

One hypothesis at a time: the changes of a round go on trial together, from a
saved state, and are kept only if the next ``trial_epochs`` epochs confirm they
helped on validation data (:mod:`.trials`); otherwise the run is rolled back to
the saved state and the changes are recorded as reverted. While a trial runs,
further advice is recorded, not applied. Synthetic data is mixed in only when a
short A/B from the same state shows it helps on validation data. Every change,
refusal, verdict and experiment is an :class:`AIEvent`. A provider failure
never stops training (the orchestrator falls back to the next provider, and at
last to the offline advisor); a diverging loss restores the last good epoch and
lowers the learning rate (the base :class:`Trainer`'s divergence policy), and
reverts a change on trial.
"""

from __future__ import annotations

import asyncio
import copy
import math
import time

from ..data.dataloader import DataLoader
from ..data.dataset import Dataset
from ..nn.dropout import Dropout
from ..specs import ChangeRecord, InputStats, TrainingMetrics
from .ai_config import PROVIDERS, AIEnhancedConfig
from .ai_context import build_context, num_classes, sample_arrays
from .events import AIEvent, EnhancedTrainingMetrics, SyntheticDataStats
from .guardrails import Refused, guardrail_for
from .keep_or_revert import TrialsMixin
from .standardize import InputStandardizer, StandardizingMixin
from .synthetic_ab import SyntheticDataMixin
from .trainer import DivergencePolicy, Trainer

__all__ = [
    "PROVIDERS",
    "AIEnhancedConfig",
    "AIEnhancedTrainer",
    "AIEvent",
    "EnhancedTrainingMetrics",
    "SyntheticDataStats",
]


class AIEnhancedTrainer(TrialsMixin, SyntheticDataMixin, StandardizingMixin, Trainer):
    """A :class:`Trainer` whose run is guided by AI services (see the module documentation).

    ``trainer.fit(train, val, epochs)`` is the synchronous form of
    ``await trainer.train_with_ai_guidance(train, val, epochs)``; both return
    :class:`EnhancedTrainingMetrics`. ``training_data`` and ``validation_data``
    are datasets or ``DataLoader``s. ``device``, ``amp`` and the other keyword
    arguments of :class:`Trainer` are passed through: the run, the candidates of
    :meth:`explore_architectures` and synthetic samples all live on that device.
    A switch of optimizer on advice (Adam -> AdamW) replaces ``trainer.optimizer``.
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
        self.config = config if config is not None else AIEnhancedConfig()
        trainer_kwargs.setdefault(
            "divergence",
            DivergencePolicy(
                factor=self.config.divergence_factor,
                lr_factor=self.config.divergence_lr_factor,
                max_recoveries=self.config.max_divergence_recoveries,
                on_exhausted="stop",
            ),
        )
        trainer_kwargs.setdefault("track_best", True)
        trainer_kwargs.setdefault("layer_stats", True)
        super().__init__(model, optimizer, loss_fn, **trainer_kwargs)
        self._orchestrator = orchestrator
        self.batch_size = batch_size
        self.events: list[AIEvent] = []
        self.changes: list[ChangeRecord] = []
        self.synthetic = None
        self.diagnosis: str | None = None
        self.epochs_planned: int | None = None
        self.rebuild_loader = False
        self._pending: list[tuple[str, int, asyncio.Task]] = []
        self._consumers = {
            "setup": self._use_analysis,
            "analysis": self._use_analysis,
            "research": self._use_research,
            "synthetic_data": self._use_synthetic_data,
        }
        self._finished = False
        self._asked_at: int | None = None
        self._train_dataset = None
        self._val_data = None
        self._val_loader = None
        self._train_loader_now = None
        self._collate = None
        self._trial: dict | None = None
        self._analysis_deferred = False
        self._synthetic_candidates = None
        self._standardizer: InputStandardizer | None = None
        self._inputs: InputStats | None = None
        self._initial_eval: dict | None = None
        self._reverted_epochs: set[int] = set()
        self._extra_steps = 0  # training steps outside the epochs (experiments), for the report's epochs_trained
        self._best_coordinates: InputStandardizer | None = None  # whose coordinates best_state is in (None: raw)

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
            # The offline advisor's seed comes from ForgeML's generator without drawing from it: manual_seed makes
            # runs repeatable, and a guided run shuffles and drops out exactly as a plain one would.
            local = LocalAdvisor(seed=int(default_generator.initial_seed()) % 2**31)
            self._orchestrator = AIServiceOrchestrator(
                settings.model_copy(update={"providers": providers}), local=local
            )
        return self._orchestrator

    @property
    def train_dataset(self):
        """The dataset the training loader draws from (with any synthetic samples mixed in)."""
        return self._train_dataset

    @property
    def epochs_remaining(self) -> int:
        return max(0, (self.epochs_planned or self.epoch) - self.epoch)

    @property
    def steps_per_epoch(self) -> int | None:
        try:
            return len(self._train_loader_now) if self._train_loader_now is not None else None
        except TypeError:
            return None

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
        self._val_data, self._val_loader = validation_data, val_loader
        self._train_loader_now = train_loader
        first_run = self.epoch == 0 and not self.history
        self.epochs_planned = self.epoch + epochs
        self.stop_training = False
        self._finished = False
        if self._standardizer is not None:
            self._standardizer.unfold(self.optimizer)  # folded at the end of the last run: standardise again
            self._sync_best_coordinates()
        self._snapshot()
        if val_loader is not None and self.best_state is None:
            initial = self.track_initial_best(val_loader)
            self._initial_eval = {"epoch": 0, "val_loss": initial["loss"], "val_accuracy": initial["accuracy"]}
        self._call("on_train_begin")
        if first_run and self.config.review_setup:
            self._launch_analysis("setup")
        if self.config.synthetic_data_ratio > 0:
            self._launch("synthetic_data", self._request_synthetic(self._train_dataset))
        try:
            if first_run and self.config.lr_range_test:
                await self._apply_lr_range_test()
            done = 0
            while done < epochs and not self.stop_training:
                await self._apply_ready()
                if self.stop_training:  # an early stop just applied: no further epoch
                    break
                if self._synthetic_candidates is not None:
                    await asyncio.to_thread(self._synthetic_ab)
                if self.rebuild_loader:
                    train_loader = self._train_loader_now = self._make_train_loader()
                    self.rebuild_loader = False
                metrics = await asyncio.to_thread(self.run_epoch, train_loader, val_loader)
                if metrics is None:
                    continue  # a diverged epoch, restored and retried at a lower learning rate (or the run stopped)
                done += 1
                self._after_epoch(metrics)
            self._finished = True  # answers still on their way are recorded, not applied: nothing is left to train
            await self._apply_ready(final=True)
            if self._trial is not None:
                self._close_trial(final=True)
        finally:
            for _, _, task in self._pending:
                task.cancel()
            self._pending.clear()
            if self._active_standardizer() is not None:
                self._fold_standardizer()
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
        """Ask for ``k`` candidate architectures (Grok's role in the seed), train each for up to ``epochs_each``
        epochs on the same data with a fresh optimizer like this one (an Optuna study with a median pruner:
        hopeless candidates stop early), and return a leaderboard: best validation accuracy (then loss) first.
        The data default to those of the last ``fit``."""
        from .architecture_search import search_architectures

        train_data = training_data if training_data is not None else self._train_dataset
        val_data = validation_data if validation_data is not None else self._val_data
        if train_data is None:
            raise ValueError("explore_architectures needs training data (pass it, or call fit first)")
        dataset = train_data.dataset if isinstance(train_data, DataLoader) else train_data
        _, labels, shape = sample_arrays(dataset, 2000)
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
        optimizer_cls, defaults = type(self.optimizer), dict(self.optimizer.defaults)
        return await asyncio.to_thread(
            search_architectures,
            [c.spec for c in response.candidates],
            dataset,
            self._eval_loader(val_data),
            epochs_each=epochs_each,
            make_optimizer=lambda model: optimizer_cls(model.parameters(), **defaults),
            loss_fn=copy.deepcopy(self.loss_fn),
            batch_size=self.batch_size,
            device=self.device,
            amp=self.amp,
            autocast_dtype=self._autocast.fast_dtype if self._autocast is not None else None,
            extras=[{"rationale": c.rationale, "provider": response.provider} for c in response.candidates],
        )

    # ------------------------------------------------------- actions' effects
    def replace_optimizer(self, name: str, keep_state: bool = True) -> str:
        """Switch between Adam and AdamW (coupled L2 <-> decoupled weight decay), keeping the hyper-parameters
        and, with ``keep_state``, the moment estimates. Returns the new optimizer's class name."""
        from ..optim import Adam, AdamW

        classes = {"adam": Adam, "adamw": AdamW}
        old = self.optimizer
        if name not in classes or not isinstance(old, Adam):
            raise Refused(
                f"switching {type(old).__name__} to {name} is not supported: only Adam <-> AdamW keeps the "
                "meaning of the learning rate"
            )
        cls = classes[name]
        if type(old) is cls:
            raise Refused(f"the optimizer is already {cls.__name__}")
        saved = old.state_dict()
        new = cls([{"params": list(g["params"])} for g in old.param_groups])
        if keep_state:
            new.load_state_dict(saved)
        else:
            for group, old_group in zip(new.param_groups, saved["param_groups"]):
                group.update({k: v for k, v in old_group.items() if k != "params"})
        for group in new.param_groups:
            group["decoupled_weight_decay"] = cls is AdamW
        if self.scheduler is not None and getattr(self.scheduler, "optimizer", None) is old:
            self.scheduler.optimizer = new
        self.optimizer = new
        return cls.__name__ + (" (moments kept)" if keep_state else "")

    def run_lr_range_test(self, min_lr: float, max_lr: float, steps: int):
        """A learning-rate range test from the current state (restored afterwards); sets the suggested rate."""
        from .lr_finder import find_learning_rate

        if self._train_loader_now is None:
            raise Refused("no training data yet")
        result = find_learning_rate(self, self._train_loader_now, min_lr=min_lr, max_lr=max_lr, steps=steps)
        self._extra_steps += len(result.lrs)
        suggested, before = result.suggested_lr, self.learning_rate
        if suggested is None:
            raise Refused("the range test's first loss was not finite: no rate to suggest")
        steepest = f", steepest descent at {result.steepest_lr:.3g}" if result.steepest_lr is not None else ""
        diverged = " (stopped when the loss diverged)" if result.stopped_early else ""
        found = (
            f"loss lowest at lr {result.min_loss_lr:.3g}{steepest} over {len(result.lrs)} steps from {min_lr:.3g} "
            f"to {max_lr:.3g}{diverged}; suggested {suggested:.3g} (a decade below the minimum, Smith 2017)"
        )
        self._event("lr_range_test", "experiment", "trainer", reason=found)
        low, high = self.config.min_learning_rate, self.config.max_learning_rate
        if not low <= suggested <= high:
            raise Refused(f"the suggested learning rate {suggested:.3g} is outside [{low}, {high}]")
        if math.isclose(suggested, before, rel_tol=1e-6):
            raise Refused(f"the range test suggests {suggested:.3g}, the rate already in use")
        for group in self.optimizer.param_groups:
            group["lr"] = suggested
            group["initial_lr"] = suggested
        if self.scheduler is not None and hasattr(self.scheduler, "base_lrs"):
            self.scheduler.base_lrs = [suggested for _ in self.scheduler.base_lrs]
        return before, suggested

    # -------------------------------------------------------------- the epochs

    def _on_recovery(self, record: dict) -> None:
        if self._trial is not None and not record.get("gave_up"):
            self._revert_trial(f"the loss diverged during the trial ({record['reason']})")
        if record.get("gave_up"):
            self._event(
                "divergence", "divergence", "trainer", reason=f"{record['reason']}; recovery limit reached, stopping"
            )
            return
        self._event(
            "divergence",
            "divergence",
            "trainer",
            applied=True,
            before=record["lr_before"],
            after=record["lr_after"],
            reason=f"{record['reason']}: restored the last good epoch and lowered the learning rate",
            action={"action": "scale_learning_rate", "factor": self.config.divergence_lr_factor},
        )

    def _after_epoch(self, metrics) -> None:
        e = self.epoch
        if self._trial is not None and e - self._trial["epoch"] >= self._trial_length():
            self._close_trial()
        # No analysis after the last epoch: its advice could not be applied. (Research is still asked and recorded.)
        last = self.epochs_planned is not None and e >= self.epochs_planned
        if not last and (e % self.config.optimization_guidance_frequency == 0 or self._analysis_deferred):
            if self._trial is None or not self.config.keep_or_revert:
                self._analysis_deferred = False
                self._launch_analysis("analysis")
            else:
                self._analysis_deferred = True  # asked for once the trial's verdict is in
        if e % self.config.research_update_interval == 0:
            self._launch(
                "research", self.orchestrator.get_latest_research_insights(self.config.domain, diagnosis=self.diagnosis)
            )

    # --------------------------------------------------------------- AI tasks
    def _launch(self, task: str, coro) -> None:
        self._pending.append((task, self.epoch, asyncio.ensure_future(coro)))

    def _launch_analysis(self, task: str) -> None:
        self._launch(
            task,
            self.orchestrator.analyze_model_reasoning(
                self._description(), TrainingMetrics.from_history(self.lineage()), context=build_context(self)
            ),
        )

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
            self._consumers[task_name](task.result(), task_name)
            self._asked_at = None
        self._pending = keep

    def _use_analysis(self, response, task: str = "analysis") -> None:
        self.diagnosis = response.diagnosis
        self._event(
            task,
            "diagnosis",
            response.provider,
            reason=f"{response.diagnosis}: " + "; ".join(response.evidence[:3]),
        )
        round_ = _Round(self.config.max_changes_per_round)
        for rec in response.recommendations:
            self._apply(rec.action, task, response.provider, rec.rationale, rec.confidence, round_)

    def _use_research(self, response, task: str = "research") -> None:
        # A technique from research changes the run only when the last analysis found a problem to solve.
        problem = self.diagnosis not in (None, "healthy", "unknown")
        round_ = _Round(self.config.max_changes_per_round)
        for insight in response.insights:
            if insight.action is not None and self.config.auto_apply and problem:
                self._apply(
                    insight.action, task, response.provider, insight.summary, None, round_, citations=insight.citations
                )
            else:
                why = (
                    insight.technique
                    if problem or insight.action is None
                    else f"{insight.technique} (no problem diagnosed to apply it to)"
                )
                self._event(
                    task,
                    "insight",
                    response.provider,
                    action=insight.action.model_dump() if insight.action else None,
                    rationale=insight.summary,
                    reason=why,
                    citations=insight.citations,
                )

    # ------------------------------------------------------------ guardrails
    def _apply(self, action, task, provider, rationale, confidence, round_, citations=()) -> None:
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
        if self.stop_training:
            self._event(task, "recommendation", provider, reason="the run is stopping early: recorded only", **event)
            return
        try:
            rail = guardrail_for(action)
        except Refused as refusal:
            self._event(task, "recommendation", provider, reason=f"refused: {refusal}", **event)
            return
        if self._trial is not None and self.config.keep_or_revert and self._trial["epoch"] != self.epoch:
            on_trial = ", ".join(r.action["action"] for r in self._trial["records"])
            self._event(task, "recommendation", provider, reason=f"recorded only: {on_trial} is on trial", **event)
            return
        refusal = round_.refusal(rail.setting)
        if refusal is not None:
            self._event(task, "recommendation", provider, reason=refusal, **event)
            return
        opened = False
        if rail.on_trial and self.config.keep_or_revert and self._trial is None:
            self._open_trial()
            opened = True
        try:
            before, after = rail.apply(self, action)
        except Refused as refusal:
            if opened and not self._trial["records"]:
                self._trial = None
            self._event(task, "recommendation", provider, reason=f"refused: {refusal}", **event)
            return
        round_.applied(rail.setting)
        self._event(
            task, "recommendation", provider, applied=True, before=before, after=after, reason="applied", **event
        )
        record = ChangeRecord(
            epoch=self.epoch,
            action=action.model_dump(),
            provider=provider,
            metric="val_loss" if self._val_loader is not None else "train_loss",
            before=self._best_so_far(),
            verdict="on_trial" if rail.on_trial and self.config.keep_or_revert else "final",
            reason=rationale,
        )
        self.changes.append(record)
        if rail.on_trial and self._trial is not None:
            self._trial["records"].append(record)

    async def _apply_lr_range_test(self) -> None:
        round_ = _Round(self.config.max_changes_per_round)
        from ..specs import FindLearningRate

        self._apply(
            FindLearningRate(), "lr_range_test", "trainer", "asked for in the config (lr_range_test=True)", None, round_
        )

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
        classes = num_classes(self)
        if classes:
            parts.append(f"num_classes={classes}")
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
            divergence_recoveries=len(self.recoveries),
            epochs_trained=round(len(self.history) + self._extra_steps / max(self.steps_per_epoch or 1, 1), 3),
            stopped_early=self.stop_training,
            changes=[c.model_copy() for c in self.changes],
        )


class _Round:
    """One answer's changes: at most ``limit``, and one per setting."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.settings: set[str] = set()

    def refusal(self, setting: str) -> str | None:
        if setting in self.settings:
            return f"{setting} was already changed this round"
        if len(self.settings) >= self.limit:
            return f"one hypothesis at a time: {self.limit} change(s) this round already"
        return None

    def applied(self, setting: str) -> None:
        self.settings.add(setting)
