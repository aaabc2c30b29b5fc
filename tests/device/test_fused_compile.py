"""Every fused CUDA kernel declared with ``ops._fused.define`` compiles with nvcc for float32 and float64."""

from __future__ import annotations

import pytest

from forgeml.ops import _fused

from .nvcc import compile_cuda, elementwise_source, needs_nvcc, type_letters


@needs_nvcc
@pytest.mark.parametrize("ctype", ["float", "double"])
@pytest.mark.parametrize("name", sorted(_fused.SPECS))
def test_elementwise_kernel_compiles(name, ctype):
    spec = _fused.SPECS[name]
    letters = type_letters(spec.in_params) | type_letters(spec.out_params)
    source = elementwise_source(spec.in_params, spec.out_params, spec.body, {t: ctype for t in letters}, spec.preamble)
    compile_cuda(source)


def test_specs_are_declared():
    assert {"gelu_none", "gelu_tanh", "gelu_none_backward", "gelu_tanh_backward", "erfc64"} <= set(_fused.SPECS)
