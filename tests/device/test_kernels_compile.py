"""Every fused CUDA kernel of ForgeML compiles with nvcc: the ops' and the optimizers'.

Without a GPU they cannot run here; nvcc still checks them: each ``RawModule``
source is compiled as it is (``nvcc --ptx -arch=sm_80 -std=c++17``), each
``ElementwiseKernel`` body wrapped in a minimal ``__global__`` function for
``T = float`` and ``T = double`` (see ``nvcc.py``). Values are checked by the
kernel emulator here and against PyTorch on a GPU.
"""

from __future__ import annotations

import re

import pytest

from forgeml.ops import _fused, _fused_nn
from forgeml.optim import adagrad, adam, rmsprop, sgd

from .nvcc import compile_cuda, elementwise_source, needs_nvcc, type_letters

OPTIM_MODULES = (adam, sgd, rmsprop, adagrad)
OPTIM_SPECS = {spec.name: spec for module in OPTIM_MODULES for spec in getattr(module, "CUDA_KERNELS", ())}
ELEMENTWISE_SPECS = {**_fused.SPECS, **_fused_nn.SPECS, **OPTIM_SPECS}


@needs_nvcc
@pytest.mark.parametrize("name", sorted(_fused_nn.RAW_SOURCES))
def test_raw_module_compiles(name):
    compile_cuda(_fused_nn.RAW_SOURCES[name])


@needs_nvcc
@pytest.mark.parametrize("ctype", ["float", "double"])
@pytest.mark.parametrize("name", sorted(ELEMENTWISE_SPECS))
def test_elementwise_kernel_compiles(name, ctype):
    spec = ELEMENTWISE_SPECS[name]
    letters = type_letters(spec.in_params) | type_letters(spec.out_params)
    source = elementwise_source(spec.in_params, spec.out_params, spec.body, {t: ctype for t in letters}, spec.preamble)
    compile_cuda(source)


def test_kernel_names_are_unique_across_modules():
    assert len(ELEMENTWISE_SPECS) == len(_fused.SPECS) + len(_fused_nn.SPECS) + len(OPTIM_SPECS)
    assert {"gelu_none", "gelu_tanh", "gelu_none_backward", "gelu_tanh_backward", "erfc64"} <= set(_fused.SPECS)
    assert {"linear_bias_relu", "linear_bias_gelu", "linear_relu_backward"} <= set(_fused.SPECS)


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


def test_the_fused_optimizers_declare_their_kernels():
    assert {"optim_adam", "optim_adam_amsgrad", "optim_sgd", "optim_sgd_momentum"} <= set(OPTIM_SPECS)
    assert len(OPTIM_SPECS) == sum(len(getattr(m, "CUDA_KERNELS", ())) for m in OPTIM_MODULES), (
        "kernel names must be unique"
    )


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
