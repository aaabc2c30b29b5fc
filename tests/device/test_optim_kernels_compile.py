"""The optimizers' fused CUDA kernels (their ``ElementwiseKernel`` bodies) compile with nvcc for float and double.

No CPU test can run them (the CuPy stand-in has no kernels); this catches
syntax, type and overload errors. Values are checked on a GPU by
``tests/device/test_optim_on_cuda.py`` with ``FORGEML_TEST_REAL_CUDA=1``.
"""

from __future__ import annotations

import pytest

from forgeml.optim import adagrad, adam, rmsprop, sgd

from .nvcc import compile_cuda, elementwise_source, needs_nvcc, type_letters

MODULES = (adam, sgd, rmsprop, adagrad)
SPECS = {spec.name: spec for module in MODULES for spec in getattr(module, "CUDA_KERNELS", ())}


@needs_nvcc
@pytest.mark.parametrize("ctype", ["float", "double"])
@pytest.mark.parametrize("name", sorted(SPECS))
def test_optimizer_kernel_compiles(name, ctype):
    spec = SPECS[name]
    letters = type_letters(spec.in_params) | type_letters(spec.out_params)
    assert letters == {"T"}, f"{name} should be generic in the parameter's type T only, has {sorted(letters)}"
    source = elementwise_source(spec.in_params, spec.out_params, spec.body, {"T": ctype}, spec.preamble)
    compile_cuda(source)


def test_the_fused_optimizers_declare_their_kernels():
    assert {"optim_adam", "optim_adam_amsgrad", "optim_sgd", "optim_sgd_momentum"} <= set(SPECS)
    assert len(SPECS) == sum(len(getattr(m, "CUDA_KERNELS", ())) for m in MODULES), "kernel names must be unique"


def test_kernels_are_built_only_on_cupy(checked_cuda):
    """On the stand-in (not CuPy) the portable bodies run: stepping never builds a CUDA kernel."""
    import numpy as np

    import forgeml as fm
    from forgeml.ops import _fused

    before = set(_fused._kernels)
    p = fm.nn.Parameter(fm.tensor(np.ones(4)).to("cuda"))
    for opt in (fm.optim.Adam([p], amsgrad=True), fm.optim.SGD([p], lr=0.1, momentum=0.9)):
        p.grad = fm.tensor(np.ones(4)).to("cuda")
        opt.step()
    assert set(_fused._kernels) == before
