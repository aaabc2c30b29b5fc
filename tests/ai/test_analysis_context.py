"""The offline advisor's analysis with a ``TrainingContext``: the set-up review, regularisation-bound underfitting
read apart from overfitting, loss changes made by the trainer itself, the changes already tried, per-layer
statistics, and facts from the context taking precedence over the description."""

import numpy as np
import pytest

from forgeml.ai.local import LocalAdvisor
from forgeml.ai.local.analysis import analyze_metrics
from forgeml.specs import ChangeRecord, InputStats, LayerStats, TrainingContext, TrainingMetrics

MNIST_MLP = "MLP 784-512-256-10, ReLU, Dropout 0.2, Adam(lr=0.001, weight_decay=0.01), MNIST, 10 classes"
RAW_PIXELS = InputStats(mean=33.32, std=78.57, min=0.0, max=255.0, features=784)
UNIT_PIXELS = InputStats(mean=0.1307, std=0.3081, min=0.0, max=1.0, features=784)
STANDARDISED = InputStats(mean=0.0, std=1.0, min=-0.42, max=2.82, features=784, standardized=True)


def _metrics(**curves):
    return TrainingMetrics(**{k: [None if v is None else float(v) for v in vals] for k, vals in curves.items()})


def _actions(result):
    return {r.action.action: r.action for r in result.recommendations}


def _clean(**overrides) -> TrainingContext:
    """A well set-up run: AdamW with decoupled decay, standardised inputs, a cosine schedule."""
    fields = dict(
        optimizer="adamw",
        learning_rate=1e-3,
        weight_decay=0.01,
        decoupled_weight_decay=True,
        dropout=0.1,
        scheduler="CosineAnnealingLR",
        epochs_planned=20,
        epochs_done=12,
        num_classes=10,
        inputs=STANDARDISED,
    )
    fields.update(overrides)
    return TrainingContext(**fields)


def _coupled(**overrides) -> TrainingContext:
    """The issue's run: Adam with coupled L2 0.01, dropout 0.2, raw 0..1 pixels, no schedule."""
    fields = dict(
        optimizer="adam",
        learning_rate=1e-3,
        weight_decay=0.01,
        decoupled_weight_decay=False,
        dropout=0.2,
        epochs_planned=20,
        epochs_done=11,
        num_classes=10,
        inputs=UNIT_PIXELS,
    )
    fields.update(overrides)
    return TrainingContext(**fields)


# The epoch-11 history: train loss 0.23 and still falling slowly, val loss 7.7% above its epoch-6 best,
# train and val accuracy both ~93%: no gap, a model held back by its regularisation.
HELD_BACK = dict(
    train_loss=[0.52, 0.36, 0.31, 0.285, 0.27, 0.259, 0.252, 0.246, 0.241, 0.236, 0.232],
    val_loss=[0.30, 0.255, 0.232, 0.221, 0.215, 0.212, 0.216, 0.219, 0.223, 0.226, 0.2283],
    train_accuracy=[0.86, 0.90, 0.912, 0.919, 0.923, 0.926, 0.928, 0.929, 0.930, 0.931, 0.932],
    val_accuracy=[0.915, 0.926, 0.931, 0.934, 0.935, 0.936, 0.934, 0.933, 0.932, 0.932, 0.931],
    learning_rate=[1e-3] * 11,
)
# The same shape with a real generalisation gap: train loss 0.05 against val loss 0.30, 99% against 93%.
OVERFIT = dict(
    train_loss=[0.45, 0.25, 0.17, 0.13, 0.10, 0.085, 0.074, 0.066, 0.059, 0.054, 0.05],
    val_loss=[0.28, 0.24, 0.225, 0.22, 0.218, 0.215, 0.23, 0.25, 0.265, 0.28, 0.30],
    train_accuracy=[0.87, 0.93, 0.95, 0.962, 0.97, 0.976, 0.98, 0.984, 0.987, 0.989, 0.99],
    val_accuracy=[0.92, 0.928, 0.931, 0.933, 0.934, 0.935, 0.934, 0.933, 0.932, 0.931, 0.93],
    learning_rate=[1e-3] * 11,
)
# Label smoothing 0.1 switched on after epoch 6: both losses step up by ~0.3 at epoch 7 and keep falling.
SMOOTHED = dict(
    train_loss=[0.90, 0.55, 0.42, 0.35, 0.31, 0.28, 0.58, 0.556, 0.537, 0.522, 0.510, 0.500],
    val_loss=[0.60, 0.45, 0.38, 0.34, 0.315, 0.30, 0.61, 0.592, 0.577, 0.565, 0.555, 0.547],
    train_accuracy=[0.75, 0.84, 0.875, 0.895, 0.907, 0.915, 0.921, 0.926, 0.930, 0.933, 0.936, 0.938],
    val_accuracy=[0.82, 0.86, 0.885, 0.898, 0.906, 0.912, 0.917, 0.921, 0.924, 0.927, 0.929, 0.931],
)
E = np.arange(1, 21, dtype=np.float64)
CURVES = {
    "healthy": dict(train_loss=2.3 * np.exp(-0.2 * E) + 0.1, val_loss=2.3 * np.exp(-0.2 * E) + 0.15),
    "overfitting": dict(
        train_loss=2.0 * np.exp(-0.25 * E), val_loss=2.0 * np.exp(-0.25 * E) + 0.3 + 0.05 * np.maximum(E - 8, 0)
    ),
    "plateau": dict(
        train_loss=np.maximum(2.3 * np.exp(-0.6 * E), 0.2) + 0.2 + 0.0005 * np.sin(E),
        val_loss=np.maximum(2.3 * np.exp(-0.6 * E), 0.2) + 0.25 - 0.0005 * np.sin(E),
    ),
    "underfitting": dict(
        train_loss=2.3 - 0.3 * (1 - np.exp(-E)),
        val_loss=2.32 - 0.3 * (1 - np.exp(-E)),
        train_accuracy=0.25 + 0.1 * (1 - np.exp(-E)),
        val_accuracy=0.24 + 0.1 * (1 - np.exp(-E)),
    ),
    "noisy": dict(
        train_loss=np.exp(-0.05 * E) + 0.15 * np.where(E % 2 == 0, 1.0, -1.0),
        val_loss=1.05 * np.exp(-0.05 * E) - 0.15 * np.where(E % 2 == 0, 1.0, -1.0),
    ),
    "diverging": dict(train_loss=[2.3, 1.5, 1.1, 0.9, 0.85, 1.3, 2.8, 9.0, 30.0, 95.0]),
}


# ===================================================================================== the diagnoses still work
@pytest.mark.parametrize("expected", sorted(CURVES))
def test_each_diagnosis_still_works_with_a_clean_context(expected):
    metrics = _metrics(**CURVES[expected])
    plain = LocalAdvisor().analyze("", metrics)
    result = LocalAdvisor().analyze("", metrics, _clean(scheduler=None if expected == "plateau" else "cosine"))
    assert plain.diagnosis == result.diagnosis == expected
    assert len(result.recommendations) <= 2
    confidences = [r.confidence for r in result.recommendations]
    assert confidences == sorted(confidences, reverse=True)
    settings = [r.action.action for r in result.recommendations]
    assert len(set(settings)) == len(settings)
    if expected != "healthy":
        assert result.recommendations


def test_a_dict_context_is_accepted_by_both_entry_points():
    metrics = _metrics(**HELD_BACK)
    as_dict = _coupled().model_dump()
    a = analyze_metrics(MNIST_MLP, metrics, as_dict)
    b = LocalAdvisor().analyze(MNIST_MLP, metrics, _coupled())
    assert a.diagnosis == b.diagnosis
    assert [r.action for r in a.recommendations] == [r.action for r in b.recommendations]


# ============================================================================ misreading 1: held back, not overfit
def test_regularisation_bound_run_is_underfitting_not_overfitting():
    result = LocalAdvisor().analyze(MNIST_MLP, _metrics(**HELD_BACK), _coupled())
    assert result.diagnosis == "underfitting"
    actions = _actions(result)
    assert actions["switch_optimizer"].name == "adamw" and actions["switch_optimizer"].keep_state
    assert result.recommendations[0].action.action == "switch_optimizer"
    assert len(result.recommendations) <= 2
    assert any("no generalisation gap" in e and "93.2%" in e and "93.1%" in e for e in result.evidence)
    assert any("regularisation holds the fit back" in e and "0.01" in e for e in result.evidence)
    assert any("+7.7%" in e for e in result.evidence)
    rationale = result.recommendations[0].rationale
    assert "1711.05101" in rationale
    for rec in result.recommendations:  # never more regularisation, never a stop or a rewind
        a = rec.action
        assert not (a.action == "set_weight_decay" and a.value > 0.01)
        assert not (a.action == "set_dropout" and a.p > 0.2)
        assert not (a.action == "set_label_smoothing" and a.x > 0)
        assert a.action not in ("early_stop", "restore_best_checkpoint")


def test_regularisation_bound_run_is_read_the_same_from_the_description_alone():
    result = LocalAdvisor().analyze(MNIST_MLP, _metrics(**HELD_BACK))
    assert result.diagnosis == "underfitting"
    assert "switch_optimizer" in _actions(result)
    assert "set_weight_decay" not in _actions(result) and "set_label_smoothing" not in _actions(result)


def test_strong_dropout_without_coupled_decay_asks_for_less_dropout():
    ctx = _clean(dropout=0.5, epochs_done=11, scheduler="cosine")
    result = LocalAdvisor().analyze("MLP", _metrics(**HELD_BACK), ctx)
    assert result.diagnosis == "underfitting"
    actions = _actions(result)
    assert actions["set_dropout"].p == pytest.approx(0.25)
    assert "switch_optimizer" not in actions


def test_without_strong_regularisation_a_rising_val_loss_without_gap_is_not_overfitting():
    ctx = _clean(dropout=0.1, epochs_done=11)
    result = LocalAdvisor().analyze("MLP", _metrics(**HELD_BACK), ctx)
    assert result.diagnosis not in ("overfitting", "underfitting")


def test_a_real_gap_is_still_overfitting():
    clean = LocalAdvisor().analyze("MLP", _metrics(**OVERFIT), _clean(epochs_done=11))
    assert clean.diagnosis == "overfitting"
    assert any("generalisation gap" in e and "99.0%" in e for e in clean.evidence)
    assert 1 <= len(clean.recommendations) <= 2
    coupled = LocalAdvisor().analyze(MNIST_MLP, _metrics(**OVERFIT), _coupled())
    assert coupled.diagnosis == "overfitting"
    # more coupled L2 is the wrong lever: decouple it instead of raising it
    assert not any(r.action.action == "set_weight_decay" and r.action.value > 0.01 for r in coupled.recommendations)
    assert "switch_optimizer" in _actions(coupled)


def test_an_overfitting_run_with_epochs_left_regularises_on_trial_and_one_without_stops_at_its_best():
    """Stopping leaves nothing to judge a new setting on: with epochs left the advisor tries regularisation (kept
    or reverted by its trial) and does not stop; at the end of its budget, or not knowing it, it stops and
    restores the best weights, and proposes no setting that no epoch would be trained with. Without a known
    budget (no context) the whole advice stands, for a reader planning the next run."""
    left = LocalAdvisor().analyze("MLP", _metrics(**OVERFIT), _clean(epochs_done=11, epochs_planned=20))
    assert left.diagnosis == "overfitting" and "early_stop" not in _actions(left)
    assert {"set_weight_decay", "set_dropout", "restore_best_checkpoint"} & set(_actions(left))
    end = LocalAdvisor().analyze("MLP", _metrics(**OVERFIT), _clean(epochs_done=11, epochs_planned=12))
    assert end.diagnosis == "overfitting"
    assert set(_actions(end)) == {"early_stop", "restore_best_checkpoint"}
    unknown = LocalAdvisor().analyze(MNIST_MLP, _metrics(**OVERFIT))
    assert "early_stop" in _actions(unknown) and "switch_optimizer" in _actions(unknown)


# ====================================================================== misreading 2: the trainer's own changes
def test_a_loss_redefinition_is_not_read_as_stalling_or_divergence():
    metrics = _metrics(**SMOOTHED)
    changed = LocalAdvisor().analyze("MLP", metrics, _clean(label_smoothing=0.1, loss_changed_at=[6]))
    unaware = LocalAdvisor().analyze("MLP", metrics, _clean(label_smoothing=0.1))
    assert changed.diagnosis not in ("diverging", "plateau", "overfitting")
    assert changed.diagnosis == "healthy"
    assert any("read from epoch 7 on" in e for e in changed.evidence)
    assert unaware.diagnosis != changed.diagnosis  # the context is what changes the reading
    assert unaware.recommendations and not changed.recommendations


def test_too_few_epochs_after_a_loss_change_fall_back_to_the_error_rate():
    metrics = _metrics(**{k: v[:8] for k, v in SMOOTHED.items()})
    result = LocalAdvisor().analyze("MLP", metrics, _clean(loss_changed_at=[6]))
    assert any("1 - train_accuracy" in e for e in result.evidence)
    assert result.diagnosis != "diverging"


def test_a_jump_right_after_a_change_is_not_divergence():
    # the learning rate was tripled after epoch 6: the loss steps up, then falls again
    metrics = _metrics(train_loss=[1.2, 0.7, 0.5, 0.4, 0.33, 0.28, 0.9, 0.8, 0.72, 0.66, 0.62, 0.60])
    change = ChangeRecord(epoch=6, action={"action": "scale_learning_rate", "factor": 3.0}, before=0.28)
    assert LocalAdvisor().analyze("MLP", metrics).diagnosis == "diverging"
    assert LocalAdvisor().analyze("MLP", metrics, _clean(changes=[change])).diagnosis != "diverging"
    # still divergence when the loss keeps climbing after the change, or leaves its minimum far behind
    climbing = _metrics(train_loss=[1.2, 0.7, 0.5, 0.4, 0.33, 0.28, 0.35, 0.45, 0.6, 0.8])
    assert LocalAdvisor().analyze("MLP", climbing, _clean(changes=[change])).diagnosis == "diverging"
    far = _metrics(train_loss=[1.2, 0.7, 0.5, 0.4, 0.33, 0.28, 2.5, 2.2, 2.0, 1.9])
    assert LocalAdvisor().analyze("MLP", far, _clean(changes=[change])).diagnosis == "diverging"


# ================================================================================================ set-up review
def test_setup_review_before_the_first_epoch():
    ctx = _coupled(inputs=RAW_PIXELS, epochs_done=0)
    result = LocalAdvisor().analyze(MNIST_MLP, TrainingMetrics(), ctx)
    assert LocalAdvisor().analyze(MNIST_MLP, TrainingMetrics()).diagnosis == "unknown"
    assert result.diagnosis == "misconfigured"
    assert len(result.recommendations) == 2
    assert [r.action.action for r in result.recommendations] == ["switch_optimizer", "standardize_inputs"]
    assert result.recommendations[0].confidence == pytest.approx(0.85)
    assert result.recommendations[1].confidence == pytest.approx(0.8)
    assert "Efficient BackProp" in result.recommendations[1].rationale
    assert any("78.57" in e and "255" in e for e in result.evidence)
    assert any("coupled L2" in e and "0.01" in e for e in result.evidence)


def test_a_well_set_up_run_is_not_misconfigured():
    result = LocalAdvisor().analyze("MLP", TrainingMetrics(), _clean(epochs_done=0))
    assert result.diagnosis == "unknown"
    assert result.recommendations == []


def test_mildly_off_inputs_get_less_confidence_than_raw_pixels():
    def confidence(inputs):
        result = LocalAdvisor().analyze("MLP", TrainingMetrics(), _clean(epochs_done=0, inputs=inputs))
        return _actions(result) and next(r.confidence for r in result.recommendations)

    assert confidence(RAW_PIXELS) == pytest.approx(0.8)
    assert confidence(UNIT_PIXELS) == pytest.approx(0.5)
    token_ids = InputStats(mean=1200.0, std=900.0, min=0, max=30000, features=128, integer=True)
    assert not confidence(token_ids)


def test_no_schedule_over_a_long_run_gets_one():
    ctx = _clean(epochs_done=0, scheduler=None, epochs_planned=30)
    result = LocalAdvisor().analyze("MLP", TrainingMetrics(), ctx)
    assert result.diagnosis == "misconfigured"
    assert _actions(result)["set_lr_schedule"].kind == "cosine"
    assert any("1608.03983" in r.rationale for r in result.recommendations)
    warm = LocalAdvisor().analyze("transformer encoder", TrainingMetrics(), ctx).recommendations[0].action
    assert warm.kind == "warmup_cosine" and warm.warmup_epochs == pytest.approx(1.0)
    short = LocalAdvisor().analyze("MLP", TrainingMetrics(), _clean(epochs_done=0, scheduler=None, epochs_planned=5))
    assert short.diagnosis == "unknown"


def test_adam_learning_rate_out_of_range_in_the_setup_review():
    high = LocalAdvisor().analyze("MLP", TrainingMetrics(), _clean(epochs_done=0, learning_rate=0.02))
    low = LocalAdvisor().analyze("MLP", TrainingMetrics(), _clean(epochs_done=0, learning_rate=1e-5))
    assert high.diagnosis == low.diagnosis == "misconfigured"
    assert _actions(high)["scale_learning_rate"].factor == pytest.approx(0.1)
    assert _actions(low)["scale_learning_rate"].factor > 1


# ============================================================================================= changes tried
def test_the_latest_change_is_reported():
    change = ChangeRecord(
        epoch=8,
        action={"action": "set_weight_decay", "value": 0.05},
        provider="local",
        before=0.212,
        after=0.231,
        verdict="reverted",
        reason="val_loss got worse",
    )
    older = ChangeRecord(epoch=3, action={"action": "set_dropout", "p": 0.3}, verdict="kept")
    result = LocalAdvisor().analyze(MNIST_MLP, _metrics(**HELD_BACK), _coupled(changes=[change, older]))
    line = next(e for e in result.evidence if e.startswith("the latest change"))
    assert "set_weight_decay(value=0.05)" in line and "0.212" in line and "0.231" in line and "reverted" in line


def test_a_reverted_change_is_not_proposed_again():
    metrics = _metrics(**OVERFIT)
    first = LocalAdvisor().analyze("MLP", metrics, _clean(epochs_done=11))
    top = first.recommendations[0].action.model_dump()
    reverted = ChangeRecord(epoch=9, action=top, before=0.215, after=0.22, verdict="reverted")
    again = LocalAdvisor().analyze("MLP", metrics, _clean(epochs_done=11, changes=[reverted]))
    assert top not in [r.action.model_dump() for r in again.recommendations]
    assert again.recommendations  # the next hypothesis takes its place
    assert any("tried and reverted" in e for e in again.evidence)


def test_a_setting_on_trial_is_left_alone():
    metrics = _metrics(**OVERFIT)
    first = LocalAdvisor().analyze("MLP, dropout=0.2", metrics, _clean(epochs_done=11, dropout=0.2))
    names = [r.action.action for r in first.recommendations]
    assert "set_weight_decay" in names or "set_dropout" in names or "early_stop" in names
    trial = ChangeRecord(epoch=10, action={"action": "set_weight_decay", "value": 0.02}, verdict="on_trial")
    for action in ("set_weight_decay", "set_dropout", "set_label_smoothing"):
        trial = ChangeRecord(epoch=10, action={"action": action, **_args(action)}, verdict="on_trial")
        result = LocalAdvisor().analyze("MLP", metrics, _clean(epochs_done=11, dropout=0.2, changes=[trial]))
        assert action not in [r.action.action for r in result.recommendations]
    # and with the learning rate on trial, the held-back run gets no learning-rate change either
    lr_trial = ChangeRecord(epoch=10, action={"action": "scale_learning_rate", "factor": 0.5}, verdict="on_trial")
    held = LocalAdvisor().analyze(MNIST_MLP, _metrics(**HELD_BACK), _coupled(learning_rate=0.02, changes=[lr_trial]))
    assert "scale_learning_rate" not in _actions(held)
    assert "scale_learning_rate" in _actions(
        LocalAdvisor().analyze(MNIST_MLP, _metrics(**HELD_BACK), _coupled(learning_rate=0.02))
    )


def _args(action):
    return {"set_weight_decay": {"value": 0.02}, "set_dropout": {"p": 0.4}, "set_label_smoothing": {"x": 0.1}}[action]


# ======================================================================================== per-layer statistics
def _layers(*ratios):
    return [
        LayerStats(name=f"{i}.weight", weight_norm=10.0 + i, grad_norm=0.5, update_ratio=r)
        for i, r in enumerate(ratios)
    ]


def test_large_update_ratios_ask_for_a_smaller_learning_rate():
    metrics = _metrics(**CURVES["healthy"])
    ctx = _clean(epochs_done=20, layers=_layers(1.2e-3, 0.04, 9e-4))
    result = LocalAdvisor().analyze("MLP", metrics, ctx)
    assert any("1.weight" in e and "0.04" in e and "update_ratio" in e for e in result.evidence)
    factor = _actions(result)["scale_learning_rate"].factor
    assert 0.1 <= factor < 1
    calm = LocalAdvisor().analyze("MLP", metrics, _clean(epochs_done=20, layers=_layers(1.2e-3, 2e-3, 9e-4)))
    assert "scale_learning_rate" not in _actions(calm)


def test_tiny_update_ratios_ask_for_a_larger_learning_rate():
    result = LocalAdvisor().analyze(
        "MLP", _metrics(**CURVES["healthy"]), _clean(epochs_done=20, layers=_layers(2e-5, 5e-5, 1e-5))
    )
    assert any("median 2e-05" in e for e in result.evidence)
    assert _actions(result)["scale_learning_rate"].factor > 1


def test_gradient_spikes_give_clipping_at_the_measured_norm():
    grad = [1.0, 1.2, 0.9, 1.1, 1.0, 9.5, 1.05, 0.95, 1.1, 1.0] + [1.0] * 10
    result = LocalAdvisor().analyze("MLP", _metrics(**CURVES["healthy"], grad_norm=grad), _clean(epochs_done=20))
    assert _actions(result)["enable_grad_clipping"].max_norm == pytest.approx(1.5)  # 1.5 x the median norm 1.0
    assert any("9.5" in e and "epoch 6" in e for e in result.evidence)


# ==================================================================================== context over description
def test_context_facts_take_precedence_over_the_description():
    description = "MLP, optimizer=Adam, lr=0.01, weight_decay=0.01, dropout=0.2"
    metrics = _metrics(**{k: v for k, v in HELD_BACK.items() if k != "learning_rate"})
    from_text = LocalAdvisor().analyze(description, metrics)
    assert "switch_optimizer" in _actions(from_text)
    assert "scale_learning_rate" in _actions(from_text)  # lr 0.01 is above Adam's range
    ctx = _clean(epochs_done=11, dropout=0.2, learning_rate=1e-3, scheduler="cosine")
    result = LocalAdvisor().analyze(description, metrics, ctx)
    assert "switch_optimizer" not in _actions(result)
    assert result.diagnosis != "underfitting"  # AdamW's decoupled decay and dropout 0.2 are not strong
    assert not any("above the usual range" in e for e in result.evidence)
    for rec in result.recommendations:  # the numbers come from the context's lr 1e-3, not the text's 0.01
        if rec.action.action == "scale_learning_rate":
            assert rec.action.factor >= 0.5 and "lr 0.001 ->" in rec.rationale


def test_context_num_classes_and_batch_size_are_used():
    stuck = _metrics(train_loss=[6.4, 2.3, 2.45], val_loss=[2.6, 2.3, 2.5], val_accuracy=[0.12, 0.16, 0.10])
    assert LocalAdvisor().analyze("MLP", stuck).diagnosis != "diverging"  # classes unknown from the text
    result = LocalAdvisor().analyze("MLP", stuck, _clean(num_classes=10, epochs_done=3))
    assert result.diagnosis == "diverging" and "10 classes" in result.evidence[0]
    noisy = LocalAdvisor().analyze("batch_size=32", _metrics(**CURVES["noisy"]), _clean(batch_size=128))
    assert _actions(noisy)["set_batch_size"].n == 256


def test_research_for_a_misconfigured_run_offers_the_setup_fixes_with_their_papers():
    insights = LocalAdvisor().research("computer_vision", diagnosis="misconfigured", k=2)
    actions = {i.action.action for i in insights if i.action is not None}
    assert actions == {"switch_optimizer", "standardize_inputs"}
    cited = {c.arxiv_id or c.title for i in insights for c in i.citations}
    assert {"1711.05101", "Efficient BackProp"} <= cited


def test_a_bias_or_norm_shift_with_a_large_update_ratio_is_not_read_as_too_large_steps():
    """Biases and normalisation shifts start at zero: their ratio is large in a healthy run. Only weight matrices
    and filters (dims >= 2) count; without dims, a name ending in 'bias' is left out."""
    metrics = _metrics(**CURVES["healthy"])
    layers = [
        LayerStats(name="0.weight", dims=4, weight_norm=3.0, grad_norm=0.5, update_ratio=2e-3),
        LayerStats(name="1.weight", dims=1, weight_norm=2.8, grad_norm=0.1, update_ratio=0.03),  # a BatchNorm scale
        LayerStats(name="1.bias", weight_norm=0.05, grad_norm=0.1, update_ratio=0.2),
    ]
    result = LocalAdvisor().analyze("CNN", metrics, _clean(epochs_done=20, layers=layers))
    assert "scale_learning_rate" not in _actions(result)
    assert not any("update_ratio" in e for e in result.evidence)
    big = [*layers, LayerStats(name="2.weight", dims=2, weight_norm=5.0, grad_norm=0.5, update_ratio=0.05)]
    result = LocalAdvisor().analyze("CNN", metrics, _clean(epochs_done=20, layers=big))
    assert _actions(result)["scale_learning_rate"].factor < 1
    assert any("2.weight" in e and "1.bias" not in e for e in result.evidence if "update_ratio" in e)


def test_a_classifier_whose_val_accuracy_is_still_at_its_best_is_not_stopped_or_rolled_back():
    """Validation loss rising while validation accuracy keeps its best is confidence growing, not a model getting
    worse: overfitting may be diagnosed, but neither early_stop nor restore_best_checkpoint is recommended."""
    n = len(E)
    loss = CURVES["overfitting"]
    rising_acc = 0.80 + 0.15 * (1 - np.exp(-0.3 * E))  # still improving at the end
    falling_acc = np.concatenate([rising_acc[:10], rising_acc[9] - 0.01 * np.arange(1, n - 9)])
    train_acc = np.minimum(0.99, rising_acc + 0.05)
    advisor = LocalAdvisor()
    # without a context the advisor lists every recommendation (no cap of two), so absence means something
    still = advisor.analyze("MLP", _metrics(**loss, train_accuracy=train_acc, val_accuracy=rising_acc))
    assert still.diagnosis == "overfitting"
    assert not {"early_stop", "restore_best_checkpoint"} & set(_actions(still))
    assert any("still at its best" in e for e in still.evidence)
    worse = advisor.analyze("MLP", _metrics(**loss, train_accuracy=train_acc, val_accuracy=falling_acc))
    assert worse.diagnosis == "overfitting"
    assert {"early_stop", "restore_best_checkpoint"} <= set(_actions(worse))


def test_no_schedule_is_proposed_for_a_short_run():
    """A cosine schedule is proposed from 20 planned epochs on; shorter runs keep their constant rate."""
    short = LocalAdvisor().analyze("MLP", TrainingMetrics(), _clean(scheduler=None, epochs_planned=12))
    assert "set_lr_schedule" not in _actions(short)
    long = LocalAdvisor().analyze("MLP", TrainingMetrics(), _clean(scheduler=None, epochs_planned=40))
    assert _actions(long)["set_lr_schedule"].kind == "cosine"


# ================================================================================ batch-normalised conv nets
BN_CNN = {"Conv2d": 2, "BatchNorm2d": 2, "ReLU": 2, "MaxPool2d": 2, "Flatten": 1, "Dropout": 1, "Linear": 1}


def _bn_cnn(**overrides) -> TrainingContext:
    """The CNN scenario's set-up before epoch 1: Adam 1e-3, no decay, no schedule, standardised images."""
    fields = dict(weight_decay=0.0, batch_size=64, dropout=0.25, epochs_planned=10, epochs_done=0)
    fields.update(train_samples=3500, inputs=STANDARDISED, layer_types=BN_CNN)
    return _coupled(**{**fields, **overrides})


def test_a_batch_normalised_conv_net_at_adams_default_rate_gets_a_short_range_test():
    result = LocalAdvisor().analyze("CNN", TrainingMetrics(), _bn_cnn())
    assert result.diagnosis == "misconfigured"
    (rec,) = result.recommendations
    # a quarter epoch of steps (3500 / 64 -> 55 steps, // 4), over [lr, 30 lr]: the rate a decade below the top
    # of the range is at most 3x the current one
    assert rec.action.model_dump() == {"action": "find_learning_rate", "min_lr": 1e-3, "max_lr": 0.03, "steps": 13}
    for paper in ("1502.03167", "1806.02375", "1506.01186"):
        assert paper in rec.rationale
    assert "at most 0.003" in rec.rationale
    assert any("all 2 convolution(s) feed BatchNorm" in e for e in result.evidence)


@pytest.mark.parametrize(
    "overrides",
    [
        {"layer_types": {**BN_CNN, "BatchNorm2d": 1}},  # a convolution without BatchNorm
        {"layer_types": {"Linear": 3, "BatchNorm1d": 2, "ReLU": 2}},  # no convolution
        {"layer_types": {}},  # the model's layers unknown
        {"learning_rate": 2e-3},  # above Adam's default already
        {"scheduler": "OneCycleLR"},  # the user's plan for the rate
        {"optimizer": "sgd"},
        {"epochs_done": 2},  # a mid-run analysis: the hypothesis is about the starting rate
    ],
)
def test_no_range_test_without_every_convolution_batch_normalised_at_the_start(overrides):
    result = LocalAdvisor().analyze("CNN", TrainingMetrics(), _bn_cnn(**overrides))
    assert "find_learning_rate" not in _actions(result)
    assert not any("feed BatchNorm" in e for e in result.evidence)


@pytest.mark.parametrize(("samples", "steps"), [(3500, 13), (200_000, 30), (300, 10), (None, 10)])
def test_the_range_test_takes_a_quarter_epoch_of_steps_between_10_and_30(samples, steps):
    result = LocalAdvisor().analyze("CNN", TrainingMetrics(), _bn_cnn(train_samples=samples))
    assert _actions(result)["find_learning_rate"].steps == steps


def test_layer_step_sizes_are_not_read_before_the_run_has_a_trend():
    """In the first epochs Adam's steps are large against weights near their initial scale: no rate cut then."""
    two = _metrics(train_loss=[0.70, 0.22], val_loss=[0.27, 0.19])
    big = _clean(epochs_done=2, layers=_layers(1.2e-3, 0.04, 9e-4))
    result = LocalAdvisor().analyze("MLP", two, big)
    assert "scale_learning_rate" not in _actions(result)
    assert not any("update_ratio" in e for e in result.evidence)
    three = _metrics(train_loss=[0.70, 0.22, 0.15], val_loss=[0.27, 0.19, 0.17])
    assert (
        _actions(LocalAdvisor().analyze("MLP", three, _clean(epochs_done=3, layers=big.layers)))[
            "scale_learning_rate"
        ].factor
        < 1
    )


@pytest.mark.parametrize(
    ("optimizer", "decoupled", "weight_decay", "expected"),
    [
        ("adam", False, 0.0, {"action": "switch_optimizer", "name": "adamw", "keep_state": True, "weight_decay": 0.05}),
        ("adam", True, 0.0, {"action": "set_weight_decay", "value": 0.05}),  # Adam with decoupled decay is AdamW
        ("adamw", True, 0.01, {"action": "set_weight_decay", "value": 0.05}),
        ("sgd", False, 0.0, {"action": "set_weight_decay", "value": 5e-4}),
    ],
)
def test_overfitting_adds_weight_decay_decoupled_never_as_l2_in_adam(optimizer, decoupled, weight_decay, expected):
    """The advisor's own set-up review calls coupled L2 in Adam a misconfiguration: against overfitting, Adam
    without decay switches to AdamW with decoupled decay rather than gaining L2 it would then have to undo."""
    ctx = _clean(optimizer=optimizer, decoupled_weight_decay=decoupled, weight_decay=weight_decay, epochs_done=11)
    result = LocalAdvisor().analyze("MLP", _metrics(**OVERFIT), ctx)
    assert result.diagnosis == "overfitting"
    decay = [r for r in result.recommendations if r.action.action in ("set_weight_decay", "switch_optimizer")]
    assert [r.action.model_dump() for r in decay] == [expected]
    if expected["action"] == "switch_optimizer":
        assert "1711.05101" in decay[0].rationale


def test_a_healthy_run_read_from_its_error_rates_names_them():
    acc = [0.78, 0.93, 0.95, 0.96, 0.965, 0.97]
    metrics = _metrics(train_accuracy=acc, val_accuracy=[a - 0.01 for a in acc])
    result = LocalAdvisor().analyze("CNN", metrics)
    assert result.diagnosis == "healthy"
    assert "val_error (1 - val_accuracy) 0.04 is above train_error (1 - train_accuracy) 0.03" in result.evidence[1]
