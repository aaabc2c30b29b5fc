"""The optimizers' fused CUDA kernels, run on the CPU: their bodies compiled by nvcc as host C++ loops.

An ``ElementwiseKernel`` body is plain C++ over one element, so nvcc (its host
compiler, with multiply-add contraction off) can build it into a loop that
runs here. Installed as the stand-in's ``ElementwiseKernel`` while
``is_cupy`` answers True for the optimizers, it sends every step through the
CUDA halves exactly as CuPy would call them (same arguments, same order, same
scalar types), so this checks what compile-checking cannot: the values.
They must follow ``torch.optim`` step for step, and in float64 equal the CPU
path bit for bit (the same scalar folding; a GPU differs only by FMA).
"""

from __future__ import annotations

import ctypes
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import pytest

import forgeml as fm
from forgeml import optim
from forgeml.ops import _fused
from forgeml.optim import adagrad, adam, rmsprop, sgd
from forgeml.optim import optimizer as optimizer_module

from ..checked_cuda import CheckedArray
from ..optim._common import groups_of, make_grads, make_values, set_grads_torch, snapshot, torch_params
from ..optim.test_optimizers import CASES, case_id
from .nvcc import NVCC, _params, needs_nvcc
from .test_optim_on_cuda import ATOL, RTOL, assert_state_on_device, cpu_params, cuda_params, set_grads, values_of

torch = pytest.importorskip("torch")

pytestmark = needs_nvcc

SPECS = [spec for module in (adam, sgd, rmsprop, adagrad) for spec in module.CUDA_KERNELS]
_C_TYPES = {"float32": "float", "float64": "double"}
_SCALAR_TYPES = {"bool": (np.bool_, "bool")}
_libraries: dict = {}


def _host_source(ctype: str) -> str:
    """Every optimizer kernel as ``extern "C" void forgeml_<name>(inputs..., outputs..., n)`` looping on the host."""
    parts = ["#include <cmath>", "using std::sqrt;", f"typedef {ctype} T;"]
    for spec in SPECS:
        args, prologue = [], []
        for _, t, name in _params(spec.in_params):
            c = "T" if t == "T" else _SCALAR_TYPES[t][1]
            args.append(f"const {c}* in_{name}")
            prologue.append(f"const {c} {name} = in_{name}[i];")
        for _, t, name in _params(spec.out_params):
            args.append(f"T* out_{name}")
            prologue.append(f"T& {name} = out_{name}[i];")
        parts.append(
            f'extern "C" void forgeml_{spec.name}({", ".join(args)}, long long n) {{\n'
            "  for (long long i = 0; i < n; ++i) {\n    " + "\n    ".join(prologue) + f"\n{spec.body};\n  }}\n}}"
        )
    return "\n".join(parts) + "\n"


def _library(ctype: str):
    lib = _libraries.get(ctype)
    if lib is None:
        tmp = Path(tempfile.mkdtemp(prefix="forgeml_optim_host_"))
        source, shared = tmp / "kernels.cu", tmp / "kernels.so"
        source.write_text(_host_source(ctype))
        cmd = [NVCC, "-shared", "-std=c++17", "-Xcompiler", "-fPIC", "-Xcompiler", "-ffp-contract=off"]
        result = subprocess.run(
            [*cmd, "-o", str(shared), str(source)], check=False, capture_output=True, text=True, timeout=300
        )
        if result.returncode != 0:
            pytest.fail(f"nvcc could not build the host kernels:\n{result.stderr}")
        lib = _libraries[ctype] = ctypes.CDLL(str(shared))
    return lib


class HostElementwiseKernel:
    """``cupy.ElementwiseKernel`` for the stand-in: same call convention (inputs, then outputs), run on the host."""

    def __init__(self, in_params, out_params, body, name, preamble=""):
        self.ins, self.outs, self.name = _params(in_params), _params(out_params), name

    def __call__(self, *args):
        if len(args) != len(self.ins) + len(self.outs):
            raise TypeError(f"{self.name} takes {len(self.ins) + len(self.outs)} arguments, got {len(args)}")
        arrays = [a._a if type(a) is CheckedArray else a for a in args]
        outs = arrays[len(self.ins) :]
        dtype, shape = outs[0].dtype, outs[0].shape
        for (_, t, name), a in zip(self.ins + self.outs, arrays):
            if t == "T" and isinstance(a, np.ndarray) and a.dtype != dtype:  # CuPy refuses mixed types for T
                raise TypeError(f"Type is mismatched. {name} {a.dtype} {dtype} T")
        n = int(np.prod(shape))
        flat = []
        for (_, t, _name), a in zip(self.ins, arrays):
            scalar_dtype = dtype if t == "T" else _SCALAR_TYPES[t][0]
            if isinstance(a, np.ndarray):
                flat.append(np.ascontiguousarray(np.broadcast_to(a, shape), dtype=scalar_dtype).reshape(-1))
            else:  # a Python scalar, converted to the parameter's type as CuPy does
                flat.append(np.full(n, a, dtype=scalar_dtype))
        out_flat = [np.ascontiguousarray(o).reshape(-1).copy() for o in outs]
        fn = getattr(_library(_C_TYPES[dtype.name]), self.name)
        fn(*[ctypes.c_void_p(a.ctypes.data) for a in flat + out_flat], ctypes.c_longlong(n))
        for o, f in zip(outs, out_flat):
            o[...] = f.reshape(shape)


@pytest.fixture
def fused_on_host(checked_cuda, monkeypatch):
    """``device='cuda'`` on the stand-in, with the optimizers taking their CUDA halves through host-built kernels."""
    monkeypatch.setattr(checked_cuda, "ElementwiseKernel", HostElementwiseKernel, raising=False)
    monkeypatch.setattr(optimizer_module, "is_cupy", lambda xp: xp is checked_cuda)
    monkeypatch.setattr(_fused, "_kernels", {})
    yield checked_cuda
    assert {name for _, name in _fused._kernels} <= {spec.name for spec in SPECS}


STEPS = 6


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_fused_kernels_follow_torch_and_equal_the_cpu_path(case, fused_on_host):
    name, kwargs, groups = case
    values, grads = make_values(), make_grads(steps=STEPS)
    fp, cp, tp = cuda_params(values), cpu_params(values), torch_params(torch, values)
    fopt = getattr(optim, name)(groups_of(fp, groups), **kwargs)
    copt = getattr(optim, name)(groups_of(cp, groups), **kwargs)
    topt = getattr(torch.optim, name)(groups_of(tp, groups), **kwargs)
    for t in range(STEPS):
        set_grads(fp, grads[t])
        set_grads(cp, grads[t])
        set_grads_torch(torch, tp, grads[t])
        fopt.step()
        copt.step()
        topt.step()
        for i, (o, c, e) in enumerate(zip(values_of(fp), values_of(cp), snapshot(tp))):
            np.testing.assert_allclose(o, e, rtol=RTOL, atol=ATOL, err_msg=f"step {t + 1}, parameter {i}")
            np.testing.assert_array_equal(o, c, err_msg=f"step {t + 1}, parameter {i}: fused != CPU path")
    assert {n for _, n in _fused._kernels}, "the fused kernels did not run"
    assert_state_on_device(fopt, fm.device("cuda"), stateless=name == "SGD" and not kwargs.get("momentum"))
    for p, q in zip(fp, cp):
        for key, value in fopt.state[p].items():
            np.testing.assert_array_equal(value.cpu().numpy(), copt.state[q][key].cpu().numpy(), err_msg=key)


@pytest.mark.parametrize(
    ("name", "kwargs"),
    [
        ("Adam", {"lr": 0.01, "weight_decay": 0.1, "maximize": True}),
        ("AdamW", {"lr": 0.01, "amsgrad": True}),
        ("SGD", {"lr": 0.05, "momentum": 0.9, "dampening": 0.2, "weight_decay": 0.1}),
        ("SGD", {"lr": 0.05}),
        ("RMSprop", {"lr": 0.01, "centered": True, "momentum": 0.9, "maximize": True}),
        ("Adagrad", {"lr": 0.1, "lr_decay": 0.01, "weight_decay": 0.1}),
    ],
)
def test_fused_kernels_in_float32_equal_the_cpu_path(name, kwargs, fused_on_host):
    values = [v.astype(np.float32) for v in make_values()]
    grads = [[None if g is None else g.astype(np.float32) for g in step] for step in make_grads(steps=STEPS)]
    fp, cp = cuda_params(values), cpu_params(values)
    fopt, copt = getattr(optim, name)(fp, **kwargs), getattr(optim, name)(cp, **kwargs)
    for t in range(STEPS):
        set_grads(fp, grads[t])
        set_grads(cp, grads[t])
        fopt.step()
        copt.step()
        for i, (o, c) in enumerate(zip(values_of(fp), values_of(cp))):
            assert o.dtype == np.float32
            np.testing.assert_array_equal(o, c, err_msg=f"step {t + 1}, parameter {i}")
    assert {n for _, n in _fused._kernels}, "the fused kernels did not run"
