"""Keep or revert: a round's changes go on trial from a saved state, and a change that does not help is undone."""

import json

import numpy as np
import pytest

import forgeml as fm
from forgeml import nn
from forgeml.data import TensorDataset
from forgeml.optim import SGD
from forgeml.training import AIEnhancedConfig, AIEnhancedTrainer
from forgeml.training.callbacks import Callback, LambdaCallback
from tests.ai.stubs import ScriptedProvider
from tests.training.test_ai_trainer import _analysis, _data, _orchestrator


class Weights(Callback):
    """The model's weights at the end of each epoch (a trial opened at an epoch boundary starts from them)."""

    def __init__(self):
        self.at = {}

    def on_epoch_end(self, trainer, metrics):
        self.at[metrics.epoch] = _weights(trainer)


def _weights(trainer):
    return {k: v.numpy().copy() for k, v in trainer.model.state_dict().items()}


def _assert_weights_equal(a, b):
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])


def _config(overrides: dict) -> AIEnhancedConfig:
    """Guidance after every epoch, one-epoch trials, no set-up review, answers awaited: each test scripts it all."""
    settings = {
        "optimization_guidance_frequency": 1,
        "research_update_interval": 100,
        "wait_for_ai": True,
        "review_setup": False,
        "trial_epochs": 1,
    }
    return AIEnhancedConfig(**{**settings, **overrides})


def _trainer(provider, lr=0.05, callbacks=(), **config):
    fm.manual_seed(0)
    model = nn.Sequential(nn.Linear(10, 16), nn.ReLU(), nn.Dropout(0.1), nn.Linear(16, 2))
    return AIEnhancedTrainer(
        model,
        SGD(model.parameters(), lr=lr, weight_decay=0.001),
        _config(config),
        orchestrator=_orchestrator(provider),
        batch_size=32,
        callbacks=list(callbacks),
    )


def _verdicts(metrics):
    return [e for e in metrics.events if e.kind == "verdict"]


def _regression(n=400, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, 10)).astype(np.float32)
    y = (x @ rng.standard_normal((10, 1)) + 0.1 * rng.standard_normal((n, 1))).astype(np.float32)
    cut = int(n * 0.8)
    return TensorDataset(fm.tensor(x[:cut]), fm.tensor(y[:cut])), TensorDataset(fm.tensor(x[cut:]), fm.tensor(y[cut:]))


def _regressor(provider, callbacks=(), **config):
    fm.manual_seed(0)
    model = nn.Sequential(nn.Linear(10, 16), nn.ReLU(), nn.Dropout(0.1), nn.Linear(16, 1))
    return AIEnhancedTrainer(
        model,
        SGD(model.parameters(), lr=0.02),
        _config(config),
        nn.MSELoss(),
        orchestrator=_orchestrator(provider),
        batch_size=32,
        callbacks=list(callbacks),
    )


HEALTHY = _analysis(diagnosis="healthy")
# after two healthy epochs the run has a trend; lr x0.1 for an epoch falls far short of it
HARMFUL = [HEALTHY, HEALTHY, _analysis({"action": "scale_learning_rate", "factor": 0.1}), HEALTHY]


def test_a_harmful_change_is_reverted_to_the_exact_state_of_the_trial_start():
    anthropic = ScriptedProvider("anthropic", HARMFUL)
    weights = Weights()
    resumed = {}
    on_begin = LambdaCallback(
        on_epoch_begin=lambda trainer, epoch: resumed.setdefault(epoch, _weights(trainer)) if epoch == 5 else None
    )
    trainer = _regressor(anthropic, callbacks=[weights, on_begin])
    metrics = trainer.fit(*_regression(), epochs=5)
    assert [h["learning_rate"] for h in metrics.history] == pytest.approx([0.02, 0.02, 0.02, 0.002, 0.02])
    (change,) = metrics.changes
    assert change.epoch == 3 and change.verdict == "reverted" and change.action["factor"] == 0.1
    assert change.metric == "val_loss" and change.after == pytest.approx(metrics.history[3]["val_loss"])
    assert change.before == pytest.approx(metrics.history[2]["val_loss"]) and "reverted" in change.reason
    (verdict,) = _verdicts(metrics)
    assert verdict.epoch == 4 and "rolled back to the state of epoch 3" in verdict.reason
    assert verdict.action == {"action": "trial", "changes": [change.action]}
    # everything the change touched is as it was when the trial opened: epoch 5 starts from epoch 3's weights
    _assert_weights_equal(resumed[5], weights.at[3])
    assert [m.epoch for m in trainer.lineage()] == [1, 2, 3, 5] and len(trainer.history) == 5
    assert trainer._trial is None


def test_at_the_end_of_the_run_a_change_that_improved_on_its_start_is_kept_even_below_the_trend():
    """The same lr x0.1 judged on the last epoch: it lowered the validation loss (though less than the trend
    promised), and a roll-back would have no epochs left to run the old settings: the change stays."""
    anthropic = ScriptedProvider("anthropic", HARMFUL)
    weights = Weights()
    trainer = _regressor(anthropic, callbacks=[weights])
    metrics = trainer.fit(*_regression(), epochs=4)
    (change,) = metrics.changes
    assert change.verdict == "kept" and change.after < change.before
    assert "no epochs are left" in change.reason and "below the trend" in change.reason
    _assert_weights_equal(_weights(trainer), weights.at[4])
    assert trainer.learning_rate == pytest.approx(0.002) and [m.epoch for m in trainer.lineage()] == [1, 2, 3, 4]


def _curves(call):
    text = call["messages"][-1][1]
    line = next(row for row in text.splitlines() if row.startswith("Metrics per epoch (JSON): "))
    return json.loads(line.split(": ", 1)[1])


def test_the_analyst_sees_the_lineage_without_the_reverted_epochs():
    anthropic = ScriptedProvider("anthropic", HARMFUL)
    trainer = _regressor(anthropic)
    trainer.fit(*_regression(), epochs=5)
    assert [c.verdict for c in trainer.changes] == ["reverted"]
    after_verdict = _curves(anthropic.calls[3])  # asked at epoch 4, once epoch 4 was rolled back
    assert after_verdict["val_loss"] == pytest.approx([m.val_loss for m in trainer.history[:3]], rel=1e-5)
    assert '"verdict":"reverted"' in anthropic.calls[3]["messages"][-1][1]


def test_a_helpful_change_is_kept():
    helpful = _analysis({"action": "scale_learning_rate", "factor": 2.0})
    anthropic = ScriptedProvider("anthropic", [helpful, _analysis(diagnosis="healthy")])
    weights = Weights()
    trainer = _trainer(anthropic, lr=0.002, callbacks=[weights])  # a deliberately tiny learning rate
    metrics = trainer.fit(*_data(), epochs=2)
    (change,) = metrics.changes
    assert change.verdict == "kept" and "it helped, kept" in change.reason
    if change.metric == "val_loss":
        assert change.after == pytest.approx(metrics.history[1]["val_loss"]) and change.after < change.before
    else:
        assert change.after == pytest.approx(metrics.history[1]["val_accuracy"]) and change.after > change.before
    (verdict,) = _verdicts(metrics)
    assert "kept" in verdict.reason and "rolled back" not in verdict.reason
    assert trainer.learning_rate == pytest.approx(0.004)
    _assert_weights_equal(_weights(trainer), weights.at[2])  # the trial's epoch stands
    assert [m.epoch for m in trainer.lineage()] == [1, 2]


def test_advice_during_an_open_trial_is_recorded_only_and_the_next_analysis_waits_for_the_verdict():
    insight = {
        "technique": "label smoothing",
        "summary": "smooth the labels",
        "applies_when": "plateau",
        "action": {"action": "set_label_smoothing", "x": 0.1},
        "citations": [],
    }
    perplexity = ScriptedProvider("perplexity", [{"insights": [insight]}])
    anthropic = ScriptedProvider("anthropic", [_analysis({"action": "scale_learning_rate", "factor": 0.5})])
    trainer = AIEnhancedTrainer(
        *_model_and_sgd(),
        AIEnhancedConfig(
            optimization_guidance_frequency=1,
            research_update_interval=2,
            wait_for_ai=True,
            review_setup=False,
            trial_epochs=2,
        ),
        orchestrator=_orchestrator(perplexity, anthropic),
        batch_size=32,
    )
    metrics = trainer.fit(*_data(), epochs=4)
    research = [e for e in metrics.events if e.task == "research" and e.kind == "recommendation"]
    assert research and research[0].requested_epoch == 2 and not research[0].applied
    assert research[0].reason == "recorded only: scale_learning_rate is on trial"
    assert trainer.loss_fn.label_smoothing == 0.0
    # the trial opened at epoch 1 lasts 2 epochs: the analysis due at epoch 2 is asked for at epoch 3
    analyses = [e.requested_epoch for e in metrics.events if e.kind == "diagnosis"]
    assert analyses == [1, 3]
    verdict = _verdicts(metrics)[0]
    assert verdict.epoch == 3
    assert metrics.changes[0].epoch == 1 and metrics.changes[0].verdict in ("kept", "reverted")


def _model_and_sgd(lr=0.05):
    fm.manual_seed(0)
    model = nn.Sequential(nn.Linear(10, 16), nn.ReLU(), nn.Dropout(0.1), nn.Linear(16, 2))
    return model, SGD(model.parameters(), lr=lr, weight_decay=0.001)


def test_one_answer_puts_at_most_max_changes_per_round_on_trial_together():
    answer = _analysis(
        {"action": "scale_learning_rate", "factor": 0.1},
        {"action": "set_dropout", "p": 0.5},
        {"action": "enable_grad_clipping", "max_norm": 0.5},
    )
    anthropic = ScriptedProvider("anthropic", [answer, _analysis(diagnosis="healthy")])
    trainer = _trainer(anthropic)  # max_changes_per_round defaults to 2
    metrics = trainer.fit(*_data(), epochs=2)
    assert [c.action["action"] for c in metrics.changes] == ["scale_learning_rate", "set_dropout"]
    (verdict,) = _verdicts(metrics)
    assert [a["action"] for a in verdict.action["changes"]] == ["scale_learning_rate", "set_dropout"]
    (third,) = [e for e in metrics.events if e.action and e.action.get("action") == "enable_grad_clipping"]
    assert not third.applied and "one hypothesis at a time: 2 change(s)" in third.reason
    verdicts = {c.verdict for c in metrics.changes}
    assert len(verdicts) == 1  # judged together
    if verdicts == {"reverted"}:  # both undone together
        assert trainer.learning_rate == 0.05 and trainer.model[2].p == 0.1


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # the loss is meant to blow up
def test_a_divergence_during_a_trial_reverts_it():
    explode = _analysis({"action": "scale_learning_rate", "factor": 100.0})
    anthropic = ScriptedProvider("anthropic", [explode, _analysis(diagnosis="healthy")])
    weights = Weights()
    trainer = _trainer(
        anthropic,
        lr=0.5,
        callbacks=[weights],
        lr_factor_range=(0.1, 100.0),
        max_learning_rate=100.0,
        trial_epochs=2,
    )
    reverted_to = {}
    original = trainer._on_recovery

    def on_recovery(record):
        original(record)
        reverted_to.setdefault("weights", _weights(trainer))
        reverted_to.setdefault("lr", trainer.learning_rate)

    trainer._on_recovery = on_recovery
    metrics = trainer.fit(*_data(), epochs=2)
    assert trainer.recoveries and not trainer.recoveries[0]["gave_up"]
    (change,) = metrics.changes
    assert change.verdict == "reverted" and "diverged during the trial" in change.reason
    verdict = _verdicts(metrics)[0]
    assert "rolled back to the state of epoch 1" in verdict.reason
    # rolled back to the trial's start: its weights and the learning rate before the change (not the lowered one)
    _assert_weights_equal(reverted_to["weights"], weights.at[1])
    assert reverted_to["lr"] == 0.5
    assert [h["learning_rate"] for h in metrics.history] == pytest.approx([0.5, 0.5])
    assert trainer._trial is None


def test_a_trial_after_a_revert_is_judged_against_the_lineage_not_the_discarded_epochs(monkeypatch):
    """Epoch 4 (lr x0.1) is reverted to the state of epoch 3. The next trial is judged on the epochs behind the
    weights it starts from (1, 2, 3 and 5), never on the discarded epoch 4."""
    from forgeml.training import keep_or_revert

    judged = []
    real = keep_or_revert.judge_trial

    def spy(before, during, **kw):
        judged.append(([r["epoch"] for r in before], [r["epoch"] for r in during]))
        return real(before, during, **kw)

    monkeypatch.setattr(keep_or_revert, "judge_trial", spy)
    script = [*HARMFUL, _analysis({"action": "scale_learning_rate", "factor": 0.1}), HEALTHY, HEALTHY]
    trainer = _regressor(ScriptedProvider("anthropic", script))
    metrics = trainer.fit(*_regression(), epochs=6)
    first, second = metrics.changes
    assert (first.epoch, first.verdict, second.epoch) == (3, "reverted", 5)
    assert judged == [([1, 2, 3], [4]), ([1, 2, 3, 5], [6])]
