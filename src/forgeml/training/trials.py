"""The keep-or-revert rule: did a change the AI made help, judged on held-out data?

A change applied at an epoch boundary goes on trial for the next epochs. It
is kept when the best validation figure of the trial beats both the best before
the change and what the run was on course to reach without it: the recent
per-epoch gain, projected over the trial with each epoch gaining half what the
one before did (gains shrink as training goes on). For a classifier either the accuracy or (when the loss kept its
definition) the loss may confirm it; otherwise the loss decides. A change made
before the first epoch can only be judged against the untrained model, and the
verdict says so.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["Verdict", "judge_trial"]


@dataclass(frozen=True)
class Verdict:
    """Whether the change helped, the figures it was judged on, and the reasons in words."""

    helped: bool
    metric: str
    before: float
    after: float
    expected: float
    reason: str

    @property
    def improved(self) -> bool:
        """Whether the trial's best beat the best before the change at all (trend or no trend)."""
        return self.after > self.before if self.metric.endswith("accuracy") else self.after < self.before

    def clearly_worse(self, samples: int | None) -> bool:
        """Whether the trial's best fell below the best before the change by more than the measurement's noise:
        one standard error of an accuracy measured on ``samples`` examples (sqrt(p (1 - p) / n)); for a loss,
        or with the sample count unknown, any fall counts."""
        if self.improved:
            return False
        if not self.metric.endswith("accuracy") or not samples:
            return True
        p = min(max(self.before, 0.0), 1.0)
        return self.before - self.after > math.sqrt(p * (1.0 - p) / samples)


def _recent_gain(values: list[float], higher_is_better: bool) -> float:
    """The per-epoch improvement of the best value over the last few epochs (0 when it did not improve)."""
    if len(values) < 2:
        return 0.0
    w = min(3, len(values) - 1)
    if higher_is_better:
        gain = max(values[-w:]) - max(values[:-w])
    else:
        gain = min(values[:-w]) - min(values[-w:])
    return max(gain, 0.0) / w


def _judge(
    name: str, before: list[float], during: list[float], higher_is_better: bool
) -> tuple[bool, float, float, float]:
    best_before = max(before) if higher_is_better else min(before)
    best_during = max(during) if higher_is_better else min(during)
    # Gains shrink as training goes on: the next epoch is taken to gain half the recent per-epoch rate, the one
    # after a quarter, and so on, so the whole trial is expected to gain at most one recent epoch's worth.
    gain = _recent_gain(before, higher_is_better) * (1.0 - 0.5 ** len(during))
    if higher_is_better:
        expected = best_before + gain
        helped = best_during > best_before and best_during >= expected
    else:
        expected = best_before - min(gain, 0.5 * abs(best_before))
        helped = best_during < best_before and best_during <= expected
    return helped, best_before, best_during, expected


def judge_trial(
    before: list[dict], during: list[dict], *, loss_comparable: bool = True, from_start: bool = False
) -> Verdict | None:
    """Judge a trial from the per-epoch records before the change (the untrained evaluation first, when there
    was one) and during it. Records are dicts with ``val_accuracy``/``val_loss`` (or ``train_loss`` when there
    is no validation). None when there is nothing to judge on."""
    if not during:
        return None
    candidates = []
    for name, higher in (("val_accuracy", True), ("val_loss", False), ("train_loss", False)):
        if name.endswith("loss") and not loss_comparable:
            continue
        b = [r[name] for r in before if _finite(r.get(name))]
        d = [r[name] for r in during if _finite(r.get(name))]
        if b and d:
            candidates.append((name, higher, b, d))
        if name == "val_loss" and candidates:
            break  # train loss only when there is no validation figure
    if not candidates:
        return None
    results = [(name, *_judge(name, b, d, higher)) for name, higher, b, d in candidates]
    confirming = [r for r in results if r[1]]
    name, helped, best_before, best_during, expected = confirming[0] if confirming else results[0]
    fmt = _pct if name.endswith("accuracy") else _num
    against = "the untrained model" if from_start else "the best before the change"
    reason = (
        f"best {name} {fmt(best_during)} over the {len(during)} epoch(s) of the trial against {fmt(best_before)} for "
        f"{against}"
        + (f" ({fmt(expected)} expected from the recent trend)" if expected != best_before else "")
        + (": it helped, kept" if helped else ": no improvement, reverted")
    )
    return Verdict(helped, name, best_before, best_during, expected, reason)


def _finite(value) -> bool:
    return value is not None and math.isfinite(value)


def _pct(v: float) -> str:
    return f"{100 * v:.2f}%"


def _num(v: float) -> str:
    return f"{v:.4g}"
