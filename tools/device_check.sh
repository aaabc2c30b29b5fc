#!/usr/bin/env bash
# The GPU checks of issue 11, as one script for a machine with an NVIDIA GPU, CuPy, PyTorch (CUDA) and nvcc.
#
# 1. the device test suite (tests/device: the op table, modules, optimizers, training, fused kernels) on the
#    real GPU, against PyTorch: FORGEML_TEST_REAL_CUDA=1 makes the `cuda_device` fixture use CuPy instead of
#    the checked stand-in;
# 2. benchmarks/bench_mlp.py --device cuda (seed MLP, batch 1024) and benchmarks/bench_transformer.py
#    --device cuda (encoder layer d512/8 heads/batch 64/seq 256, float32 and autocast float16/bfloat16).
#
# Needs nothing from the network: forgeml runs from src/ (NumPy, CuPy, PyTorch, pytest and ml_dtypes come from
# the machine's image). Writes its log to $OUT (or ./device-check-output) and stays under 8 minutes.
# Usage: tools/device_check.sh [--quick]   (--quick: fewer benchmark repeats)
set -uo pipefail
cd "$(dirname "$0")/.."
OUT_DIR="${OUT:-device-check-output}"
mkdir -p "$OUT_DIR"
LOG="$OUT_DIR/device_check.log"
PY="${PYTHON:-python3}"
REPEATS=5
STEPS=200
if [ "${1:-}" = "--quick" ]; then REPEATS=3; STEPS=100; fi
export PYTHONPATH="$PWD/src:$PWD/benchmarks${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1

{
    echo "== machine"
    nvidia-smi -L || true
    "$PY" - <<'EOF'
import cupy, numpy, torch
import forgeml as fm
print("cupy", cupy.__version__, "numpy", numpy.__version__, "torch", torch.__version__)
print("forgeml sees", fm.cuda.device_count(), "CUDA device(s):", fm.cuda.get_device_name(0) if fm.cuda.is_available() else "-")
EOF
    echo
    echo "== device tests on the GPU (FORGEML_TEST_REAL_CUDA=1)"
    FORGEML_TEST_REAL_CUDA=1 timeout 300 "$PY" -m pytest -q -p no:cacheprovider --maxfail=25 --tb=short tests/device tests/amp
    echo "device tests exit status: $?"
    echo
    echo "== bench_mlp --device cuda"
    (cd benchmarks && timeout 150 "$PY" bench_mlp.py --device cuda --steps "$STEPS" --repeats 3)
    echo
    echo "== bench_transformer --device cuda"
    (cd benchmarks && timeout 150 "$PY" bench_transformer.py --device cuda --repeats "$REPEATS")
} 2>&1 | tee "$LOG"
