"""Record the public names of CuPy's namespace and array type, for the checked-CUDA tests.

The tests run device-agnostic code through a CuPy stand-in built on NumPy
(``tests/checked_cuda.py``); it refuses any name CuPy does not have, so a call
that would fail on a GPU fails on a CPU too. This script writes the list it
checks against. CuPy imports without a GPU, so it runs anywhere CuPy installs:

    python -m venv /tmp/cupyenv && /tmp/cupyenv/bin/pip install cupy-cuda13x
    /tmp/cupyenv/bin/python tools/record_cupy_api.py tests/cupy_api.json
"""

from __future__ import annotations

import json
import sys


def _public(obj) -> list[str]:
    return sorted(n for n in dir(obj) if not n.startswith("_") or n in ("__getitem__", "__setitem__"))


def main(path: str) -> None:
    import cupy
    import cupy.lib.stride_tricks
    import cupy.linalg
    import cupy.random

    ufunc_methods = _public(cupy.add)
    api = {
        "cupy_version": cupy.__version__,
        "namespace": _public(cupy),
        "ndarray": _public(cupy.ndarray),
        "ufunc": ufunc_methods,
        "ufuncs": sorted(n for n in _public(cupy) if isinstance(getattr(cupy, n), cupy.ufunc)),
        "linalg": _public(cupy.linalg),
        "random": _public(cupy.random),
        "random_state": _public(cupy.random.RandomState),
        "lib.stride_tricks": _public(cupy.lib.stride_tricks),
    }
    with open(path, "w") as fh:
        json.dump(api, fh, indent=1, sort_keys=True)
        fh.write("\n")
    print(f"wrote {path}: CuPy {cupy.__version__}, {len(api['namespace'])} names")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "tests/cupy_api.json")
