"""CUDA kernels run on the CPU, so the CUDA halves of ops are tested end to end on machines without a GPU.

:data:`namespace` is the checked CuPy stand-in of ``tests/checked_cuda.py``
plus ``RawModule`` and ``ElementwiseKernel``: their CUDA C++ sources are
compiled with g++ (C++20) for the host, with ``__global__``/``__device__``
removed, ``__shared__`` made static, and each thread of a block a
``std::thread`` (``__syncthreads`` is a ``std::barrier``), the blocks one
after another. Installed with ``backend.is_cupy`` answering True for it, the ops take
their CUDA branches, launch the kernels with the grid, block and arguments
they would give CuPy, and the results are compared with PyTorch.

Arguments are checked as strictly as a GPU would misread them: a pointer
parameter needs a contiguous array of exactly its element type, a scalar
parameter a NumPy scalar of exactly its type (CuPy passes a scalar's bytes
as they are), an ``ElementwiseKernel`` parameter of a fixed type an array of
that dtype. What this cannot find: races between blocks, warp-level
behaviour, CUDA's own math library (g++'s libm computes here) and speed.
"""

from __future__ import annotations

import ctypes
import hashlib
import re
import shutil
import subprocess
import tempfile
import types
from collections import Counter
from pathlib import Path

import numpy as np

from ..checked_cuda import CheckedArray
from ..checked_cuda import namespace as checked_namespace
from .nvcc import _params

GXX = shutil.which("g++")

launches: Counter = Counter()  # kernel name -> number of launches (tests assert the fused paths ran)

_PRELUDE = r"""
#include <barrier>
#include <cmath>
#include <cstring>
#include <thread>
#include <vector>
using std::exp;
using std::log;
using std::sqrt;
using std::tanh;
struct forgeml_emu_dim3 { unsigned int x; };
static thread_local forgeml_emu_dim3 threadIdx;
static thread_local forgeml_emu_dim3 blockIdx;
static forgeml_emu_dim3 blockDim;
static std::barrier<>* forgeml_emu_barrier;
inline void __syncthreads() { forgeml_emu_barrier->arrive_and_wait(); }
inline float __int_as_float(unsigned int v) { float f; std::memcpy(&f, &v, sizeof f); return f; }
inline double __longlong_as_double(unsigned long long v) { double d; std::memcpy(&d, &v, sizeof d); return d; }
// CUDA's normal CDF, from the C++ library's erfc (CUDA documents normcdf(x) = erfc(-x / sqrt(2)) / 2)
inline double normcdf(double x) { return 0.5 * std::erfc(-x * 0.70710678118654752440); }
inline float normcdff(float x) { return 0.5f * std::erfc(-x * 0.70710678118654752440f); }
#define __device__
#define __global__
#define __forceinline__ inline
#define __shared__ static
#define __restrict__

// One host thread per thread of a block; the blocks run one after another (a barrier between them, since
// the static "__shared__" buffers are reused).
template <typename F>
static void forgeml_emu_run(long long grid, unsigned int block, F body) {
  blockDim.x = block;
  std::barrier<> bar(block);
  forgeml_emu_barrier = &bar;
  std::vector<std::thread> threads;
  for (unsigned int t = 0; t < block; ++t) {
    threads.emplace_back([&, t] {
      threadIdx.x = t;
      for (long long b = 0; b < grid; ++b) {
        blockIdx.x = (unsigned int)b;
        body();
        bar.arrive_and_wait();
      }
    });
  }
  for (auto& th : threads) th.join();
}
"""

_C_OF_DTYPE = {
    "float32": "float",
    "float64": "double",
    "int64": "long long",
    "int32": "int",
    "bool": "bool",
    "uint8": "unsigned char",
}
_CTYPES = {
    "float": ctypes.c_float,
    "double": ctypes.c_double,
    "long long": ctypes.c_longlong,
    "int": ctypes.c_int,
    "unsigned int": ctypes.c_uint,
    "bool": ctypes.c_bool,
}
_build_dir: Path | None = None
_libraries: dict[str, ctypes.CDLL] = {}


def _compile(source: str) -> ctypes.CDLL:
    global _build_dir
    digest = hashlib.sha1(source.encode()).hexdigest()[:20]
    lib = _libraries.get(digest)
    if lib is not None:
        return lib
    if _build_dir is None:
        _build_dir = Path(tempfile.mkdtemp(prefix="forgeml_kernel_emulator_"))
    cpp, so = _build_dir / f"k{digest}.cpp", _build_dir / f"k{digest}.so"
    cpp.write_text(source)
    result = subprocess.run(
        [GXX, "-std=c++20", "-O1", "-shared", "-fPIC", "-pthread", "-w", "-o", str(so), str(cpp)],
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    if result.returncode != 0:
        numbered = "\n".join(f"{n + 1:4d} {line}" for n, line in enumerate(source.splitlines()))
        raise RuntimeError(f"g++ could not compile the emulated kernel:\n{result.stderr}\n--- source ---\n{numbered}")
    lib = _libraries[digest] = ctypes.CDLL(str(so))
    return lib


def _host(a) -> np.ndarray:
    if type(a) is not CheckedArray:
        raise TypeError(f"a kernel got {type(a).__name__} where a CUDA array was expected")
    return a._a


def _scalar(value, ctype: str, where: str):
    """A kernel's scalar argument: a NumPy scalar of exactly ``ctype`` (CuPy copies its bytes)."""
    dtype = getattr(value, "dtype", None)
    if dtype is None or getattr(value, "ndim", 0) != 0 or isinstance(value, np.ndarray | CheckedArray):
        raise TypeError(f"{where}: pass a NumPy scalar of C type {ctype}, got {value!r}")
    if _C_OF_DTYPE.get(dtype.name) != ctype:
        raise TypeError(f"{where}: C parameter of type {ctype} got a {dtype.name} scalar")
    return _CTYPES[ctype](value.item())


# -- RawModule ----------------------------------------------------------------------------------------------------
_KERNEL = re.compile(r'extern\s+"C"\s+__global__\s+void\s+(\w+)\s*\(([^)]*)\)')


def _preprocess(code: str) -> str:
    result = subprocess.run(
        [GXX, "-E", "-P", "-x", "c++", "-"], input=code, capture_output=True, text=True, check=True, timeout=60
    )
    return result.stdout


class _RawFunction:
    def __init__(self, lib, name: str, params) -> None:
        self._fn = getattr(lib, f"forgeml_emu_launch_{name}")
        self._fn.restype = None
        self.name, self._params = name, params

    def __call__(self, grid, block, args, shared_mem=0, stream=None):
        grid, block = tuple(grid), tuple(block)
        if len(grid) != 1 or len(block) != 1:
            raise ValueError(f"{self.name}: the emulator runs 1-D grids and blocks, got {grid} and {block}")
        if len(args) != len(self._params):
            raise TypeError(f"{self.name}: {len(self._params)} parameters, {len(args)} arguments")
        c_args = []
        for (ctype, pointer, pname), a in zip(self._params, args):
            where = f"{self.name}({pname})"
            if pointer:
                arr = _host(a)
                if _C_OF_DTYPE.get(arr.dtype.name) != ctype or not arr.flags.c_contiguous:
                    raise TypeError(f"{where}: expected a C-contiguous {ctype} array, got {arr.dtype} {arr.shape}")
                c_args.append(ctypes.c_void_p(arr.ctypes.data))
            else:
                c_args.append(_scalar(a, ctype, where))
        launches[self.name] += 1
        self._fn(ctypes.c_longlong(grid[0]), ctypes.c_uint(block[0]), *c_args)


class RawModule:
    """``cupy.RawModule(code=...)`` compiled for the host; ``get_function`` returns launchable kernels."""

    def __init__(self, code: str, options=(), **kwargs) -> None:
        kernels = {}
        for name, params in _KERNEL.findall(_preprocess(code)):
            parsed = []
            for part in (p.strip() for p in params.split(",") if p.strip()):
                decl, pname = re.fullmatch(r"(.*?)([A-Za-z_]\w*)", part).groups()
                ctype = " ".join(decl.replace("const", " ").replace("*", " ").split())
                parsed.append((ctype, "*" in decl, pname))
            kernels[name] = parsed
        launchers = []
        for name, params in kernels.items():
            decls = ", ".join(f"{'void*' if ptr else ctype} {pname}" for ctype, ptr, pname in params)
            call = ", ".join(f"({ctype}*){pname}" if ptr else pname for ctype, ptr, pname in params)
            launchers.append(
                f'extern "C" void forgeml_emu_launch_{name}(long long grid, unsigned int block, {decls}) '
                f"{{ forgeml_emu_run(grid, block, [&] {{ {name}({call}); }}); }}"
            )
        self._lib = _compile(_PRELUDE + code + "\n" + "\n".join(launchers) + "\n")
        self._kernels = kernels

    def get_function(self, name: str) -> _RawFunction:
        if name not in self._kernels:
            raise AttributeError(f"no kernel {name!r} in the module (it has {sorted(self._kernels)})")
        return _RawFunction(self._lib, name, self._kernels[name])


# -- ElementwiseKernel -------------------------------------------------------------------------------------------
class ElementwiseKernel:
    """``cupy.ElementwiseKernel``: broadcast the non-raw arguments, run the body once per element (on the host)."""

    def __init__(self, in_params: str, out_params: str, operation: str, name: str = "kernel", preamble: str = "", **kw):
        self.in_params, self.out_params = _params(in_params), _params(out_params)
        self.operation, self.name, self.preamble = operation, name, preamble

    def __call__(self, *args, size=None):
        n_in = len(self.in_params)
        if not n_in <= len(args) <= n_in + len(self.out_params):
            raise TypeError(f"{self.name}: wrong number of arguments ({len(args)})")
        ins, outs = list(args[:n_in]), list(args[n_in:])
        params = self.in_params + self.out_params[: len(outs)]
        letters: dict[str, np.dtype] = {}
        for (_raw, t, pname), a in zip(params, ins + outs):
            if len(t) == 1 and type(a) is CheckedArray:
                if letters.setdefault(t, a.dtype) != a.dtype:
                    raise TypeError(f"{self.name}: type {t} is both {letters[t]} and {a.dtype} (at {pname})")
        for (_raw, t, pname), a in zip(params, ins + outs):
            if len(t) == 1 and t not in letters and hasattr(a, "dtype"):
                letters[t] = np.dtype(a.dtype)

        def dtype_of(t):
            return letters[t] if len(t) == 1 else np.dtype(t)

        shapes = [a.shape for (raw, _, _), a in zip(params, ins + outs) if not raw and type(a) is CheckedArray]
        shape = np.broadcast_shapes(*shapes) if shapes else ()
        n = int(np.prod(shape))
        host_args, c_decls, prologue = [], [], []
        for (raw, t, pname), a in zip(self.in_params, ins):
            dt = dtype_of(t)
            ctype = _C_OF_DTYPE[dt.name]
            if raw:
                arr = _host(a)
                if arr.dtype != dt or not arr.flags.c_contiguous:
                    raise TypeError(f"{self.name}({pname}): expected a C-contiguous {dt} array, got {arr.dtype}")
                c_decls.append(f"const {ctype}* {pname}")
            else:
                if type(a) is CheckedArray:
                    if a.dtype != dt:
                        raise TypeError(f"{self.name}({pname}): expected {dt}, got {a.dtype}")
                    arr = _host(a)
                else:
                    arr = np.asarray(a, dtype=dt)
                arr = np.ascontiguousarray(np.broadcast_to(arr, shape))
                c_decls.append(f"const {ctype}* in_{pname}")
                prologue.append(f"const {ctype} {pname} = in_{pname}[i];")
            host_args.append(arr)
        results = []
        for k, (raw, t, pname) in enumerate(self.out_params):
            dt = dtype_of(t)
            ctype = _C_OF_DTYPE[dt.name]
            given = outs[k] if k < len(outs) else None
            if given is not None:
                if given.dtype != dt or given.shape != shape:
                    raise TypeError(f"{self.name}({pname}): output {given.dtype} {given.shape}, expected {dt} {shape}")
                arr = np.ascontiguousarray(_host(given)).copy()
            else:
                arr = np.empty(shape, dtype=dt)
            c_decls.append(f"{ctype}* out_{pname}")
            prologue.append(f"{ctype}& {pname} = out_{pname}[i];")
            host_args.append(arr)
            results.append((given, arr))
        typedefs = "".join(f"typedef {_C_OF_DTYPE[d.name]} {t};\n" for t, d in letters.items())
        source = (
            f"{_PRELUDE}{typedefs}{self.preamble}\n"
            f'extern "C" void forgeml_emu_elementwise({", ".join(c_decls)}, long long n) {{\n'
            "  for (long long i = 0; i < n; ++i) {\n    "
            + "\n    ".join(prologue)
            + f"\n    {self.operation};\n  }}\n}}\n"
        )
        fn = _compile(source).forgeml_emu_elementwise
        fn.restype = None
        launches[self.name] += 1
        fn(*(ctypes.c_void_p(a.ctypes.data) for a in host_args), ctypes.c_longlong(n))
        wrapped = []
        for given, arr in results:
            if given is not None:
                np.copyto(_host(given), arr)
                wrapped.append(given)
            else:
                wrapped.append(CheckedArray(arr))
        return wrapped[0] if len(wrapped) == 1 else tuple(wrapped)


class _EmulatedNamespace(types.ModuleType):
    """The checked stand-in with ``RawModule`` and ``ElementwiseKernel`` that run on the host."""

    ndarray = CheckedArray
    RawModule = RawModule
    ElementwiseKernel = ElementwiseKernel

    def __getattr__(self, name):
        return getattr(checked_namespace, name)


namespace = _EmulatedNamespace("cupy_emulated")
for _name in ("cuda", "random", "lib", "asarray", "array"):
    setattr(namespace, _name, getattr(checked_namespace, _name))
