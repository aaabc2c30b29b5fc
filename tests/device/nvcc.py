"""Compile-check CUDA kernel sources with nvcc, for the kernels no CPU test can run.

ForgeML's fused CUDA kernels are CuPy ``ElementwiseKernel`` bodies and
``RawModule`` sources, compiled by CuPy on a GPU at first use. Without a GPU
they cannot run here, but nvcc (on this machine and in CI) can still compile
them: an ``ElementwiseKernel`` body is wrapped in a minimal ``__global__``
function the way CuPy wraps it (inputs as values, outputs as references,
``i`` the element index) for each concrete type; a ``RawModule`` source is
compiled as it is. This catches syntax, type and overload errors; values are
checked against PyTorch on a GPU by ``tools/device_check.sh``.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

NVCC = shutil.which("nvcc") or ("/usr/local/bin/nvcc" if Path("/usr/local/bin/nvcc").exists() else None)
needs_nvcc = pytest.mark.skipif(NVCC is None, reason="nvcc (the CUDA compiler) is not installed on this machine")

_C_TYPES = {
    "float16": None,
    "float32": "float",
    "float64": "double",
    "int8": "signed char",
    "int16": "short",
    "int32": "int",
    "int64": "long long",
    "uint8": "unsigned char",
    "bool": "bool",
}


def _params(spec: str):
    """``'T x, raw float32 y'`` -> [(is_raw, type, name), ...]."""
    out = []
    for part in (p.strip() for p in spec.split(",") if p.strip()):
        words = part.split()
        raw = words[0] == "raw"
        if raw:
            words = words[1:]
        if len(words) != 2:
            raise ValueError(f"cannot parse kernel parameter {part!r}")
        out.append((raw, words[0], words[1]))
    return out


def elementwise_source(in_params: str, out_params: str, body: str, type_map: dict[str, str], preamble: str = "") -> str:
    """A CUDA translation unit equivalent to CuPy's wrapping of an ElementwiseKernel, for one choice of types."""

    def ctype(t: str) -> str:
        if t in type_map:
            return type_map[t]
        c = _C_TYPES.get(t)
        if c is None:
            raise ValueError(f"no C type for {t!r} in this check (add it to type_map)")
        return c

    args, prologue = [], []
    for raw, t, name in _params(in_params):
        if raw:
            args.append(f"const {ctype(t)}* {name}")
        else:
            args.append(f"const {ctype(t)}* __restrict__ in_{name}")
            prologue.append(f"const {ctype(t)} {name} = in_{name}[i];")
    for raw, t, name in _params(out_params):
        if raw:
            args.append(f"{ctype(t)}* {name}")
        else:
            args.append(f"{ctype(t)}* __restrict__ out_{name}")
            prologue.append(f"{ctype(t)}& {name} = out_{name}[i];")
    typedefs = "".join(f"typedef {c} {t};\n" for t, c in type_map.items() if len(t) == 1)
    return (
        f"{typedefs}{preamble}\n"
        f'extern "C" __global__ void kernel({", ".join(args)}, long long n) {{\n'
        "  long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;\n"
        "  if (i >= n) return;\n  " + "\n  ".join(prologue) + f"\n  {body};\n}}\n"
    )


def compile_cuda(source: str, arch: str = "sm_80") -> None:
    """Compile ``source`` to PTX with nvcc; fails the test with nvcc's messages when it does not compile."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "kernel.cu"
        path.write_text(source)
        result = subprocess.run(
            [NVCC, "--ptx", f"-arch={arch}", "-std=c++17", "-o", str(Path(tmp) / "kernel.ptx"), str(path)],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    if result.returncode != 0:
        numbered = "\n".join(f"{n + 1:4d} {line}" for n, line in enumerate(source.splitlines()))
        pytest.fail(f"nvcc could not compile the kernel:\n{result.stderr}\n--- source ---\n{numbered}")


def type_letters(spec: str) -> set[str]:
    """The one-letter template type names (``T``) a parameter list uses."""
    return {t for _, t, _ in _params(spec) if re.fullmatch(r"[A-Z]", t)}
