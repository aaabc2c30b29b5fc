"""``multinomial``: draw category indices from rows of (unnormalised) probabilities.

Draws come from ``generator`` or the default generator of the input's device,
so ``forgeml.manual_seed`` makes them reproducible. With replacement, each
draw inverts the row's cumulative distribution at a uniform sample; without
replacement, each category gets an exponential key ``E / p`` and the
``num_samples`` smallest keys win (equivalent to drawing one at a time and
renormalising), so zero-probability categories are never chosen.
"""

from __future__ import annotations

from ..backend.device import ignore_float_errors, namespace_of
from ..backend.dtypes import as_dtype
from ..backend.random import generator_for
from ..tensor import Tensor
from .sorting import stable_argsort

__all__ = ["multinomial"]

_INT64 = as_dtype("int64").numpy


def _check(input, num_samples: int, replacement: bool):
    if not isinstance(input, Tensor):
        raise TypeError(f"multinomial(): argument 'input' must be a Tensor, not {type(input).__name__}")
    data = input._data
    if data.dtype.kind != "f":
        raise RuntimeError(f"multinomial only supports floating-point dtypes for input, got: {input.dtype.name}")
    if data.ndim not in (1, 2):
        raise RuntimeError(f"prob_dist must be 1 or 2 dim, got a {data.ndim}-D tensor")
    if isinstance(num_samples, bool) or not isinstance(num_samples, int):
        raise TypeError(f"multinomial(): num_samples must be an int, not {type(num_samples).__name__}")
    if num_samples <= 0:
        raise RuntimeError(f"cannot sample n_sample <= 0 samples (got num_samples={num_samples})")
    n_categories = data.shape[-1]
    if not replacement and num_samples > n_categories:
        raise RuntimeError(
            f"cannot sample n_sample > prob_dist.size(-1) samples without replacement "
            f"(num_samples={num_samples}, {n_categories} categories)"
        )


def multinomial(input, num_samples: int, replacement: bool = False, *, generator=None) -> Tensor:
    """Sample ``num_samples`` category indices (int64) from each row of ``input``'s non-negative weights.

    ``input`` is 1-D (one distribution) or 2-D (one per row); rows need not sum to 1.
    """
    _check(input, num_samples, replacement)
    data = input._data
    xp = namespace_of(data)
    rows = data.reshape(1, -1) if data.ndim == 1 else data
    probs = rows.astype(xp.float64)
    if bool(xp.any(~xp.isfinite(probs) | (probs < 0))):
        raise RuntimeError("probability tensor contains either `inf`, `nan` or element < 0")
    totals = probs.sum(axis=1, keepdims=True)
    if bool(xp.any(totals <= 0)):
        raise RuntimeError("invalid multinomial distribution (sum of probabilities <= 0)")
    n_rows, n_categories = probs.shape
    if not replacement and bool(xp.any((probs > 0).sum(axis=1) < num_samples)):
        raise RuntimeError(
            "invalid multinomial distribution (with replacement=False, not enough non-negative category to sample)"
        )
    gen = generator_for(input.device, generator)
    if replacement:
        u = gen.random((n_rows, num_samples))
        cdf = xp.cumsum(probs, axis=1)
        cdf /= cdf[:, -1:]  # the last entry becomes exactly 1
        # search every row at once: row r's cdf and samples are lifted by r (cdf values lie in [0, 1])
        offsets = xp.arange(n_rows, dtype=xp.float64)[:, None]
        flat = (cdf + offsets).reshape(-1)
        found = xp.searchsorted(flat, (u + offsets).reshape(-1), side="right").reshape(n_rows, num_samples)
        idx = found - xp.arange(n_rows)[:, None] * n_categories
        # a sample that rounding put past the last positive category goes to that category
        last = n_categories - 1 - xp.argmax(xp.flip(probs > 0, axis=1), axis=1)[:, None]
        idx = xp.minimum(idx, last)
    else:
        keys_u = gen.random((n_rows, n_categories))
        with ignore_float_errors():
            keys = xp.where(probs > 0, -xp.log1p(-keys_u) / probs, xp.inf)
        idx = stable_argsort(xp, keys, 1)[:, :num_samples]
    idx = idx.astype(_INT64, copy=False)
    if data.ndim == 1:
        idx = idx.reshape(-1)
    return Tensor._make(xp.ascontiguousarray(idx), False, None)
