"""judge_trial: the keep-or-revert rule as a pure function of per-epoch records."""

import math

import pytest

from forgeml.training.trials import judge_trial


def _val(losses, accs=None):
    accs = accs or [None] * len(losses)
    return [{"val_loss": v, **({"val_accuracy": a} if a is not None else {})} for v, a in zip(losses, accs)]


# before: best 0.83; the gain of the last 3 epochs is (1.0 - 0.83) / 3 per epoch; over a 1-epoch trial the run
# is projected to gain half of that: expected = 0.83 - 0.17 / 3 * 0.5.
BEFORE = _val([1.0, 0.9, 0.85, 0.83])
PROJECTED = 0.83 - 0.17 / 3 * 0.5


def test_an_improvement_beyond_the_trend_helped():
    verdict = judge_trial(BEFORE, _val([0.70]))
    assert verdict.helped and verdict.metric == "val_loss"
    assert verdict.before == pytest.approx(0.83) and verdict.after == pytest.approx(0.70)
    assert verdict.expected == pytest.approx(PROJECTED)
    assert "kept" in verdict.reason and "the best before the change" in verdict.reason


def test_an_improvement_smaller_than_the_projected_trend_did_not_help():
    verdict = judge_trial(BEFORE, _val([0.82]))  # better than 0.83, worse than the projection
    assert not verdict.helped and verdict.after == pytest.approx(0.82)
    assert verdict.expected == pytest.approx(PROJECTED) and "reverted" in verdict.reason
    assert "expected from the recent trend" in verdict.reason


def test_the_projection_over_longer_trials_adds_a_shrinking_gain():
    # over 2 epochs the projected gain is 1/2 + 1/4 of an epoch's worth
    verdict = judge_trial(BEFORE, _val([0.84, 0.79]))
    assert verdict.expected == pytest.approx(0.83 - 0.17 / 3 * 0.75)
    assert verdict.helped == (0.79 <= 0.83 - 0.17 / 3 * 0.75)


def test_a_worse_trial_is_reverted_and_a_flat_history_expects_no_gain():
    flat = _val([0.5, 0.5, 0.5, 0.5])
    verdict = judge_trial(flat, _val([0.6, 0.55]))
    assert not verdict.helped and verdict.expected == pytest.approx(0.5)
    assert "expected" not in verdict.reason  # no trend to project
    assert judge_trial(flat, _val([0.49])).helped


def test_either_accuracy_or_a_comparable_loss_may_confirm_a_classifier_change():
    before = _val([1.0, 0.8], [0.60, 0.70])
    loss_only = _val([0.6], [0.70])  # loss better, accuracy not
    verdict = judge_trial(before, loss_only)
    assert verdict.helped and verdict.metric == "val_loss"
    acc_only = _val([0.9], [0.75])
    verdict = judge_trial(before, acc_only)
    assert verdict.helped and verdict.metric == "val_accuracy" and "75.00%" in verdict.reason
    neither = judge_trial(before, _val([0.9], [0.65]))
    assert not neither.helped and neither.metric == "val_accuracy"  # the first figure is reported


def test_a_loss_that_changed_definition_is_not_compared_only_accuracy_is():
    before = _val([1.0, 0.8], [0.60, 0.70])
    # label smoothing raised the loss: the loss is not comparable, accuracy decides
    verdict = judge_trial(before, _val([1.3], [0.78]), loss_comparable=False)
    assert verdict.helped and verdict.metric == "val_accuracy"
    verdict = judge_trial(before, _val([0.2], [0.68]), loss_comparable=False)
    assert not verdict.helped and verdict.metric == "val_accuracy"
    # with the loss comparable, the lower loss would have confirmed it
    assert judge_trial(before, _val([0.2], [0.68])).helped
    # a regression whose loss changed definition has nothing to be judged on
    assert judge_trial(_val([1.0]), _val([0.5]), loss_comparable=False) is None


def test_from_start_is_judged_against_the_untrained_model():
    verdict = judge_trial([{"epoch": 0, "val_loss": 2.3}], _val([1.1]), from_start=True)
    assert verdict.helped and "the untrained model" in verdict.reason
    assert "the best before the change" not in verdict.reason


def test_a_regression_without_accuracy_is_judged_on_val_loss():
    before = [{"val_loss": 4.0, "train_loss": 4.2}, {"val_loss": 3.0, "train_loss": 3.1}]
    during = [{"val_loss": 3.5, "train_loss": 1.0}]  # the train loss improved, validation did not
    verdict = judge_trial(before, during)
    assert verdict.metric == "val_loss" and not verdict.helped


def test_without_validation_the_train_loss_decides():
    before = [{"train_loss": 2.0, "val_loss": None}, {"train_loss": 1.5, "val_loss": None}]
    verdict = judge_trial(before, [{"train_loss": 1.2, "val_loss": None}])
    assert verdict.metric == "train_loss" and verdict.helped
    verdict = judge_trial(before, [{"train_loss": 1.6, "val_loss": None}])
    assert verdict.metric == "train_loss" and not verdict.helped


def test_non_finite_figures_are_ignored_and_nothing_to_judge_gives_none():
    assert judge_trial(BEFORE, []) is None
    assert judge_trial([], _val([0.5])) is None
    verdict = judge_trial(BEFORE, _val([math.nan, 0.7]))
    assert verdict.helped and verdict.after == pytest.approx(0.7)
    assert judge_trial(BEFORE, _val([math.inf])) is None


def test_clearly_worse_allows_for_the_noise_of_a_small_validation_set():
    """An accuracy 1 point lower on 200 examples is within one standard error (sqrt(.95 * .05 / 200) = 1.5
    points): not clearly worse. On 5,000 examples (0.31 points) it is; a loss that rose always is."""
    verdict = judge_trial([{"val_accuracy": 0.95}], [{"val_accuracy": 0.94}], loss_comparable=False)
    assert not verdict.helped and not verdict.improved
    assert not verdict.clearly_worse(200)
    assert verdict.clearly_worse(5000)
    assert verdict.clearly_worse(None)
    better = judge_trial([{"val_accuracy": 0.95}], [{"val_accuracy": 0.96}], loss_comparable=False)
    assert better.improved and not better.clearly_worse(5000)
    loss = judge_trial([{"val_loss": 0.30}], [{"val_loss": 0.31}])
    assert loss.metric == "val_loss" and loss.clearly_worse(200)
