"""What the advisor reads from a ``TrainingContext`` besides the curves: a review of the run's set-up, the
per-layer step sizes, the changes already tried, and the rule that keeps a result to a few independent changes.

The set-up review flags, each with the numbers that triggered it:

- an Adam-family optimizer with coupled L2 weight decay -> ``SwitchOptimizer("adamw")`` (Loshchilov & Hutter 2019);
- inputs that are not standardised -> ``StandardizeInputs()`` (LeCun et al. 1998);
- no learning-rate schedule over a run of eight or more epochs -> ``SetLRSchedule("cosine")`` (SGDR, 2017),
  with a one-epoch warm-up for transformers and large batches (Goyal et al. 2017);
- an Adam-family learning rate outside 1e-4..3e-3, plain SGD without momentum;
- a conv net with every convolution batch-normalised, Adam at 1e-3 or below and no schedule, before the first
  epoch -> ``FindLearningRate`` over [lr, 30 lr] (a quarter epoch of steps), which sets the rate a decade below
  where the loss stopped falling: at most 3x (Ioffe & Szegedy 2015, Bjorck et al. 2018, Smith 2017);
- per-layer update ratios (||step|| / ||weight||) far from the healthy ~1e-3.

A result then keeps at most ``MAX_CHANGES`` recommendations, ranked by confidence, each touching a different
setting, with nothing identical to a reverted change and nothing touching a setting whose change is on trial.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ...specs import (
    FindLearningRate,
    Recommendation,
    ScaleLearningRate,
    SetLRSchedule,
    StandardizeInputs,
    SwitchOptimizer,
)
from ._hparams import ADAM_FAMILY, HyperParams, coupled_l2

__all__ = [
    "MAX_CHANGES",
    "SETTING_OF_ACTION",
    "Finding",
    "change_evidence",
    "layer_findings",
    "limit",
    "review_setup",
    "without_tried",
]

MAX_CHANGES = 2  # recommendations per result when a context is given: one hypothesis, a second only if independent
ADAM_LR_RANGE = (1e-4, 3e-3)
SCHEDULE_MIN_EPOCHS = 20  # planned epochs from which a constant learning rate is worth replacing by a schedule
BN_DEFAULT_ADAM_LR = 1e-3  # Adam's default rate: at or below it a batch-normalised conv net is tested for more
BN_MAX_RAISE = 3.0  # the range test for it spans [lr, 10 * BN_MAX_RAISE * lr]; a decade below its top is the cap
BN_RANGE_TEST_STEPS = (10, 30)
UPDATE_RATIO_HIGH = 1e-2
UPDATE_RATIO_LOW = 1e-4

# The setting each action changes: two recommendations on one setting are one hypothesis, and a setting whose
# change is still on trial is left alone. early_stop and restore_best_checkpoint are changes too (of the run).
SETTING_OF_ACTION = {
    "scale_learning_rate": "learning_rate",
    "find_learning_rate": "learning_rate",
    "set_weight_decay": "weight_decay",
    "switch_optimizer": "optimizer",
    "set_dropout": "dropout",
    "set_batch_size": "batch_size",
    "enable_grad_clipping": "grad_clipping",
    "set_label_smoothing": "label_smoothing",
    "switch_scheduler": "scheduler",
    "set_lr_schedule": "scheduler",
    "standardize_inputs": "inputs",
    "early_stop": "stop",
    "restore_best_checkpoint": "weights",
}

_CITE_ADAMW = 'Loshchilov & Hutter, "Decoupled Weight Decay Regularization", ICLR 2019, arXiv 1711.05101'
_CITE_BACKPROP = 'LeCun, Bottou, Orr & Müller, "Efficient BackProp", 1998'
_CITE_SGDR = 'Loshchilov & Hutter, "SGDR: Stochastic Gradient Descent with Warm Restarts", ICLR 2017, arXiv 1608.03983'
_CITE_WARMUP = 'Goyal et al., "Accurate, Large Minibatch SGD", 2017, arXiv 1706.02677'
_CITE_MOMENTUM = 'Sutskever et al., "On the importance of initialization and momentum in deep learning", ICML 2013'
_CITE_BATCHNORM = 'Ioffe & Szegedy, "Batch Normalization", ICML 2015, arXiv 1502.03167'
_CITE_BN_LR = 'Bjorck, Gomes, Selman & Weinberger, "Understanding Batch Normalization", NeurIPS 2018, arXiv 1806.02375'
_CITE_CLR = 'Smith, "Cyclical Learning Rates for Training Neural Networks", WACV 2017, arXiv 1506.01186'
_TRANSFORMER_WORDS = ("transformer", "attention", "bert", "gpt", "vit", "llm")


def _g(v: float) -> str:
    return f"{v:.4g}"


def _round_sig(v: float, digits: int = 2) -> float:
    if v == 0 or not math.isfinite(v):
        return v
    return round(v, digits - 1 - math.floor(math.log10(abs(v))))


def _rec(action, rationale: str, confidence: float) -> Recommendation:
    return Recommendation(action=action, rationale=rationale, confidence=round(float(np.clip(confidence, 0.0, 1.0)), 3))


@dataclass
class Finding:
    """One set-up problem: what was measured (``evidence``) and the change it calls for."""

    evidence: str
    rec: Recommendation


# ------------------------------------------------------------------------------------------------ set-up review
def _coupled_l2(hp: HyperParams) -> Finding | None:
    if not coupled_l2(hp):
        return None
    evidence = (
        f"{hp.optimizer} with weight_decay {_g(hp.weight_decay)} applied as coupled L2 (added to the gradient, "
        "decoupled_weight_decay not set)"
    )
    rationale = (
        f"{hp.optimizer} divides the L2 term wd * theta added to the gradient by its per-parameter scale sqrt(v), so the "
        "weights with large gradients are barely decayed while rarely-updated ones are decayed hard: the effective "
        f"regularisation is mis-scaled and weight_decay {_g(hp.weight_decay)} cannot be tuned meaningfully. Switch "
        f"to AdamW (decoupled decay: theta <- theta - lr * wd * theta), keeping the moment estimates ({_CITE_ADAMW})."
    )
    return Finding(evidence, _rec(SwitchOptimizer(name="adamw", keep_state=True), rationale, 0.85))


def _inputs(context) -> Finding | None:
    s = getattr(context, "inputs", None)
    if s is None or s.integer or s.standardized:
        return None
    spread = s.max - s.min
    reasons = []
    if abs(s.mean) > 0.5 * s.std:
        reasons.append(f"|mean| {_g(abs(s.mean))} > 0.5 std")
    if not 0.5 <= s.std <= 2.0:
        reasons.append(f"std {_g(s.std)} outside [0.5, 2]")
    if spread > 20:
        reasons.append(f"range {_g(spread)} > 20")
    if not reasons:
        return None
    gross = s.std > 5 or abs(s.mean) > 3
    evidence = (
        f"inputs are not standardised: mean {_g(s.mean)}, std {_g(s.std)}, range [{_g(s.min)}, {_g(s.max)}] over "
        f"{s.features} features ({'; '.join(reasons)})"
    )
    rationale = (
        f"Inputs with mean {_g(s.mean)} and std {_g(s.std)} make the first layer's loss surface ill-conditioned"
        + (" (grossly: every step is dominated by the input scale)" if gross else "")
        + f"; standardising them to zero mean and unit variance speeds up and steadies gradient descent ({_CITE_BACKPROP})."
    )
    return Finding(evidence, _rec(StandardizeInputs(), rationale, 0.8 if gross else 0.5))


def _schedule(hp: HyperParams, description: str) -> Finding | None:
    planned = hp.epochs_planned
    if hp.scheduler is not None or planned is None or planned < SCHEDULE_MIN_EPOCHS:
        return None
    left = planned - (hp.epochs_done or 0)
    if left < 3:  # too late for a schedule to matter
        return None
    warmup = any(w in description for w in _TRANSFORMER_WORDS) or (hp.batch_size or 0) >= 1024
    evidence = f"no learning-rate schedule over {planned} planned epochs ({left} left)"
    if warmup:
        action = SetLRSchedule(kind="warmup_cosine", warmup_epochs=1.0)
        why = (
            f"a one-epoch linear warm-up first, since {'a transformer' if (hp.batch_size or 0) < 1024 else 'a large batch'}"
            f" is unstable at the full rate early on ({_CITE_WARMUP}), then "
        )
    else:
        action = SetLRSchedule(kind="cosine")
        why = ""
    rationale = (
        f"A constant learning rate leaves the last epochs bouncing around a minimum: {why}anneal it along a cosine "
        f"over the {left} remaining epochs to 1% of its value ({_CITE_SGDR})."
    )
    return Finding(evidence, _rec(action, rationale, 0.6))


def _learning_rate(hp: HyperParams, lr: float | None) -> Finding | None:
    opt = hp.optimizer or ""
    if lr is None or lr <= 0:
        return None
    if opt in ADAM_FAMILY:
        lo, hi = ADAM_LR_RANGE
        if lo <= lr <= hi:
            return None
        factor = max(0.1, _round_sig(1e-3 / lr)) if lr > hi else min(10.0, _round_sig(1e-3 / lr))
        evidence = f"learning rate {_g(lr)} is {'above' if lr > hi else 'below'} {opt}'s usual range {_g(lo)}..{_g(hi)}"
        rationale = (
            f"{opt} usually trains best with a learning rate between {_g(lo)} and {_g(hi)}; scale {_g(lr)} by "
            f"{_g(factor)} (lr {_g(lr)} -> {_g(lr * factor)})."
        )
        return Finding(evidence, _rec(ScaleLearningRate(factor=factor), rationale, 0.75 if lr > hi else 0.6))
    if opt == "sgd" and hp.momentum is not None and hp.momentum == 0:
        evidence = "plain SGD without momentum"
        rationale = (
            "SGD without momentum crawls along shallow, ill-conditioned directions; add momentum 0.9 "
            f"({_CITE_MOMENTUM}) or switch to AdamW, which adapts the step per parameter."
        )
        return Finding(evidence, _rec(SwitchOptimizer(name="adamw", keep_state=False), rationale, 0.45))
    return None


def _range_test_steps(context) -> int:
    """A quarter of an epoch of steps (10 to 30): the test costs about what one arm of an A/B does."""
    samples, batch = getattr(context, "train_samples", None), getattr(context, "batch_size", None)
    if not samples or not batch:
        return BN_RANGE_TEST_STEPS[0]
    return int(np.clip(math.ceil(samples / batch) // 4, *BN_RANGE_TEST_STEPS))


def _batch_norm_rate(hp: HyperParams, context, lr: float | None) -> Finding | None:
    """Every convolution batch-normalised, Adam at its default rate or below, before the first epoch: BatchNorm
    makes the loss invariant to the scale of those filters, so they tolerate (and gain from) a larger rate. The
    hypothesis is checked by a short range test that may raise the rate at most BN_MAX_RAISE-fold."""
    counts = getattr(context, "layer_types", None) or {}
    convs = sum(n for name, n in counts.items() if name.startswith("Conv"))
    norms = sum(n for name, n in counts.items() if name.startswith("BatchNorm"))
    if (
        (hp.epochs_done or 0) > 0
        or (hp.optimizer or "") not in ADAM_FAMILY
        or lr is None
        or not 0 < lr <= BN_DEFAULT_ADAM_LR
        or hp.scheduler is not None  # a schedule is the user's plan for the rate: left alone
        or convs == 0
        or norms < convs
    ):
        return None
    steps = _range_test_steps(context)
    top = lr * 10 * BN_MAX_RAISE
    evidence = (
        f"all {convs} convolution(s) feed BatchNorm ({norms} BatchNorm layers) and {hp.optimizer} runs at "
        f"lr {_g(lr)}, its default or below, with no schedule"
    )
    rationale = (
        "BatchNorm makes the loss invariant to the scale of the filters before it, which lets such networks train "
        f"at higher learning rates, faster and generalising better ({_CITE_BATCHNORM}; {_CITE_BN_LR}). Test it: a "
        f"learning-rate range test ({_CITE_CLR}) of {steps} steps from {_g(lr)} to {_g(top)}, then the rate a "
        f"decade below where the loss stopped falling, so at most {_g(lr * BN_MAX_RAISE)}, and the current rate "
        "if the loss turned up early."
    )
    return Finding(evidence, _rec(FindLearningRate(min_lr=lr, max_lr=top, steps=steps), rationale, 0.5))


def review_setup(hp: HyperParams, context, description: str, lr: float | None) -> list[Finding]:
    """The set-up problems the context and the description reveal, most confident first."""
    found = [
        _coupled_l2(hp),
        _inputs(context),
        _schedule(hp, (description or "").lower()),
        _learning_rate(hp, lr) or _batch_norm_rate(hp, context, lr),
    ]
    return sorted((f for f in found if f is not None), key=lambda f: -f.rec.confidence)


def layer_findings(context, lr: float | None) -> list[Finding]:
    """Per-layer update ratios (||step|| / ||weight||) far from the healthy ~1e-3 call for a different rate.

    Only weight matrices and filters count: a bias or a normalisation shift starts at zero, so its norm is tiny
    and its ratio large in a perfectly healthy run."""
    layers = [
        layer
        for layer in getattr(context, "layers", [])
        if layer.update_ratio is not None
        and (layer.dims >= 2 if layer.dims is not None else not layer.name.endswith("bias"))
    ]
    if not layers:
        return []
    lr_text = (lambda f: f" (lr {_g(lr)} -> {_g(lr * f)})") if lr else (lambda f: "")
    big = [layer for layer in layers if layer.update_ratio > UPDATE_RATIO_HIGH]
    if big:
        worst = max(big, key=lambda layer: layer.update_ratio)
        factor = float(np.clip(_round_sig(1e-3 / worst.update_ratio), 0.1, 0.5))
        names = ", ".join(f"{layer.name} {_g(layer.update_ratio)}" for layer in big[:4])
        evidence = (
            f"update_ratio (||step|| / ||weight||) above {_g(UPDATE_RATIO_HIGH)} in {len(big)} of {len(layers)} "
            f"layers ({names}): each step moves those weights by over 1%"
        )
        rationale = (
            f"Layer {worst.name} changes by {_g(100 * worst.update_ratio)}% of its norm per step, ten times more than "
            f"the ~0.1% of a well-tuned run: scale the learning rate by {_g(factor)}{lr_text(factor)}."
        )
        return [Finding(evidence, _rec(ScaleLearningRate(factor=factor), rationale, 0.65))]
    if all(layer.update_ratio < UPDATE_RATIO_LOW for layer in layers):
        median = float(np.median([layer.update_ratio for layer in layers]))
        factor = float(np.clip(_round_sig(1e-3 / max(median, 1e-12)), 2.0, 10.0))
        evidence = (
            f"update_ratio below {_g(UPDATE_RATIO_LOW)} in all {len(layers)} layers (median {_g(median)}): the "
            "steps barely move the weights"
        )
        rationale = (
            f"Each step changes the weights by about {_g(100 * median)}% of their norm, far below the ~0.1% of a "
            f"well-tuned run: scale the learning rate by {_g(factor)}{lr_text(factor)}."
        )
        return [Finding(evidence, _rec(ScaleLearningRate(factor=factor), rationale, 0.5))]
    return []


# ------------------------------------------------------------------------------------------------ changes tried
def _describe(action: dict) -> str:
    name = action.get("action", "?")
    args = ", ".join(f"{k}={_g(v) if isinstance(v, float) else repr(v)}" for k, v in action.items() if k != "action")
    return f"{name}({args})"


_VERDICT_TEXT = {"on_trial": "still on trial", "kept": "kept", "reverted": "reverted", "final": "final"}


def change_evidence(context) -> list[str]:
    """What the latest change did to its metric, and its verdict."""
    changes = getattr(context, "changes", [])
    if not changes:
        return []
    last = max(changes, key=lambda c: c.epoch)
    text = f"the latest change, {_describe(last.action)} after epoch {last.epoch}"
    if last.provider:
        text += f" (advised by {last.provider})"
    if last.before is not None and last.after is not None:
        delta = (last.after - last.before) / max(abs(last.before), 1e-12)
        text += f", took the best {last.metric} from {_g(last.before)} to {_g(last.after)} ({100 * delta:+.1f}%)"
    elif last.before is not None:
        text += f", from a best {last.metric} of {_g(last.before)}"
    text += f": {_VERDICT_TEXT[last.verdict]}"
    if last.reason:
        text += f" ({last.reason})"
    return [text]


def _normalised(action: dict) -> dict:
    """The action as a typed action would dump it (defaults filled in), or as given when it is not valid."""
    try:
        return Recommendation(action=action, rationale="-", confidence=0.0).action.model_dump()
    except ValueError:
        return dict(action)


def _same(a: dict, b: dict) -> bool:
    if a.keys() != b.keys():
        return False
    for key, va in a.items():
        vb = b[key]
        if isinstance(va, int | float) and isinstance(vb, int | float) and not isinstance(va, bool):
            if not math.isclose(float(va), float(vb), rel_tol=1e-6, abs_tol=1e-12):
                return False
        elif va != vb:
            return False
    return True


def without_tried(recs: list[Recommendation], context) -> tuple[list[Recommendation], list[str]]:
    """``recs`` less any identical to a reverted change and any touching a setting whose change is on trial."""
    changes = getattr(context, "changes", [])
    reverted = [_normalised(c.action) for c in changes if c.verdict == "reverted"]
    on_trial = {SETTING_OF_ACTION.get(c.action.get("action")) for c in changes if c.verdict == "on_trial"} - {None}
    kept, notes = [], []
    for rec in recs:
        dumped = rec.action.model_dump()
        setting = SETTING_OF_ACTION.get(rec.action.action)
        if any(_same(dumped, r) for r in reverted):
            notes.append(f"not re-proposing {_describe(dumped)}: the identical change was tried and reverted")
        elif setting in on_trial:
            notes.append(f"leaving {setting} alone while its change is on trial (skipped {_describe(dumped)})")
        else:
            kept.append(rec)
    return kept, notes


def limit(recs: list[Recommendation], n: int = MAX_CHANGES) -> list[Recommendation]:
    """The ``n`` most confident recommendations that each change a different setting."""
    chosen, settings = [], set()
    for rec in sorted(recs, key=lambda r: -r.confidence):
        setting = SETTING_OF_ACTION.get(rec.action.action, rec.action.action)
        if setting in settings:
            continue
        chosen.append(rec)
        settings.add(setting)
        if len(chosen) == n:
            break
    return chosen
