#!/usr/bin/env bash
# The GPU checks of issue 11, as one script for a machine with an NVIDIA GPU, CuPy, PyTorch (CUDA) and nvcc.
#
# 1. the device test suite (tests/device: the op table, modules, optimizers, training, fused kernels) on the
#    real GPU, against PyTorch: FORGEML_TEST_REAL_CUDA=1 makes the `cuda_device` fixture use CuPy instead of
#    the checked stand-in;
# 2. benchmarks/bench_mlp.py --device cuda (seed MLP, batch 1024) and benchmarks/bench_transformer.py
#    --device cuda (encoder layer d512/8 heads/batch 64/seq 256, float32 and autocast float16/bfloat16);
# 3. the NCCL backend (issue 12) on one rank: init_process_group('nccl') under mpiexec -n 1 (CuPy's real
#    NCCL bindings, unique id over MPI), every collective on CUDA tensors compared with NumPy, then, once
#    examples/distributed_mnist.py exists, one epoch of it through `forgeml launch -n 1 ... --backend nccl`.
#    A mismatch or an error there fails the whole script (exit 1, "NCCL CHECK FAILED").
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
    echo
    echo "== NCCL backend, one rank (init_process_group('nccl') under mpiexec -n 1)"
    rm -f "$OUT_DIR/nccl_check.failed"
    cat > "$OUT_DIR/nccl_check.py" <<'EOF'
"""One-rank (or N-rank) check of forgeml.distributed's NCCL backend against NumPy; exits 1 on any mismatch."""
import sys
import traceback

import numpy as np

import forgeml as fm
from forgeml import distributed as dist
from forgeml.distributed import ReduceOp

failures = []


def check(name, got, want, tol=0.0):
    got, want = np.asarray(got, dtype=np.float64), np.asarray(want, dtype=np.float64)
    ok = got.shape == want.shape and (np.array_equal(got, want) if tol == 0 else np.allclose(got, want, rtol=tol, atol=tol))
    print(("ok   " if ok else "FAIL ") + name, flush=True)
    if not ok:
        failures.append(name)
        print("     got ", got.reshape(-1)[:8].tolist(), got.shape, "\n     want", want.reshape(-1)[:8].tolist(), want.shape)


def main():
    import cupy

    group = dist.init_process_group("nccl")
    rank, world = dist.get_rank(), dist.get_world_size()
    print(group, "NCCL", group.nccl_version, "CuPy", cupy.__version__, flush=True)
    dev = group.device
    base = np.arange(1, 13, dtype=np.float64).reshape(3, 4)
    scales = np.arange(1, world + 1, dtype=np.float64)  # rank r holds base * (r + 1)
    dtypes = ["float32", "float64", "float16", "int32", "int64", "int8", "uint8"]
    try:
        import ml_dtypes  # noqa: F401

        cupy.zeros(1, dtype=fm.bfloat16.numpy)
        dtypes.append("bfloat16")
    except Exception as exc:  # CuPy without bfloat16 arrays: nothing NCCL can be asked
        print("     (bfloat16 skipped:", type(exc).__name__, exc, ")")
    expected = {
        ReduceOp.SUM: base * scales.sum(),
        ReduceOp.AVG: base * scales.mean(),
        ReduceOp.MAX: base * world,
        ReduceOp.MIN: base * 1,
        ReduceOp.PRODUCT: base**world * np.prod(scales),
    }
    for name in dtypes:
        dtype = getattr(fm, name)
        for op, want in expected.items():
            if op is ReduceOp.PRODUCT and name in ("int8", "uint8", "float16", "bfloat16") and world > 1:
                continue  # overflows / too coarse to compare
            if op is ReduceOp.AVG and name in ("int32", "int64", "int8", "uint8"):
                want = np.trunc(base * scales.sum() / world)  # NCCL: sum, then C division
            t = fm.tensor(base * (rank + 1)).to(dtype).to(dev)
            dist.all_reduce(t, op=op)
            tol = 1e-2 if name in ("float16", "bfloat16") else 0.0
            check(f"all_reduce {op.name} {name}", t.float().cpu().numpy(), want, tol)
    # a non-contiguous view: staged through a contiguous copy and written back
    big = fm.zeros(3, 8, device=dev)
    view = big[:, ::2]
    view.copy_(fm.tensor(base * (rank + 1), dtype=fm.float32).to(dev))
    dist.all_reduce(view)
    check("all_reduce of a strided view", big.cpu().numpy()[:, ::2], base * scales.sum())
    check("columns between the view untouched", big.cpu().numpy()[:, 1::2], np.zeros((3, 4)))
    # broadcast from the last rank, async with a timed (host-blocking) wait
    t = fm.tensor(base * (rank + 1), dtype=fm.float32).to(dev)
    work = dist.broadcast(t, src=world - 1, async_op=True)
    assert work.wait(timeout=60) and work.is_completed()
    check("broadcast from the last rank", t.cpu().numpy(), base * world)
    # all_gather (list and into one tensor), reduce_scatter, reduce, gather, scatter
    mine = fm.tensor(base * (rank + 1), dtype=fm.float32).to(dev)
    outs = [fm.zeros(3, 4, device=dev) for _ in range(world)]
    dist.all_gather(outs, mine)
    check("all_gather", np.stack([o.cpu().numpy() for o in outs]), np.stack([base * s for s in scales]))
    flat = fm.zeros(world * 3, 4, device=dev)
    dist.all_gather_into_tensor(flat, mine)
    check("all_gather_into_tensor", flat.cpu().numpy(), np.concatenate([base * s for s in scales]))
    full = fm.tensor(np.arange(world * 4, dtype=np.float32) * (rank + 1)).to(dev)
    part = fm.zeros(4, device=dev)
    dist.reduce_scatter_tensor(part, full)
    check("reduce_scatter_tensor", part.cpu().numpy(), np.arange(rank * 4, rank * 4 + 4) * scales.sum())
    t = fm.tensor(base * (rank + 1), dtype=fm.float32).to(dev)
    dist.reduce(t, dst=0, op=ReduceOp.SUM)
    check("reduce to rank 0", t.cpu().numpy(), base * scales.sum() if rank == 0 else base * (rank + 1))
    got = [fm.zeros(3, 4, device=dev) for _ in range(world)] if rank == 0 else None
    dist.gather(mine, got, dst=0)
    if rank == 0:
        check("gather", np.stack([g.cpu().numpy() for g in got]), np.stack([base * s for s in scales]))
    pieces = [fm.tensor(base + 100 * r, dtype=fm.float32).to(dev) for r in range(world)] if rank == 0 else None
    recv = fm.zeros(3, 4, device=dev)
    dist.scatter(recv, pieces, src=0)
    check("scatter", recv.cpu().numpy(), base + 100 * rank)
    objs = [None] * world
    dist.all_gather_object(objs, {"rank": rank})
    check("all_gather_object (over MPI)", [o["rank"] for o in objs], list(range(world)))
    dist.barrier()
    dist.destroy_process_group()


try:
    main()
except Exception:
    traceback.print_exc()
    failures.append("an exception")
if failures:
    print("NCCL CHECK FAILED:", ", ".join(failures), flush=True)
    sys.exit(1)
print("NCCL check passed", flush=True)
EOF
    MPIEXEC="$(dirname "$(command -v "$PY")")/mpiexec"
    [ -x "$MPIEXEC" ] || MPIEXEC="$(command -v mpiexec || true)"
    if [ -n "$MPIEXEC" ]; then
        timeout 120 "$MPIEXEC" -n 1 "$PY" "$OUT_DIR/nccl_check.py"
    else
        echo "(no mpiexec found: running as one plain process, an MPI world of one)"
        timeout 120 "$PY" "$OUT_DIR/nccl_check.py"
    fi
    status=$?
    echo "NCCL check exit status: $status"
    [ "$status" -eq 0 ] || touch "$OUT_DIR/nccl_check.failed"
    echo
    echo "== examples/distributed_mnist.py, one epoch on NCCL (forgeml launch -n 1)"
    if [ -f examples/distributed_mnist.py ]; then
        timeout 240 "$PY" -m forgeml.cli launch -n 1 examples/distributed_mnist.py --backend nccl --epochs 1
        status=$?
        echo "distributed_mnist exit status: $status"
        [ "$status" -eq 0 ] || touch "$OUT_DIR/nccl_check.failed"
    else
        echo "skipped: examples/distributed_mnist.py does not exist yet"
    fi
} 2>&1 | tee "$LOG"
if [ -f "$OUT_DIR/nccl_check.failed" ]; then
    echo "NCCL CHECK FAILED (see $LOG)" >&2
    exit 1
fi
