"""A rule engine that reads a run's per-epoch curves and says what is wrong, with evidence and typed actions.

The rules run in order and the first that fires gives the diagnosis:

1. ``diverging``: a non-finite loss (NaN or inf) at any epoch. A value beyond float32's range (about
   3.4e38) counts as non-finite: no float32 training run can record it, and the statistics below would
   overflow on it.
2. ``unknown``: fewer than ``MIN_EPOCHS`` epochs with a finite loss.
3. ``diverging``: the training loss explodes relative to its minimum (at least
   doubles), or rises three epochs in a row by 25% or more.
4. ``noisy``: epoch-to-epoch swings large against the trend: the curve keeps
   changing direction, its swings add up to several times its net change, and its
   scatter about a smooth fit is a few percent of its level. (Checked before the
   trends below, which noise this large would make unreliable.)
5. ``overfitting``: validation loss rising from its best while the training loss
   keeps falling, or a train/validation gap (loss or accuracy) that widens while
   validation stops improving; either only with a real generalisation gap at the end
   (val loss >= 1.15 x train loss, or train accuracy >= 2 points above val accuracy).
5b. ``underfitting`` (held back): validation loss rising from its best with no such gap
   under strong regularisation (coupled L2 in an Adam-family optimizer, coupled weight
   decay >= 5e-3, dropout >= 0.3, label smoothing): less or decoupled regularisation,
   never more.
6. ``underfitting``: training loss still high (little below where it started,
   near chance level, or low accuracy), no train/validation gap, and progress slow
   or flat.
7. ``plateau``: the monitored loss (validation if recorded) improved by less than
   1% over the last few epochs.
8. ``healthy`` otherwise.

Numbers in the recommendations come from the metrics (learning-rate history,
gradient norms) and from hyper-parameters the model description mentions
("lr=0.001", "dropout=0.2", "batch_size=64"); common defaults otherwise.
A loss curve that is missing is replaced by the error rate (1 - accuracy) when
accuracy was recorded.

With a ``TrainingContext`` its facts take precedence over the description's, and:

- the set-up review (:mod:`.setup_review`) runs: on its own before ``MIN_EPOCHS``
  epochs (``misconfigured`` instead of ``unknown`` when it finds something), folded
  into every other diagnosis after (a ``healthy`` run with a confident finding becomes
  ``misconfigured``); per-layer update ratios and gradient-norm spikes join it from
  ``MIN_EPOCHS`` epochs on;
- after ``loss_changed_at`` epoch k the loss curves are read from epoch k+1 on, and a
  step up right after any change in ``changes`` is not divergence unless the loss
  exceeds ``CHANGE_JUMP_FACTOR`` x its minimum;
- the latest change is reported; nothing identical to a reverted change and nothing
  touching a setting whose change is on trial is recommended;
- at most two recommendations remain, ranked, each on a different setting.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import numpy as np

from ...specs import (
    EarlyStop,
    EnableGradClipping,
    Recommendation,
    RestoreBestCheckpoint,
    ScaleLearningRate,
    SetBatchSize,
    SetDropout,
    SetLabelSmoothing,
    SetWeightDecay,
    SwitchOptimizer,
    SwitchScheduler,
    TrainingContext,
    TrainingMetrics,
)
from ._hparams import ADAM_FAMILY, HyperParams, coupled_l2, parse_hparams, with_context
from .setup_review import (
    Finding,
    _g,
    _rec,
    _round_sig,
    change_evidence,
    layer_findings,
    limit,
    review_setup,
    without_tried,
)

__all__ = ["MIN_EPOCHS", "AnalysisResult", "analyze_metrics"]

MIN_EPOCHS = 3  # fewer finite epochs than this: "unknown"
TRIAL_EPOCHS_LEFT = 2  # epochs left from which an overfitting run tries more regularisation instead of stopping
ADAMW_OVERFIT_DECAY = 0.05  # decoupled weight decay the advisor adds against overfitting
PLATEAU_THRESHOLD = 0.01  # relative improvement over the recent window below which progress has stalled
NOISE_CV = 0.03  # scatter about the trend, as a fraction of the curve's level, that counts as noisy
_EPS = 1e-12
_FLOAT32_MAX = 3.4028234663852886e38  # larger magnitudes are read as non-finite (see rule 1)
GAP_RATIO = 0.15  # val loss this far above train loss (relative) is a generalisation gap
GAP_ACCURACY = 0.02  # so is train accuracy this far above val accuracy
CHANGE_JUMP_FACTOR = 3.0  # right after a change, only a loss beyond this multiple of its minimum is divergence
STRONG_COUPLED_WD = 5e-3
STRONG_DROPOUT = 0.3


@dataclass
class AnalysisResult:
    """A diagnosis (one of ``forgeml.specs.DIAGNOSES``), the evidence for it, and typed recommendations."""

    diagnosis: str
    evidence: list[str] = field(default_factory=list)
    recommendations: list[Recommendation] = field(default_factory=list)


@dataclass
class _Curve:
    name: str
    epochs: np.ndarray  # 0-based epochs with a finite value
    y: np.ndarray  # those values
    bad: list[tuple[int, float]]  # (epoch, value) of non-finite entries (or beyond float32's range)

    @property
    def n(self) -> int:
        return len(self.y)


@dataclass
class _Ctx:
    hp: HyperParams
    train: _Curve
    val: _Curve
    train_acc: _Curve
    val_acc: _Curve
    lr: _Curve
    grad: _Curve
    classifier: bool
    evidence: list[str] = field(default_factory=list)
    lr_now: float | None = None  # the learning rate a TrainingContext states, newer than the recorded curve
    change_starts: list[int] = field(default_factory=list)  # 0-based first epochs after the trainer's changes
    loss_from: int = 0  # 0-based epoch from which the loss curves are read (after a change of the loss itself)


def _pct(v: float) -> str:
    return f"{100 * v + 0.0:.1f}%"


def _curve(name: str, values) -> _Curve:
    epochs, ys, bad = [], [], []
    for i, v in enumerate(values or []):
        if v is None:
            continue
        v = float(v)
        if abs(v) <= _FLOAT32_MAX:
            epochs.append(i)
            ys.append(v)
        else:
            bad.append((i, v))
    return _Curve(name, np.asarray(epochs, dtype=np.int64), np.asarray(ys, dtype=np.float64), bad)


def _accuracy(name: str, values) -> _Curve:
    c = _curve(name, values)
    if c.n and np.max(np.abs(c.y)) > 1.0:  # recorded in percent
        c.y = c.y / 100.0
    return c


def _rel(a: float, b: float) -> float:
    """(a - b) relative to |b|."""
    return (a - b) / max(abs(b), _EPS)


def _current_lr(ctx: _Ctx) -> float | None:
    if ctx.lr_now is not None:
        return ctx.lr_now
    return float(ctx.lr.y[-1]) if ctx.lr.n else ctx.hp.lr


def _lr_text(ctx: _Ctx, factor: float) -> str:
    lr = _current_lr(ctx)
    return f" (lr {_g(lr)} -> {_g(lr * factor)})" if lr is not None else ""


def _clip_norm(ctx: _Ctx, upto_epoch: int | None = None) -> tuple[float, str]:
    """A max_norm for gradient clipping, and why that number."""
    if ctx.hp.max_norm:
        value = _round_sig(ctx.hp.max_norm / 2)
        return value, f"the description already clips at {_g(ctx.hp.max_norm)}; halving it to {_g(value)}"
    g = ctx.grad.y if upto_epoch is None else ctx.grad.y[ctx.grad.epochs < upto_epoch]
    if len(g) >= 2:
        value = float(np.clip(_round_sig(1.5 * float(np.median(g))), 0.1, 10.0))
        return value, f"1.5 x the median gradient norm of the healthy epochs ({_g(float(np.median(g)))})"
    return 1.0, "the common default of 1.0"


def _sorted(recs: list[Recommendation]) -> list[Recommendation]:
    return sorted(recs, key=lambda r: -r.confidence)


def _aligned(a: _Curve, b: _Curve) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    common, ia, ib = np.intersect1d(a.epochs, b.epochs, return_indices=True)
    return common, a.y[ia], b.y[ib]


# ----------------------------------------------------------------------------- rules
def _nonfinite(ctx: _Ctx) -> AnalysisResult | None:
    hits = [c for c in (ctx.train, ctx.val) if c.bad]
    if not hits:
        return None
    evidence = []
    first_bad = min(c.bad[0][0] for c in hits)
    for c in hits:
        epoch, value = c.bad[0]
        text = f"{c.name} is {value} at epoch {epoch + 1}"
        before = c.epochs < epoch
        if before.any():
            yb, eb = c.y[before], c.epochs[before]
            i = int(np.argmin(yb))
            text += f" (last finite value {_g(yb[-1])} at epoch {eb[-1] + 1}; best {_g(yb[i])} at epoch {eb[i] + 1})"
        text += f"; non-finite in {len(c.bad)} of {len(c.bad) + c.n} recorded epochs"
        if any(math.isfinite(value) for _, value in c.bad):
            text += " (values beyond float32's range count as non-finite)"
        evidence.append(text)
    if ctx.grad.n:
        g = ctx.grad.y[ctx.grad.epochs < first_bad]
        if len(g) >= 2 and g[-1] > 3 * np.median(g):
            evidence.append(f"grad_norm grew to {_g(g[-1])} before the failure (median {_g(float(np.median(g)))})")
    conf = 0.95
    norm, why = _clip_norm(ctx, first_bad)
    recs = [
        _rec(
            ScaleLearningRate(factor=0.1),
            f"A non-finite loss means the updates overshoot: cut the learning rate tenfold{_lr_text(ctx, 0.1)}.",
            conf * 0.95,
        ),
        _rec(
            RestoreBestCheckpoint(),
            f"Weights after epoch {first_bad} produced a non-finite loss and cannot be trusted; resume from the best checkpoint.",
            conf * 0.95,
        ),
        _rec(
            EnableGradClipping(max_norm=norm),
            f"Clip the gradient norm at {_g(norm)} ({why}) so one bad batch cannot blow the weights up again.",
            conf * 0.85,
        ),
    ]
    return AnalysisResult("diverging", evidence, _sorted(recs))


def _too_short(ctx: _Ctx) -> AnalysisResult | None:
    longest = max(ctx.train.n, ctx.val.n)
    if longest >= MIN_EPOCHS:
        return None
    if longest == 0:
        return AnalysisResult("unknown", ["no finite loss or accuracy values were recorded"], [])
    return AnalysisResult(
        "unknown",
        [f"only {longest} epoch(s) with a finite loss recorded; at least {MIN_EPOCHS} are needed to read a trend"],
        [],
    )


def _since(c: _Curve, epoch: int) -> _Curve:
    """``c`` from 0-based ``epoch`` on."""
    keep = c.epochs >= epoch
    return _Curve(c.name, c.epochs[keep], c.y[keep], [(e, v) for e, v in c.bad if e >= epoch])


def _exploding(ctx: _Ctx) -> AnalysisResult | None:
    strict = ctx.train.n < MIN_EPOCHS  # only validation loss: demand a bigger rise (it may be overfitting)
    c = ctx.val if strict else ctx.train
    y = c.y
    if len(y) < MIN_EPOCHS:
        return None
    i_min = int(np.argmin(y))
    if i_min == len(y) - 1:
        return None
    y_min, last = float(y[i_min]), float(y[-1])
    # A step up right after one of the trainer's own changes is that change's effect, not divergence: read
    # the curve again from the change on, unless the loss left its minimum far behind.
    starts = [e for e in ctx.change_starts if c.epochs[i_min] < e <= c.epochs[-1]]
    if starts and not (y_min > 0 and last > CHANGE_JUMP_FACTOR * y_min):
        after = replace(ctx, train=_since(ctx.train, starts[-1]), val=_since(ctx.val, starts[-1]), change_starts=[])
        return _exploding(after)
    scale = max(abs(y_min), 1e-3 * float(np.max(np.abs(y))), _EPS)
    rise = (last - y_min) / scale
    tail = y[-4:]
    rising = len(tail) == 4 and bool(np.all(np.diff(tail) > 0))
    if not (rise >= (2.0 if strict else 1.0) or (not strict and rising and rise >= 0.25)):
        return None
    # A rise no bigger than the curve's usual epoch-to-epoch step is noise, not divergence.
    step = float(np.median(np.abs(np.diff(y))))
    if last - y_min < 2.5 * step:
        return None
    evidence = [
        f"{c.name} rose from its minimum {_g(y_min)} at epoch {c.epochs[i_min] + 1} to {_g(last)} at epoch "
        f"{c.epochs[-1] + 1} (+{_pct(rise)})"
    ]
    if rising:
        evidence.append(f"{c.name} rose in each of the last 3 epochs: {', '.join(_g(v) for v in tail)}")
    conf = 0.55 + 0.35 * min(1.0, math.log2(1.0 + rise) / 3.0)
    if ctx.grad.n >= 3:
        g = ctx.grad.y
        if np.median(g[:-1]) > 0 and g[-1] >= 5 * np.median(g[:-1]):
            evidence.append(f"grad_norm is {_g(g[-1])}, {_g(g[-1] / np.median(g[:-1]))}x its earlier median")
            conf += 0.05
    conf = min(conf, 0.95)
    factor = 0.1 if rise >= 1.0 else 0.3
    best_curve = ctx.val if ctx.val.n else c
    best_epoch = int(best_curve.epochs[int(np.argmin(best_curve.y))]) + 1
    norm, why = _clip_norm(ctx, int(c.epochs[i_min]) + 1)
    recs = [
        _rec(
            ScaleLearningRate(factor=factor),
            f"The loss climbs away from its minimum, the signature of steps that are too large: scale the learning "
            f"rate by {factor}{_lr_text(ctx, factor)}.",
            conf * 0.95,
        ),
        _rec(
            EnableGradClipping(max_norm=norm),
            f"Clip the gradient norm at {_g(norm)} ({why}) to stop single large steps from undoing progress.",
            conf * 0.85,
        ),
        _rec(
            RestoreBestCheckpoint(),
            f"Go back to the best weights (epoch {best_epoch}) instead of continuing from the diverged ones.",
            conf * 0.9,
        ),
    ]
    return AnalysisResult("diverging", evidence, _sorted(recs))


def _switch_to_adamw(hp, why: str, confidence: float, weight_decay: float | None = None) -> Recommendation:
    """Adam's coupled L2 -> AdamW's decoupled decay, keeping the moments; ``why`` says what the coupling does here.
    ``weight_decay`` sets AdamW's decay (None: the current value)."""
    decay = hp.weight_decay if weight_decay is None else weight_decay
    return _rec(
        SwitchOptimizer(name="adamw", keep_state=True, weight_decay=weight_decay),
        f"{why} AdamW applies weight_decay {_g(decay)} directly to the weights, keeping the moment "
        'estimates (Loshchilov & Hutter, "Decoupled Weight Decay Regularization", ICLR 2019, arXiv 1711.05101).',
        confidence,
    )


def _more_weight_decay(hp: HyperParams, confidence: float) -> Recommendation | None:
    """More weight decay against overfitting, always decoupled from Adam's adaptive step: coupled L2 in Adam is
    what the set-up review calls a misconfiguration, so Adam switches to AdamW rather than gaining L2."""
    if coupled_l2(hp):
        return _switch_to_adamw(
            hp,
            f"Raising coupled L2 in {hp.optimizer} regularises badly: the decay is divided by the adaptive step "
            "scale, so the weights that fit the training set most are decayed least.",
            confidence,
        )
    if hp.optimizer == "adam" and hp.decoupled_weight_decay is not True:
        return _switch_to_adamw(
            hp,
            "The model fits the training set better than it generalises: add weight decay, decoupled from Adam's "
            "adaptive step scale (as coupled L2 it would barely decay the weights that fit the training set most).",
            confidence,
            weight_decay=ADAMW_OVERFIT_DECAY,
        )
    if hp.weight_decay:
        wd = float(np.clip(_round_sig(hp.weight_decay * 5), 1e-4, 0.1))
        if wd <= hp.weight_decay:
            return None
        why = f"raise weight decay from {_g(hp.weight_decay)} to {_g(wd)}"
    else:
        decoupled = hp.optimizer == "adamw" or hp.decoupled_weight_decay is True
        wd = ADAMW_OVERFIT_DECAY if decoupled else 5e-4
        why = f"add weight decay {_g(wd)}" + (" (up from AdamW's default 0.01)" if hp.optimizer == "adamw" else "")
    return _rec(
        SetWeightDecay(value=wd), f"The model fits the training set better than it generalises: {why}.", confidence
    )


def _overfitting(ctx: _Ctx) -> AnalysisResult | None:
    evidence: list[str] = []
    strength = 0.0
    since = 0
    best_epoch = None
    common, t, v = _aligned(ctx.train, ctx.val)
    if len(common) >= 4:
        b = int(np.argmin(v))
        since = len(v) - 1 - b
        v_rise = _rel(v[-1], v[b])
        t_drop = -_rel(t[-1], t[b])
        after = v[b:]
        sustained = (
            since >= 2
            and np.median(v[b + 1 :]) >= v[b] + 0.015 * abs(v[b])
            and np.polyfit(np.arange(len(after)), after, 1)[0] > 0
        )
        if sustained and v_rise >= 0.03 and t_drop > 0:
            best_epoch = int(common[b]) + 1
            evidence.append(
                f"val_loss rose from its best {_g(v[b])} at epoch {best_epoch} to {_g(v[-1])} at epoch {common[-1] + 1} "
                f"(+{_pct(v_rise)}) while train_loss fell from {_g(t[b])} to {_g(t[-1])} (-{_pct(t_drop)})"
            )
            strength = 0.4 * min(1.0, v_rise / 0.2) + 0.3 * min(1.0, since / 5) + 0.3 * min(1.0, t_drop / 0.2)
        else:
            gap = v - t
            third = max(1, len(gap) // 3)
            g_early, g_last = float(np.mean(gap[:third])), float(gap[-1])
            w = min(3, len(v) - 1)
            v_recent = -_rel(float(np.min(v[-w:])), float(np.min(v[:-w])))
            t_recent = -_rel(float(np.min(t[-w:])), float(np.min(t[:-w])))
            rel_gap = g_last / max(abs(v[-1]), _EPS)
            if (
                g_last > 0
                and rel_gap >= 0.15
                and g_last >= 1.5 * max(g_early, 0.0)
                and g_last - g_early >= 0.1 * abs(v[-1])
                and v_recent < PLATEAU_THRESHOLD
                and t_recent > v_recent + 0.01
            ):
                evidence.append(
                    f"the train/val loss gap widened from {_g(g_early)} (first epochs) to {_g(g_last)} "
                    f"({_pct(rel_gap)} of val_loss) while val_loss improved only {_pct(max(v_recent, 0))} over the "
                    f"last {w} epochs and train_loss {_pct(t_recent)}"
                )
                strength = 0.3 + 0.4 * min(1.0, rel_gap / 0.5)
                best_epoch = int(common[int(np.argmin(v))]) + 1
    common, ta, va = _aligned(ctx.train_acc, ctx.val_acc)
    if len(common) >= 4:
        b = int(np.argmax(va))
        acc_since = len(va) - 1 - b
        drop = float(va[b] - va[-1])
        gap = ta - va
        third = max(1, len(gap) // 3)
        if acc_since >= 2 and drop >= 0.02 and ta[-1] > ta[b]:
            evidence.append(
                f"val_accuracy fell from its best {_pct(va[b])} at epoch {common[b] + 1} to {_pct(va[-1])} while "
                f"train_accuracy rose to {_pct(ta[-1])}"
            )
            strength = max(strength, 0.3) + 0.15
            since = max(since, acc_since)
            best_epoch = best_epoch or int(common[b]) + 1
        elif gap[-1] >= 0.1 and gap[-1] - float(np.mean(gap[:third])) >= 0.05 and va[-1] - np.max(va[:-2]) < 0.005:
            evidence.append(
                f"train_accuracy {_pct(ta[-1])} vs val_accuracy {_pct(va[-1])}: a {_pct(gap[-1])} gap, up from "
                f"{_pct(float(np.mean(gap[:third])))} in the first epochs, with val_accuracy no longer improving"
            )
            strength = max(strength, 0.3) + 0.1
            best_epoch = best_epoch or int(common[b]) + 1
    if not evidence:
        return None
    gap, gap_text = _generalisation_gap(ctx)
    if not gap:
        return None  # validation got worse without the model fitting the training set any better than it
    evidence.append(gap_text)
    conf = min(0.95, 0.5 + 0.45 * min(1.0, strength))
    hp = ctx.hp
    decay = _more_weight_decay(hp, conf * 0.85)
    recs = [decay] if decay is not None else []
    if hp.dropout is None or hp.dropout < 0.6:
        p = 0.3 if hp.dropout is None else round(min(hp.dropout + 0.2, 0.6), 2)
        before = f"from {_g(hp.dropout)} " if hp.dropout is not None else ""
        recs.append(
            _rec(SetDropout(p=p), f"Stronger dropout ({before}to {p}) regularises the hidden units.", conf * 0.8)
        )
    # A rising validation loss with the validation accuracy still at its best is a classifier growing confident,
    # not one getting worse: stopping or going back would throw away what the last epochs gained.
    acc = ctx.val_acc
    still_best = bool(acc.n >= 3 and float(np.max(acc.y[-2:])) >= float(np.max(acc.y)) - 0.002)
    if since >= 1 and still_best:
        evidence.append(
            f"val_accuracy is still at its best ({_pct(float(np.max(acc.y)))}) in the last 2 epochs: "
            "no early stop and no restore"
        )
    if since >= 3 and not still_best:
        recs.append(
            _rec(
                EarlyStop(),
                f"Validation has not improved for {since} epochs since its best at epoch {best_epoch}; stop here.",
                conf * min(0.9, 0.6 + 0.1 * since),
            )
        )
    if best_epoch is not None and since >= 1 and not still_best:
        recs.append(
            _rec(
                RestoreBestCheckpoint(),
                f"The best validation result was at epoch {best_epoch}; keep those weights, not the overfitted ones.",
                conf * 0.85,
            )
        )
    if ctx.classifier and (hp.label_smoothing is None or hp.label_smoothing < 0.1):
        recs.append(
            _rec(
                SetLabelSmoothing(x=0.1),
                "Label smoothing 0.1 stops the classifier from driving its logits to over-confident extremes.",
                conf * 0.6,
            )
        )
    left = hp.epochs_planned - (hp.epochs_done or 0) if hp.epochs_planned is not None else None
    if left is not None and left >= TRIAL_EPOCHS_LEFT:
        # Epochs remain to try more regularisation on trial (rolled back if it does not help): no stop yet.
        recs = [r for r in recs if not isinstance(r.action, EarlyStop)]
    elif left is not None and any(isinstance(r.action, EarlyStop) for r in recs):
        # Nothing is trained after a stop, so a new setting could never be judged: stop and keep the best weights.
        # (Without a known budget the whole advice stands, for a reader planning the next run.)
        recs = [r for r in recs if isinstance(r.action, EarlyStop | RestoreBestCheckpoint)]
    return AnalysisResult("overfitting", evidence, _sorted(recs))


def _generalisation_gap(ctx: _Ctx) -> tuple[bool, str]:
    """Whether the run generalises clearly worse than it fits (val loss >= 1.15 x train loss, or train accuracy
    two points above val accuracy, at the last common epoch), and the numbers."""
    parts, gap = [], False
    common, t, v = _aligned(ctx.train, ctx.val)
    if len(common):
        ratio = _rel(float(v[-1]), float(t[-1]))
        gap = ratio >= GAP_RATIO
        side = "above" if ratio >= 0 else "below"
        parts.append(f"{ctx.val.name} {_g(v[-1])} vs {ctx.train.name} {_g(t[-1])} ({_pct(abs(ratio))} {side} it)")
    common, ta, va = _aligned(ctx.train_acc, ctx.val_acc)
    if len(common):
        diff = float(ta[-1] - va[-1])
        gap = gap or diff >= GAP_ACCURACY
        parts.append(f"train_accuracy {_pct(ta[-1])} vs val_accuracy {_pct(va[-1])}")
    text = "; ".join(parts) or "no train/validation pair to compare"
    return gap, ("generalisation gap: " if gap else "no generalisation gap: ") + text


def _strong_regularisation(hp: HyperParams) -> list[str]:
    reasons = []
    if coupled_l2(hp):
        reasons.append(
            f"{hp.optimizer} with coupled L2 weight_decay {_g(hp.weight_decay)}: added to the gradient and divided "
            "by the adaptive scale, it is mis-scaled regularisation"
        )
    elif (
        (hp.weight_decay or 0.0) >= STRONG_COUPLED_WD
        and hp.decoupled_weight_decay is not True
        and hp.optimizer not in ("adamw",)
    ):
        reasons.append(f"coupled weight_decay {_g(hp.weight_decay)} (>= {_g(STRONG_COUPLED_WD)})")
    if (hp.dropout or 0.0) >= STRONG_DROPOUT:
        reasons.append(f"dropout {_g(hp.dropout)} (>= {_g(STRONG_DROPOUT)})")
    if hp.label_smoothing:
        reasons.append(f"label smoothing {_g(hp.label_smoothing)}")
    return reasons


def _held_back(ctx: _Ctx) -> AnalysisResult | None:
    """Validation loss rising from its best with no generalisation gap, under strong regularisation: the model is
    held back (underfitting), and more regularisation (what an overfitting reading would add) makes it worse."""
    common, t, v = _aligned(ctx.train, ctx.val)
    if len(common) < 4:
        return None
    b = int(np.argmin(v))
    since, v_rise = len(v) - 1 - b, _rel(float(v[-1]), float(v[b]))
    if since < 2 or v_rise < 0.03:
        return None
    gap, gap_text = _generalisation_gap(ctx)
    reasons = _strong_regularisation(ctx.hp)
    if gap or not reasons:
        return None
    evidence = [
        f"{ctx.val.name} rose from its best {_g(v[b])} at epoch {common[b] + 1} to {_g(v[-1])} at epoch "
        f"{common[-1] + 1} (+{_pct(v_rise)}), but {ctx.train.name} is {_g(t[-1])}, as high as validation: "
        "the model is not overfitting",
        gap_text,
        "regularisation holds the fit back: " + "; ".join(reasons),
    ]
    conf = min(0.9, 0.6 + 0.3 * min(1.0, v_rise / 0.15))
    hp = ctx.hp
    recs = []
    if coupled_l2(hp):
        recs.append(
            _switch_to_adamw(
                hp,
                f"Coupled L2 in {hp.optimizer} is divided by the per-parameter step scale, so it decays the weights "
                "unevenly and holds the fit back without regularising well.",
                conf * 0.95,
            )
        )
    elif hp.weight_decay and any(r.startswith("coupled weight_decay") for r in reasons):
        wd = _round_sig(hp.weight_decay / 10)
        recs.append(
            _rec(
                SetWeightDecay(value=wd),
                f"Weaker weight decay ({_g(hp.weight_decay)} -> {_g(wd)}) lets the model fit what it can.",
                conf * 0.85,
            )
        )
    if (hp.dropout or 0.0) >= STRONG_DROPOUT:
        p = round(hp.dropout / 2, 2)
        recs.append(_rec(SetDropout(p=p), f"Halve dropout ({_g(hp.dropout)} -> {p}) to free capacity.", conf * 0.8))
    if hp.label_smoothing:
        recs.append(
            _rec(SetLabelSmoothing(x=0.0), "Drop label smoothing while the model cannot fit the data.", conf * 0.55)
        )
    return AnalysisResult("underfitting", evidence, _sorted(recs))


def _roughness(y: np.ndarray) -> tuple[float, float, float, int] | None:
    w = y[-12:]
    if len(w) < 5:
        return None
    level = float(np.mean(np.abs(w)))
    if level <= _EPS:
        return None
    x = np.arange(len(w), dtype=np.float64)
    trend = np.polyval(np.polyfit(x, w, 2 if len(w) >= 6 else 1), x)
    cv = float(np.std(w - trend)) / level
    d = np.diff(w)
    tv_ratio = float(np.sum(np.abs(d))) / max(abs(float(w[-1] - w[0])), 1e-3 * level)
    s = np.sign(d[d != 0])
    flips = float(np.mean(s[1:] != s[:-1])) if len(s) >= 2 else 0.0
    return cv, tv_ratio, flips, len(w)


def _noisy(ctx: _Ctx) -> AnalysisResult | None:
    found = []
    for c in (ctx.train, ctx.val):
        r = _roughness(c.y) if c.n else None
        if r and r[0] >= NOISE_CV and r[1] >= 3.0 and r[2] >= 0.4:
            found.append((c, *r))
    if not found:
        return None
    evidence = []
    cv_max = 0.0
    for c, cv, tv, flips, w in found:
        cv_max = max(cv_max, cv)
        evidence.append(
            f"over the last {w} epochs {c.name} changed direction in {_pct(flips)} of its steps; its epoch-to-epoch "
            f"swings add up to {tv:.1f}x its net change, and its scatter about the trend is {_pct(cv)} of its level"
        )
    conf = min(0.9, 0.5 + 0.4 * min(1.0, (cv_max - NOISE_CV) / 0.1) + 0.05 * (len(found) - 1))
    recs = []
    bs = ctx.hp.batch_size
    if bs:
        recs.append(
            _rec(
                SetBatchSize(n=min(2 * bs, 1_000_000)),
                f"Doubling the batch ({bs} -> {2 * bs}) halves the variance of each gradient estimate.",
                conf * 0.85,
            )
        )
    else:
        recs.append(
            _rec(
                SetBatchSize(n=64),
                "A larger batch averages out gradient noise; the batch size is not stated, so 64 assumes the common 32.",
                conf * 0.55,
            )
        )
    recs.append(
        _rec(
            ScaleLearningRate(factor=0.5),
            f"Smaller steps damp the oscillation{_lr_text(ctx, 0.5)}.",
            conf * 0.75,
        )
    )
    if ctx.grad.n >= 4 and np.max(ctx.grad.y) >= 5 * np.median(ctx.grad.y):
        norm, why = _clip_norm(ctx)
        evidence.append(f"grad_norm spikes to {_g(np.max(ctx.grad.y))} (median {_g(np.median(ctx.grad.y))})")
        recs.append(_rec(EnableGradClipping(max_norm=norm), f"Clip gradient spikes at {_g(norm)} ({why}).", conf * 0.7))
    return AnalysisResult("noisy", evidence, _sorted(recs))


def _underfitting(ctx: _Ctx) -> AnalysisResult | None:
    c = ctx.train if ctx.train.n >= MIN_EPOCHS else ctx.val
    y = c.y
    if len(y) < 4:
        return None
    first, best, last = float(y[0]), float(np.min(y)), float(y[-1])
    w = min(3, len(y) - 1)
    recent = -_rel(float(np.min(y[-w:])), float(np.min(y[:-w]))) / w  # relative improvement per epoch
    high = []
    cut = ctx.loss_from > 0 and c.name.endswith("_loss")  # its first value is not the start of training
    if first > 0 and len(y) >= 5 and not cut and (first - best) / first < 0.4:
        high.append(
            f"{c.name} is still {_pct(best / first)} of its first-epoch value {_g(first)} after {len(y)} epochs"
        )
    if ctx.hp.num_classes and first > 0 and last >= 0.5 * math.log(ctx.hp.num_classes):
        high.append(
            f"{c.name} {_g(last)} is above half the chance-level cross-entropy ln({ctx.hp.num_classes}) = "
            f"{_g(math.log(ctx.hp.num_classes))}"
        )
    acc = ctx.train_acc if ctx.train_acc.n else ctx.val_acc
    if acc.n and acc.y[-1] < 0.6:
        high.append(f"{acc.name} is only {_pct(acc.y[-1])}")
    if not high or recent >= 0.03:
        return None
    common, t, v = _aligned(ctx.train, ctx.val)
    if len(common) and _rel(v[-1], t[-1]) >= 0.15:
        return None  # a gap: not a capacity problem
    common, ta, va = _aligned(ctx.train_acc, ctx.val_acc)
    if len(common) and ta[-1] - va[-1] >= 0.05:
        return None
    evidence = high + [
        f"{c.name} improved only {_pct(max(recent, 0.0))} per epoch over the last {w} epochs"
        + (", and validation tracks training (no generalisation gap)" if ctx.val.n and ctx.train.n else ""),
        "the model likely lacks capacity: consider a wider or deeper architecture (see architecture suggestions)",
    ]
    conf = min(0.85, 0.5 + 0.1 * len(high) + 0.15 * (1.0 - max(recent, 0.0) / 0.03))
    hp = ctx.hp
    recs = []
    lr = _current_lr(ctx)
    lr_high = lr is not None and ((hp.optimizer in ("adam", "adamw") and lr >= 3e-3) or lr >= 0.3)
    recs.append(
        _rec(
            ScaleLearningRate(factor=2.0),
            f"Progress is slow at a high loss: larger steps may get further{_lr_text(ctx, 2.0)}"
            + (" (the learning rate is already high, so try this last)" if lr_high else "")
            + ".",
            conf * (0.35 if lr_high else 0.6),
        )
    )
    if hp.dropout:
        p = round(hp.dropout / 2, 2) if hp.dropout > 0.1 else 0.0
        recs.append(
            _rec(
                SetDropout(p=p), f"Less dropout ({_g(hp.dropout)} -> {p}) frees capacity the model needs.", conf * 0.75
            )
        )
    if coupled_l2(hp):
        recs.append(
            _rec(
                SwitchOptimizer(name="adamw", keep_state=True),
                f"{hp.optimizer}'s coupled L2 (weight_decay {_g(hp.weight_decay)}) is rescaled by the adaptive step "
                "and holds the fit back unevenly; AdamW decouples it (Loshchilov & Hutter, ICLR 2019, arXiv 1711.05101).",
                conf * 0.7,
            )
        )
    elif hp.weight_decay:
        wd = _round_sig(hp.weight_decay / 10)
        recs.append(
            _rec(
                SetWeightDecay(value=wd),
                f"Weaker weight decay ({_g(hp.weight_decay)} -> {_g(wd)}) stops regularisation from holding the fit back.",
                conf * 0.7,
            )
        )
    if hp.label_smoothing:
        recs.append(
            _rec(SetLabelSmoothing(x=0.0), "Drop label smoothing while the model cannot yet fit the data.", conf * 0.5)
        )
    return AnalysisResult("underfitting", evidence, _sorted(recs))


def _plateau(ctx: _Ctx) -> AnalysisResult | None:
    c = ctx.val if ctx.val.n >= 5 else ctx.train
    y = c.y
    if len(y) < 5:
        return None
    w = max(3, min(5, len(y) // 2))
    if len(y) < w + 2:
        w = len(y) - 2
    before, recent = float(np.min(y[:-w])), float(np.min(y[-w:]))
    improvement = -_rel(recent, before)
    if improvement >= PLATEAU_THRESHOLD:
        return None
    best, last_gain = float(y[0]), 0
    for i, value in enumerate(y[1:], start=1):
        if value < best - PLATEAU_THRESHOLD * abs(best):
            last_gain = i
        best = min(best, float(value))
    flat = len(y) - 1 - last_gain
    evidence = [
        f"{c.name} improved {_pct(max(improvement, 0.0))} over the last {w} epochs (best {_g(recent)} vs {_g(before)} "
        f"before), below the {_pct(PLATEAU_THRESHOLD)} threshold",
        f"no gain of 1% or more for {flat} epochs (last at epoch {c.epochs[last_gain] + 1})",
    ]
    conf = float(np.clip(0.45 + 0.07 * flat, 0.5, 0.9))
    recs = []
    lr = ctx.lr.y
    decayed = len(lr) >= 2 and lr[-1] < 0.1 * lr[0]
    if decayed:
        evidence.append(f"the learning rate has already decayed from {_g(lr[0])} to {_g(lr[-1])}")
        recs.append(
            _rec(
                SwitchScheduler(
                    name="CosineAnnealingLR", params={"T_max": max(10, len(y)), "eta_min": _round_sig(float(lr[-1]))}
                ),
                f"The schedule has decayed the learning rate to {_g(lr[-1])}: a fresh cosine cycle from a larger rate "
                "(a warm restart) can leave the current basin.",
                conf * 0.6,
            )
        )
        recs.append(
            _rec(
                EarlyStop(),
                f"With the learning rate already small and no gain for {flat} epochs, more epochs are unlikely to help.",
                conf * (0.75 if flat >= 2 * w else 0.5),
            )
        )
    else:
        if len(lr) >= 2:
            evidence.append(f"the learning rate has stayed at about {_g(lr[-1])}")
        recs.append(
            _rec(
                ScaleLearningRate(factor=0.5),
                f"At a constant learning rate the loss stalls when steps bounce around a minimum; halve it{_lr_text(ctx, 0.5)}.",
                conf * 0.8,
            )
        )
        recs.append(
            _rec(
                SwitchScheduler(name="ReduceLROnPlateau", params={"mode": "min", "factor": 0.5, "patience": 2}),
                "Let the learning rate halve automatically whenever validation stalls for 2 epochs.",
                conf * 0.7,
            )
        )
        if flat >= 2 * w:
            recs.append(_rec(EarlyStop(), f"No gain for {flat} epochs: stop unless the lower rate helps.", conf * 0.45))
    return AnalysisResult("plateau", evidence, _sorted(recs))


def _healthy(ctx: _Ctx) -> AnalysisResult:
    c = ctx.train if ctx.train.n >= MIN_EPOCHS else ctx.val
    y = c.y
    w = min(3, len(y) - 1)
    recent = -_rel(float(np.min(y[-w:])), float(np.min(y[:-w]))) / w
    if recent <= 0 and len(y) < 5:
        return AnalysisResult(
            "unknown",
            [
                f"{c.name} has not improved over its last {w} of {len(y)} epochs; too few epochs to tell a plateau from noise"
            ],
            [],
        )
    evidence = [
        f"{c.name} fell from {_g(y[0])} to {_g(y[-1])} ({_pct(-_rel(y[-1], y[0]))} lower) over {len(y)} epochs and is "
        f"still improving ({_pct(max(recent, 0.0))} per epoch over the last {w})"
    ]
    common, t, v = _aligned(ctx.train, ctx.val)
    if len(common) and c is ctx.train:
        gap = _rel(v[-1], t[-1])
        relation = "tracks" if abs(gap) < 0.15 else "is above" if gap > 0 else "is below"
        evidence.append(f"{ctx.val.name} {_g(v[-1])} {relation} {ctx.train.name} {_g(t[-1])} (gap {_pct(gap)})")
    acc = ctx.val_acc if ctx.val_acc.n else ctx.train_acc
    if acc.n:
        evidence.append(f"{acc.name} reached {_pct(acc.y[-1])}")
    return AnalysisResult("healthy", evidence, [])


def _stuck_at_chance(ctx: _Ctx) -> AnalysisResult | None:
    """A classifier whose accuracy stays near chance (1 / num_classes) is not learning: with a loss that
    does not fall below log(num_classes), the usual cause is a learning rate far too large."""
    classes = ctx.hp.num_classes
    acc = ctx.val_acc if ctx.val_acc.n else ctx.train_acc
    if not ctx.classifier or not classes or classes < 2 or acc.n < 2:
        return None
    chance = 1.0 / classes
    recent = acc.y[-3:]  # the latest epochs: a run that recovered after an earlier fix is not stuck
    best = float(np.max(recent))
    if best > chance + 0.2 * (1.0 - chance):  # 28% for 10 classes, 60% for 2
        return None
    evidence = [
        f"{acc.name} stayed at or below {_pct(best)} over the last {len(recent)} epochs, near the {_pct(chance)} "
        f"of guessing among {classes} classes"
    ]
    if ctx.train.n and float(ctx.train.y[-1]) >= 0.9 * math.log(classes):
        evidence.append(
            f"{ctx.train.name} is {_g(float(ctx.train.y[-1]))}, no better than the {_g(math.log(classes))} of a uniform guess"
        )
    norm, why = _clip_norm(ctx)
    recs = [
        _rec(
            ScaleLearningRate(factor=0.1),
            "A network that stays at chance accuracy is taking steps too large to settle anywhere: scale the learning "
            f"rate by 0.1{_lr_text(ctx, 0.1)}.",
            0.85,
        ),
        _rec(
            EnableGradClipping(max_norm=norm), f"Clip the gradient norm at {_g(norm)} ({why}) while it recovers.", 0.6
        ),
        _rec(
            RestoreBestCheckpoint(),
            "Steps this large can leave the weights damaged (saturated or dead units): go back to the best weights "
            "seen, the initial ones if nothing better came since.",
            0.7,
        ),
    ]
    return AnalysisResult("diverging", evidence, _sorted(recs))


_ADAM_LR_CEILING = 3e-3  # above this, Adam-family optimisers rarely train a network well


def _adam_lr_sanity(ctx: _Ctx, result: AnalysisResult) -> AnalysisResult:
    """Adam's useful learning rates lie around 1e-4..3e-3; a run with a larger one gets a recommendation to
    bring it back to about 1e-3 (with less confidence when the run looks healthy), unless the rule that
    fired already scales it down."""
    lr = _current_lr(ctx)
    if (
        result.diagnosis not in ("underfitting", "plateau", "noisy", "diverging", "healthy")
        or (ctx.hp.optimizer or "") not in ADAM_FAMILY
        or lr is None
        or lr <= _ADAM_LR_CEILING
        or any(isinstance(r.action, ScaleLearningRate) and r.action.factor < 1 for r in result.recommendations)
    ):
        return result
    factor = max(0.1, _round_sig(1e-3 / lr))
    rec = _rec(
        ScaleLearningRate(factor=factor),
        f"{ctx.hp.optimizer} usually trains best with a learning rate between 1e-4 and 3e-3; {_g(lr)} is above that, "
        f"so scale it by {factor}{_lr_text(ctx, factor)}.",
        0.5 if result.diagnosis == "healthy" else 0.75,
    )
    result.recommendations = _sorted([rec, *result.recommendations])
    result.evidence = [*result.evidence, f"the learning rate {_g(lr)} is above the usual range for {ctx.hp.optimizer}"]
    return result


_RULES = (
    _nonfinite,
    _stuck_at_chance,
    _too_short,
    _exploding,
    _noisy,
    _overfitting,
    _held_back,
    _underfitting,
    _plateau,
)


def _grad_spikes(ctx: _Ctx) -> list[Finding]:
    g = ctx.grad.y
    if len(g) < 4 or np.median(g) <= 0 or np.max(g) < 5 * np.median(g):
        return []
    norm, why = _clip_norm(ctx)
    spike = int(np.argmax(g))
    evidence = (
        f"grad_norm spiked to {_g(g[spike])} at epoch {ctx.grad.epochs[spike] + 1}, "
        f"{_g(g[spike] / np.median(g))}x its median {_g(float(np.median(g)))}"
    )
    rationale = f"Clip the gradient norm at {_g(norm)} ({why}) so single spikes cannot throw the weights off."
    return [Finding(evidence, _rec(EnableGradClipping(max_norm=norm), rationale, 0.55))]


def _with_context(ctx: _Ctx, tc: TrainingContext, result: AnalysisResult, description: str) -> AnalysisResult:
    """Fold the set-up review and the changes already tried into ``result``, and keep its best changes."""
    lr = _current_lr(ctx)
    findings = review_setup(ctx.hp, tc, description, lr)
    if max(ctx.train.n, ctx.val.n) >= MIN_EPOCHS:
        # Per-layer step sizes and gradient spikes are read once the run has a trend: in the first epochs Adam's
        # steps are large against weights still near their initial scale, whatever the learning rate.
        findings += layer_findings(tc, lr) + _grad_spikes(ctx)
    evidence = list(result.evidence)
    if findings and (
        result.diagnosis == "unknown"
        or (result.diagnosis == "healthy" and max(f.rec.confidence for f in findings) >= 0.75)
    ):
        result.diagnosis = "misconfigured"
    evidence += [f"setup review: {f.evidence}" for f in findings]
    evidence += change_evidence(tc)
    recs = list(result.recommendations)
    have = {r.action.action for r in recs}
    recs += [f.rec for f in findings if f.rec.action.action not in have]
    recs, notes = without_tried(recs, tc)
    chosen = limit(recs)
    if result.diagnosis == "misconfigured" and not chosen:
        result.diagnosis = "unknown" if max(ctx.train.n, ctx.val.n) < MIN_EPOCHS else "healthy"
    return AnalysisResult(result.diagnosis, evidence + notes, chosen)


def analyze_metrics(
    model_description: str | None,
    metrics: TrainingMetrics | dict,
    context: TrainingContext | dict | None = None,
) -> AnalysisResult:
    """Diagnose a run from its metric history (and, when given, its ``TrainingContext``); see the module
    docstring for the rules."""
    if not isinstance(metrics, TrainingMetrics):
        metrics = TrainingMetrics.model_validate(metrics)
    tc = None
    if context is not None:
        tc = context if isinstance(context, TrainingContext) else TrainingContext.model_validate(context)
    hp = parse_hparams(model_description)
    if tc is not None:
        hp = with_context(hp, tc)
    train = _curve("train_loss", metrics.train_loss)
    val = _curve("val_loss", metrics.val_loss)
    train_acc = _accuracy("train_accuracy", metrics.train_accuracy)
    val_acc = _accuracy("val_accuracy", metrics.val_accuracy)
    notes = []
    enough = MIN_EPOCHS
    if tc is not None and tc.loss_changed_at:
        k = max(tc.loss_changed_at)
        train, val = _since(train, k), _since(val, k)
        enough = MIN_EPOCHS + 1  # a cut curve too short for the trend rules gives way to the error rate
        notes.append(
            f"the loss's definition changed after epoch {k}: train_loss and val_loss are read from epoch {k + 1} on"
        )
    # Without a (usable) loss curve, read the error rate (1 - accuracy) instead.
    if train.n < enough and not train.bad and train_acc.n >= max(MIN_EPOCHS, train.n + 1):
        train = _Curve("train_error (1 - train_accuracy)", train_acc.epochs, 1.0 - train_acc.y, [])
        notes.append("no usable train_loss: reading the error rate 1 - train_accuracy instead")
    if val.n < enough and not val.bad and val_acc.n >= max(MIN_EPOCHS, val.n + 1):
        val = _Curve("val_error (1 - val_accuracy)", val_acc.epochs, 1.0 - val_acc.y, [])
        notes.append("no usable val_loss: reading the error rate 1 - val_accuracy instead")
    description = (model_description or "").lower()
    classifier = bool(
        train_acc.n
        or val_acc.n
        or hp.num_classes
        or hp.label_smoothing is not None
        or any(word in description for word in ("classif", "cross-entropy", "cross_entropy", "crossentropy", "softmax"))
    )
    ctx = _Ctx(
        hp=hp,
        train=train,
        val=val,
        train_acc=train_acc,
        val_acc=val_acc,
        lr=_curve("learning_rate", metrics.learning_rate),
        grad=_curve("grad_norm", metrics.grad_norm),
        classifier=classifier,
        lr_now=tc.learning_rate if tc is not None else None,
        loss_from=max(tc.loss_changed_at) if tc is not None and tc.loss_changed_at else 0,
        change_starts=sorted({c.epoch for c in tc.changes if c.epoch > 0}) if tc is not None else [],
    )
    for rule in _RULES:
        result = rule(ctx)
        if result is not None:
            break
    else:
        result = _healthy(ctx)
    result = _adam_lr_sanity(ctx, result)
    if tc is not None:
        result = _with_context(ctx, tc, result, description)
    result.evidence = result.evidence + notes
    return result
