"""AIEnhancedTrainer against scripted providers and the offline advisor: the closed loop and its guardrails."""

import asyncio
import json
import math
import re

import numpy as np
import pytest

import forgeml as fm
from forgeml import nn
from forgeml.ai import AIServiceOrchestrator, AISettings, LocalAdvisor
from forgeml.ai.errors import ProviderUnavailable
from forgeml.data import DataLoader, TensorDataset
from forgeml.optim import SGD, Adam
from forgeml.training import AIEnhancedConfig, AIEnhancedTrainer, EnhancedTrainingMetrics
from tests.ai.stubs import ScriptedProvider


def _data(n=400, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, 10)).astype(np.float32)
    y = (x[:, :2].sum(1) > 0).astype(np.int64)
    cut = int(n * 0.8)
    return TensorDataset(fm.tensor(x[:cut]), fm.tensor(y[:cut])), TensorDataset(fm.tensor(x[cut:]), fm.tensor(y[cut:]))


def _model(p=0.2):
    fm.manual_seed(0)
    return nn.Sequential().add(nn.Linear(10, 16)).add(nn.ReLU()).add(nn.Dropout(p)).add(nn.Linear(16, 2))


def _orchestrator(*providers, **settings):
    base = dict(cache_enabled=False, backoff_base=0.001, backoff_max=0.01, call_timeout=1.0, task_deadline=2.0)
    base.update(settings)
    return AIServiceOrchestrator(AISettings.from_env(env={}, **base), providers={p.name: p for p in providers})


def _analysis(*actions, diagnosis="plateau"):
    return {
        "diagnosis": diagnosis,
        "evidence": ["scripted"],
        "recommendations": [{"action": a, "rationale": "scripted", "confidence": 0.8} for a in actions],
    }


def _trainer(orchestrator, model=None, lr=0.05, **config):
    model = model or _model()
    settings = {"optimization_guidance_frequency": 1, "research_update_interval": 100, "wait_for_ai": True, **config}
    cfg = AIEnhancedConfig(**settings)
    return AIEnhancedTrainer(
        model, SGD(model.parameters(), lr=lr, weight_decay=0.001), cfg, orchestrator=orchestrator, batch_size=32
    )


def test_recommendations_are_applied_within_bounds_and_refused_outside():
    script = _analysis(
        {"action": "scale_learning_rate", "factor": 0.5},
        {"action": "scale_learning_rate", "factor": 0.7},  # the same setting twice in one round
        {"action": "set_weight_decay", "value": 0.5},  # outside [0, 0.1]
        {"action": "set_dropout", "p": 0.3},
        {"action": "enable_grad_clipping", "max_norm": 1.0},
        {"action": "set_label_smoothing", "x": 0.1},
        {"action": "switch_scheduler", "name": "StepLR", "params": {"step_size": 2, "gamma": 0.5}},
        {"action": "switch_scheduler", "name": "CosineAnnealingLR", "params": {"bogus": 1}},
    )
    anthropic = ScriptedProvider("anthropic", [script])
    # the guardrails' bounds alone: no set-up review, no trial, room for every setting in one round
    trainer = _trainer(_orchestrator(anthropic), review_setup=False, keep_or_revert=False, max_changes_per_round=5)
    train, val = _data()
    metrics = trainer.fit(train, val, epochs=2)
    recs = [e for e in metrics.events if e.kind == "recommendation" and e.requested_epoch == 1]
    by_action = {}
    for e in recs:
        by_action.setdefault(e.action["action"], []).append(e)
    lr = by_action["scale_learning_rate"]
    assert lr[0].applied and lr[0].before == pytest.approx(0.05) and lr[0].after == pytest.approx(0.025)
    assert not lr[1].applied and "already changed" in lr[1].reason
    assert trainer.optimizer.param_groups[0]["lr"] == pytest.approx(0.025)
    wd = by_action["set_weight_decay"][0]
    assert not wd.applied and "outside" in wd.reason and trainer.optimizer.param_groups[0]["weight_decay"] == 0.001
    assert by_action["set_dropout"][0].applied and trainer.model[2].p == 0.3
    assert trainer.max_grad_norm == 1.0 and trainer.loss_fn.label_smoothing == 0.1
    sched = by_action["switch_scheduler"]
    assert sched[0].applied and type(trainer.scheduler).__name__ == "StepLR"
    assert not sched[1].applied
    assert all(e.provider == "anthropic" and e.rationale == "scripted" for e in recs)
    assert [c.verdict for c in metrics.changes] == ["final"] * 5  # nothing on trial with keep_or_revert off


SEVEN_CHANGES = (
    {"action": "scale_learning_rate", "factor": 0.5},
    {"action": "scale_learning_rate", "factor": 0.7},
    {"action": "set_weight_decay", "value": 0.5},  # refused by its bound before the round fills up
    {"action": "set_dropout", "p": 0.3},
    {"action": "enable_grad_clipping", "max_norm": 1.0},
    {"action": "set_label_smoothing", "x": 0.1},
    {"action": "switch_scheduler", "name": "StepLR", "params": {"step_size": 2, "gamma": 0.5}},
)


@pytest.mark.parametrize("limit", [1, 2, 3])
def test_one_answer_applies_at_most_max_changes_per_round(limit):
    anthropic = ScriptedProvider("anthropic", [_analysis(*SEVEN_CHANGES)])
    trainer = _trainer(_orchestrator(anthropic), review_setup=False, keep_or_revert=False, max_changes_per_round=limit)
    metrics = trainer.fit(*_data(), epochs=2)
    recs = [e for e in metrics.events if e.kind == "recommendation" and e.requested_epoch == 1]
    applied = [e.action["action"] for e in recs if e.applied]
    order = ["scale_learning_rate", "set_dropout", "enable_grad_clipping", "set_label_smoothing", "switch_scheduler"]
    assert applied == order[:limit]
    limited = [e for e in recs if "one hypothesis at a time" in e.reason]
    assert [e.action["action"] for e in limited if e.action["action"] != "set_weight_decay"] == order[limit:]
    (wd,) = [e for e in recs if e.action["action"] == "set_weight_decay"]
    assert ("one hypothesis" if limit == 1 else "outside") in wd.reason  # the round was full before its bound
    assert all(f"{limit} change(s)" in e.reason and not e.applied for e in limited)
    assert len(metrics.changes) == limit
    assert trainer.max_grad_norm == (1.0 if limit >= 3 else None)


def test_the_setup_review_is_asked_before_the_first_epoch_with_the_context():
    anthropic = ScriptedProvider(
        "anthropic", [_analysis({"action": "scale_learning_rate", "factor": 0.5}), _analysis(diagnosis="healthy")]
    )
    trainer = _trainer(_orchestrator(anthropic), keep_or_revert=False)
    metrics = trainer.fit(*_data(), epochs=2)
    setup = [e for e in metrics.events if e.task == "setup"]
    assert setup and all(e.requested_epoch == 0 and e.epoch == 0 for e in setup)
    assert any(e.kind == "recommendation" and e.applied for e in setup)
    assert metrics.history[0]["learning_rate"] == pytest.approx(0.025)  # applied before epoch 1 trained
    assert metrics.changes[0].epoch == 0 and metrics.changes[0].verdict == "final"
    first_request = json.dumps(anthropic.calls[0]["messages"])
    assert "SGD" in first_request or "sgd" in first_request  # the set-up it reviews
    assert len(anthropic.calls) == 2  # the set-up review, then the analysis after epoch 1
    no_review = ScriptedProvider("anthropic", [_analysis(diagnosis="healthy")])
    metrics = _trainer(_orchestrator(no_review), review_setup=False).fit(*_data(), epochs=2)
    assert not [e for e in metrics.events if e.task == "setup"] and len(no_review.calls) == 1


def test_answers_arriving_after_the_last_epoch_are_recorded_only():
    # Without wait_for_ai the set-up review cannot be ready before epoch 1 (nothing awaits it before the epoch
    # starts), and no analysis is asked for after the last epoch: the review's answer arrives after the end.
    answer = _analysis({"action": "set_label_smoothing", "x": 0.1})
    anthropic = ScriptedProvider("anthropic", [("sleep", 0.2, answer)])
    trainer = _trainer(_orchestrator(anthropic), wait_for_ai=False)
    metrics = trainer.fit(*_data(), epochs=1, test_data=_data()[1])
    assert len(anthropic.calls) == 1
    rec = next(e for e in metrics.events if e.kind == "recommendation")
    assert rec.task == "setup" and rec.requested_epoch == 0
    assert not rec.applied and "after the last epoch" in rec.reason and trainer.loss_fn.label_smoothing == 0.0


def test_auto_apply_off_records_without_changing_anything():
    anthropic = ScriptedProvider("anthropic", [_analysis({"action": "scale_learning_rate", "factor": 0.5})])
    trainer = _trainer(_orchestrator(anthropic), auto_apply=False)
    metrics = trainer.fit(*_data(), epochs=1)
    rec = next(e for e in metrics.events if e.kind == "recommendation")
    assert not rec.applied and "recorded only" in rec.reason
    assert trainer.optimizer.param_groups[0]["lr"] == 0.05


def test_answers_apply_at_the_next_epoch_boundary():
    anthropic = ScriptedProvider("anthropic", [_analysis({"action": "scale_learning_rate", "factor": 0.5})])
    trainer = _trainer(_orchestrator(anthropic), review_setup=False, keep_or_revert=False)
    metrics = trainer.fit(*_data(), epochs=3)
    lrs = [h["learning_rate"] for h in metrics.history]
    assert lrs[0] == pytest.approx(0.05) and lrs[1] == pytest.approx(0.025) and lrs[2] == pytest.approx(0.0125)


def test_training_continues_through_provider_errors_and_timeouts():
    failing = ScriptedProvider("anthropic", [ProviderUnavailable("anthropic", "503")])
    slow = ScriptedProvider("gemini", [("sleep", 5.0, _analysis())])
    trainer = _trainer(_orchestrator(failing, slow, max_retries=1))
    metrics = trainer.fit(*_data(), epochs=2)
    assert len(metrics.history) == 2
    diagnoses = [e for e in metrics.events if e.kind == "diagnosis"]
    assert diagnoses and all(e.provider == "local" for e in diagnoses)  # fell back to the offline advisor


def test_a_crash_in_the_ai_layer_is_recorded_and_training_continues():
    class Broken:
        def __init__(self):
            self.calls = 0

        async def analyze_model_reasoning(self, *args, **kwargs):
            self.calls += 1
            raise RuntimeError("advisor exploded")

        def status(self):
            return {"providers": {}, "spent_usd": 0.0}

    broken = Broken()
    trainer = _trainer(broken)
    metrics = trainer.fit(*_data(), epochs=2)
    assert len(metrics.history) == 2 and broken.calls == 2
    errors = [e for e in metrics.events if e.kind == "provider_error"]
    assert errors and "advisor exploded" in errors[0].reason


def _experiment(metrics):
    """The synthetic-data A/B's event and both arms' figures parsed from it: (event, with synthetic, real only)."""
    (event,) = [e for e in metrics.events if e.kind == "experiment" and e.task == "synthetic_data"]
    number = r"([-+0-9.e]+)"
    arm = rf"val loss {number}, accuracy {number}%"
    found = re.search(rf"with synthetic {arm}, real only {arm}", event.reason)
    assert found, event.reason
    synth, real = [(float(found[i]), float(found[i + 1]) / 100) for i in (1, 3)]
    return event, synth, real


def _samples(n, seed, labels):
    rng = np.random.default_rng(seed)
    x = rng.uniform(-1.5, 1.5, size=(n, 10))
    y = {"clean": (x[:, :2].sum(1) > 0), "random": rng.integers(0, 2, n)}[labels]
    return [{"features": list(map(float, f)), "label": int(c)} for f, c in zip(x, y)]


def test_synthetic_data_is_validated_and_tested_before_it_is_mixed_into_training_only():
    good = [{"features": list(np.full(10, 0.1)), "label": 1}, {"features": list(np.full(10, -0.1)), "label": 0}]
    bad = [
        {"features": [0.1] * 9, "label": 1},
        {"features": [math.nan] * 10, "label": 0},
        {"features": [0.0] * 10, "label": 5},
    ]
    openai = ScriptedProvider("openai", [{"samples": good + bad}])
    trainer = _trainer(_orchestrator(openai), synthetic_data_ratio=0.1, optimization_guidance_frequency=100)
    train, val = _data()
    metrics = trainer.fit(train, val, epochs=2)
    s = metrics.synthetic
    assert s.provider == "openai" and s.accepted == 2 and s.rejected == 3 and s.requested == 32
    assert any("label 5" in r for r in s.rejection_reasons)
    event, synth, real = _experiment(metrics)
    mixed = (synth[1], -synth[0]) > (real[1], -real[0])  # accuracy first, then the lower loss
    assert event.applied == mixed and event.reason.endswith("mixed in" if mixed else "not mixed in")
    assert len(trainer._train_dataset) == len(train) + (2 if mixed else 0)
    assert (s.mixed_in_at_epoch is not None) == mixed
    assert len(val) == 80  # validation untouched
    assert metrics.history[0]["samples_per_second"] > 0


def _ab_trainer(openai, **config):
    fm.manual_seed(1)
    return _trainer(
        _orchestrator(openai),
        lr=0.5,
        synthetic_data_ratio=1.0,
        synthetic_ab_fraction=1.0,
        optimization_guidance_frequency=100,
        review_setup=False,
        **config,
    )


def test_synthetic_label_noise_is_not_mixed_in():
    train, val = _data()
    openai = ScriptedProvider("openai", [{"samples": _samples(320, 5, "random")}])
    trainer = _ab_trainer(openai)
    metrics = trainer.fit(train, val, epochs=1)
    assert metrics.synthetic.accepted == 320
    event, synth, real = _experiment(metrics)
    assert not event.applied and "not mixed in" in event.reason
    assert (synth[1], -synth[0]) <= (real[1], -real[0])
    assert trainer.train_dataset is train and metrics.synthetic.mixed_in_at_epoch is None


def test_synthetic_data_that_helps_is_mixed_in():
    train, val = _data()
    rng = np.random.default_rng(9)
    x = train.tensors[0].numpy()
    noisy = TensorDataset(fm.tensor(x), fm.tensor(rng.integers(0, 2, len(x)).astype(np.int64)))  # no signal
    openai = ScriptedProvider("openai", [{"samples": _samples(320, 6, "clean")}])
    trainer = _ab_trainer(openai)
    metrics = trainer.fit(noisy, val, epochs=1)
    event, synth, real = _experiment(metrics)
    assert event.applied and event.reason.endswith(": mixed in") and synth[1] > real[1]
    assert len(trainer.train_dataset) == 640 and trainer.synthetic_range == (320, 640)
    assert metrics.synthetic.mixed_in_at_epoch == 0


def test_without_validation_data_synthetic_samples_are_not_mixed_in():
    train, _ = _data()
    openai = ScriptedProvider("openai", [{"samples": _samples(320, 6, "clean")}])
    trainer = _ab_trainer(openai)
    metrics = trainer.fit(train, None, epochs=1)
    (event,) = [e for e in metrics.events if e.kind == "experiment"]
    assert not event.applied and "no validation data" in event.reason
    assert trainer.train_dataset is train and metrics.synthetic.accepted == 320


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # overflow is the point: the loss must blow up
def test_divergence_restores_the_last_good_epoch_and_lowers_the_learning_rate():
    trainer = _trainer(_orchestrator(), lr=0.05, optimization_guidance_frequency=100)
    train, val = _data()
    trainer.fit(train, val, epochs=1)  # one good epoch
    good = {k: v.numpy().copy() for k, v in trainer.model.state_dict().items()}
    for group in trainer.optimizer.param_groups:
        group["lr"] = 1e30  # guaranteed to blow up
    metrics = trainer.fit(train, val, epochs=1)
    div = [e for e in metrics.events if e.kind == "divergence"]
    assert div and div[0].applied and div[0].before == 1e30 and div[0].after == pytest.approx(3e29)
    assert metrics.divergence_recoveries >= 1
    if metrics.stopped_early:  # every retry diverged too: the model is back at the good epoch
        for k, v in trainer.model.state_dict().items():
            np.testing.assert_array_equal(v.numpy(), good[k])


def test_research_insights_are_recorded_with_citations_and_applied_only_for_a_problem():
    insight = {
        "technique": "AdamW",
        "summary": "decouple weight decay",
        "applies_when": "overfitting",
        "action": {"action": "set_weight_decay", "value": 0.05},
        "citations": [{"title": "Decoupled Weight Decay Regularization", "arxiv_id": "1711.05101", "year": 2019}],
    }
    perplexity = ScriptedProvider("perplexity", [{"insights": [insight]}])
    anthropic = ScriptedProvider("anthropic", [_analysis(diagnosis="healthy"), _analysis(diagnosis="overfitting")])
    trainer = _trainer(_orchestrator(perplexity, anthropic), research_update_interval=1, review_setup=False)
    metrics = trainer.fit(*_data(), epochs=3)
    research = [e for e in metrics.events if e.task == "research"]
    assert (
        research[0].kind == "insight" and not research[0].applied and research[0].citations[0].arxiv_id == "1711.05101"
    )
    assert any(e.applied and e.action["action"] == "set_weight_decay" for e in research[1:])


def test_offline_advisor_runs_are_deterministic_under_manual_seed():
    def run():
        fm.manual_seed(3)
        model = _model()
        cfg = AIEnhancedConfig(
            synthetic_data_ratio=0.2, optimization_guidance_frequency=2, research_update_interval=3, wait_for_ai=True
        )
        orchestrator = AIServiceOrchestrator(
            AISettings.from_env(env={}, cache_enabled=False), local=LocalAdvisor(seed=7)
        )
        trainer = AIEnhancedTrainer(
            model, Adam(model.parameters(), lr=0.01), cfg, orchestrator=orchestrator, batch_size=32
        )
        metrics = trainer.fit(*_data(), epochs=4)
        return [h["train_loss"] for h in metrics.history], [(e.kind, e.action, e.applied) for e in metrics.events]

    first, second = run(), run()
    assert first == second
    assert any(kind == "synthetic_data" for kind, _, _ in first[1])


def test_enhanced_metrics_are_json_and_the_sync_and_async_forms_agree():
    def make():
        return _trainer(_orchestrator(), lr=0.2, optimization_guidance_frequency=2)

    train, val = _data()
    sync = make().fit(train, val, epochs=3, test_data=val)

    async def run_async():
        return await make().train_with_ai_guidance(
            DataLoader(train, batch_size=32, shuffle=True), val, epochs=2, test_data=val
        )

    fm.manual_seed(0)
    asyncio_result = asyncio.run(run_async())
    assert sync.best_epoch is not None and sync.final_test["accuracy"] > 0.6
    restored = EnhancedTrainingMetrics.model_validate_json(sync.model_dump_json())
    assert restored.history == json.loads(sync.model_dump_json())["history"]
    assert len(asyncio_result.history) == 2 and "epochs; best epoch" in sync.summary()

    async def inside_a_loop():
        make().fit(train, val, epochs=1)

    with pytest.raises(RuntimeError, match="event loop"):
        asyncio.run(inside_a_loop())


def test_config_defaults_and_validation():
    cfg = AIEnhancedConfig()
    assert cfg == AIEnhancedConfig.default()
    assert cfg.openai_enabled and cfg.research_update_interval == 10 and cfg.optimization_guidance_frequency == 5
    seed_style = AIEnhancedConfig(
        openai_enabled=True,
        anthropic_enabled=True,
        perplexity_enabled=True,
        synthetic_data_ratio=0.3,
        research_update_interval=10,
        optimization_guidance_frequency=5,
    )
    assert seed_style.synthetic_data_ratio == 0.3
    with pytest.raises(ValueError, match="low <= high"):
        AIEnhancedConfig(dropout_range=(0.5, 0.1))
    with pytest.raises(ValueError):
        AIEnhancedConfig(synthetic_data_ratio=2.0)
    disabled = AIEnhancedConfig(anthropic_enabled=False, gemini_enabled=False)
    assert disabled.enabled_providers() == ["openai", "perplexity", "xai"]


def test_explore_architectures_trains_candidates_and_ranks_them():
    orchestrator = AIServiceOrchestrator(AISettings.from_env(env={}, cache_enabled=False), local=LocalAdvisor(seed=1))
    model = _model()
    trainer = AIEnhancedTrainer(
        model,
        Adam(model.parameters(), lr=0.01),
        AIEnhancedConfig(wait_for_ai=True),
        orchestrator=orchestrator,
        batch_size=32,
    )
    train, val = _data()
    trainer.fit(train, val, epochs=1)
    board = asyncio.run(trainer.explore_architectures(k=2, epochs_each=1))
    assert [row["rank"] for row in board] == [1, 2]
    assert board[0]["val_accuracy"] >= board[1]["val_accuracy"]
    for row in board:
        built = nn.build(row["spec"])
        assert built.num_parameters() == row["parameters"] and row["provider"] == "local"
        assert built(fm.zeros(3, 10)).shape == (3, 2)
    assert any(e.kind == "architecture" for e in trainer.events)


def test_the_context_reports_the_optimizer_inputs_layers_and_changes():
    from forgeml.specs import SwitchOptimizer
    from forgeml.training.ai_context import build_context
    from forgeml.training.guardrails import guardrail_for

    anthropic = ScriptedProvider(
        "anthropic", [_analysis({"action": "set_weight_decay", "value": 0.05}), _analysis(diagnosis="healthy")]
    )
    model = _model()
    trainer = AIEnhancedTrainer(
        model,
        Adam(model.parameters(), lr=0.01, weight_decay=0.01),
        AIEnhancedConfig(
            optimization_guidance_frequency=1, research_update_interval=100, wait_for_ai=True, trial_epochs=1
        ),
        orchestrator=_orchestrator(anthropic),
        batch_size=32,
    )
    train, val = _data()
    trainer.fit(train, val, epochs=2)
    ctx = build_context(trainer)
    assert ctx.optimizer == "adam" and ctx.decoupled_weight_decay is False  # Adam's weight decay is L2
    assert ctx.learning_rate == pytest.approx(trainer.learning_rate) and ctx.batch_size == 32 and ctx.dropout == 0.2
    assert ctx.epochs_done == 2 and ctx.epochs_planned == 2 and ctx.num_classes == 2 and ctx.train_samples == 320
    x = train.tensors[0].numpy().astype(np.float64)
    assert ctx.inputs.mean == pytest.approx(x.mean()) and ctx.inputs.std == pytest.approx(x.std())
    assert ctx.inputs.min == pytest.approx(x.min()) and ctx.inputs.max == pytest.approx(x.max())
    assert ctx.inputs.features == 10 and not ctx.inputs.integer and not ctx.inputs.standardized
    assert ctx.layer_types == {"Linear": 2, "ReLU": 1, "Dropout": 1}  # the leaves, not the Sequential
    assert [row.name for row in ctx.layers] == [name for name, _ in model.named_parameters()]
    assert [row.model_dump() for row in ctx.layers] == [
        {k: row.get(k) for k in ("name", "dims", "weight_norm", "grad_norm", "update_ratio")}
        for row in trainer.history[-1].layers
    ]
    norm = float(np.linalg.norm(model[0].weight.detach().numpy()))
    assert ctx.layers[0].weight_norm == pytest.approx(norm, rel=1e-4)  # the end of the last epoch
    # the change made at epoch 1 and its verdict (kept with wd 0.05, or reverted to 0.01)
    (change,) = ctx.changes
    assert change.action == {"action": "set_weight_decay", "value": 0.05} and change.verdict in ("kept", "reverted")
    assert ctx.weight_decay == (0.05 if change.verdict == "kept" else 0.01)
    assert change.reason == trainer.changes[0].reason and "epoch(s) of the trial" in change.reason

    guardrail_for(SwitchOptimizer(name="adamw")).apply(trainer, SwitchOptimizer(name="adamw"))
    ctx = build_context(trainer)
    assert ctx.optimizer == "adamw" and ctx.decoupled_weight_decay is True
    trainer.standardize_inputs()
    inputs = build_context(trainer).inputs
    assert inputs.standardized and inputs.mean == 0.0 and inputs.std == 1.0


def test_a_batch_normalised_conv_net_gets_a_range_test_before_epoch_1_and_trains_at_its_rate():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 256)
    x = rng.standard_normal((256, 1, 8, 8)).astype(np.float32)
    x[:, 0, :4, :4] += (2 * y - 1)[:, None, None]  # an easy signal: the loss still falls at 30x Adam's default
    train, val = (
        TensorDataset(fm.tensor(x[:192]), fm.tensor(y[:192])),
        TensorDataset(fm.tensor(x[192:]), fm.tensor(y[192:])),
    )
    fm.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(64, 2)
    )
    config = AIEnhancedConfig(optimization_guidance_frequency=1, research_update_interval=100, wait_for_ai=True)
    trainer = AIEnhancedTrainer(
        model, Adam(model.parameters(), lr=1e-3), config, orchestrator=_orchestrator(), batch_size=16
    )
    metrics = trainer.fit(train, val, epochs=1)
    (test,) = [e for e in metrics.events if e.kind == "experiment" and e.task == "lr_range_test"]
    assert test.epoch == 0 and "over 10 steps from 0.001 to 0.03" in test.reason  # 12 steps an epoch: 10 at least
    (applied,) = [e for e in metrics.events if e.task == "setup" and e.kind == "recommendation" and e.applied]
    assert applied.action == {"action": "find_learning_rate", "min_lr": 1e-3, "max_lr": 0.03, "steps": 10}
    assert "1502.03167" in applied.rationale and applied.before == 1e-3
    assert applied.after == pytest.approx(3e-3)  # a decade below the top of the range, where the loss was lowest
    assert metrics.history[0]["learning_rate"] == pytest.approx(3e-3)
    assert metrics.changes[0].epoch == 0 and metrics.changes[0].action["action"] == "find_learning_rate"


@pytest.mark.parametrize("stop_first", [False, True])
def test_an_early_stop_ends_the_run_at_once_and_no_change_made_with_it_is_kept(stop_first):
    """A change that no epoch is trained with cannot be judged: made before the stop in the same answer it is
    reverted, after it it is recorded only; and no epoch runs after the stop."""
    actions = [{"action": "set_weight_decay", "value": 0.05}, {"action": "early_stop"}]
    anthropic = ScriptedProvider(
        "anthropic", [_analysis(diagnosis="healthy"), _analysis(*(actions[::-1] if stop_first else actions))]
    )
    trainer = _trainer(_orchestrator(anthropic))
    metrics = trainer.fit(*_data(), epochs=4)
    assert len(metrics.history) == 1 and metrics.stopped_early
    assert trainer.optimizer.param_groups[0]["weight_decay"] == 0.001  # the recipe's, as before the answer
    decay = [e for e in metrics.events if e.kind == "recommendation" and e.action["action"] == "set_weight_decay"]
    if stop_first:
        assert not decay[0].applied and decay[0].reason == "the run is stopping early: recorded only"
        assert [c.action["action"] for c in metrics.changes] == ["early_stop"]
    else:
        (change,) = [c for c in metrics.changes if c.action["action"] == "set_weight_decay"]
        assert change.verdict == "reverted"
        assert change.reason == "the run stopped before an epoch was trained with the change"
