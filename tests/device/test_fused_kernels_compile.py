"""The fused CUDA kernels of the nn ops (``ops._fused_nn``) compile with nvcc.

Without a GPU they cannot run here; nvcc still checks them: each ``RawModule``
source is compiled as it is (``nvcc --ptx -arch=sm_80 -std=c++17``), each
``ElementwiseKernel`` body wrapped in a minimal ``__global__`` function for
``T = float`` and ``T = double``. Values are checked against PyTorch on a GPU.
"""

from __future__ import annotations

import re

import pytest

from forgeml.ops import _fused_nn

from .nvcc import compile_cuda, elementwise_source, needs_nvcc, type_letters


@needs_nvcc
@pytest.mark.parametrize("name", sorted(_fused_nn.RAW_SOURCES))
def test_raw_module_compiles(name):
    compile_cuda(_fused_nn.RAW_SOURCES[name])


@needs_nvcc
@pytest.mark.parametrize("ctype", ["float", "double"])
@pytest.mark.parametrize("name", sorted(_fused_nn.SPECS))
def test_elementwise_kernel_compiles(name, ctype):
    spec = _fused_nn.SPECS[name]
    letters = type_letters(spec.in_params) | type_letters(spec.out_params)
    source = elementwise_source(spec.in_params, spec.out_params, spec.body, {t: ctype for t in letters}, spec.preamble)
    compile_cuda(source)


def test_every_kernel_the_ops_launch_is_declared():
    """The Python side asks for kernels by name: each must exist in a source (for float32 and float64)."""
    wanted = {
        "softmax": ["softmax", "softmax_backward"],
        "cross_entropy": ["cross_entropy"],
        "layer_norm": ["layer_norm", "layer_norm_backward"],
    }
    assert set(wanted) == set(_fused_nn.RAW_SOURCES)
    for source, kernels in wanted.items():
        text = _fused_nn.RAW_SOURCES[source]
        macros = set(re.findall(r"extern \"C\" __global__ void (forgeml_\w+)##SUFFIX", text))
        suffixes = set(re.findall(r"^FORGEML_\w+\((?:float|double), (f32|f64)\)$", text, flags=re.M))
        assert suffixes == {"f32", "f64"}, source
        assert {f"forgeml_{k}_" for k in kernels} == macros, source
    assert {"nn_cross_entropy_backward", "nn_dropout", "nn_dropout_backward", "nn_bias_add"} <= set(_fused_nn.SPECS)
    assert f"#define FORGEML_BLOCK {_fused_nn.BLOCK}" in _fused_nn.RAW_SOURCES["softmax"]
