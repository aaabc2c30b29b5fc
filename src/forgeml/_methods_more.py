"""Tensor methods for the sorting, scan, sampling, fused pointwise and factory ops (bound by ``_methods``)."""

from __future__ import annotations

from .ops import logical, pointwise, reorder, sampling, scan, sorting, tensor_new

METHODS = {
    "sort": sorting.sort,
    "argsort": sorting.argsort,
    "topk": sorting.topk,
    "multinomial": sampling.multinomial,
    "cumsum": scan.cumsum,
    "cumprod": scan.cumprod,
    "roll": reorder.roll,
    "fliplr": reorder.fliplr,
    "flipud": reorder.flipud,
    "t": reorder.t,
    "any": logical.any,
    "all": logical.all,
    "addcmul": pointwise.addcmul,
    "addcdiv": pointwise.addcdiv,
    "lerp": pointwise.lerp,
    "addcmul_": pointwise.addcmul_,
    "addcdiv_": pointwise.addcdiv_,
    "lerp_": pointwise.lerp_,
    "sqrt_": pointwise.sqrt_,
    "exp_": pointwise.exp_,
    "new_zeros": tensor_new.new_zeros,
    "new_ones": tensor_new.new_ones,
    "new_full": tensor_new.new_full,
    "new_empty": tensor_new.new_empty,
    "new_tensor": tensor_new.new_tensor,
    "type": tensor_new.type_,
}
