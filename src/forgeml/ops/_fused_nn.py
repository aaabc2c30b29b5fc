"""Fused CUDA kernels of the nn ops: the GPU halves of softmax, cross-entropy, LayerNorm, dropout and linear.

What they fuse is what PyTorch's eager CUDA kernels fuse:

* row kernels (``RawModule``, one thread block per row of a contiguous
  ``[rows, n]`` array): softmax / log-softmax forward and backward (max, sum
  of exponentials and the output in one launch); cross-entropy forward
  (max, log-sum-exp, the target's term, class weights, ``ignore_index`` and
  label smoothing, one loss per row); LayerNorm forward (mean, biased
  variance, normalise, scale and shift) and its input gradient;
* elementwise kernels (``ElementwiseKernel``): the cross-entropy input
  gradient ``(sum(a) * softmax - a) * scale`` built from the saved
  log-sum-exp, the dropout mask and scale from the uniform draws, and the
  bias add after the linear layer's GEMM.

Nothing here compiles or imports CuPy until a kernel is first called, and
ops call these only when ``backend.is_cupy(xp)``. Kernels compute in the
array's type; float32 and float64 are instantiated, and ops run float16 data
through the float32 kernels (compute-in-float). The sources are module-level
strings so that ``tests/device/test_fused_kernels_compile.py`` compiles each
with nvcc on machines without a GPU.
"""

from __future__ import annotations

from ._fused import ElementwiseSpec

__all__ = [
    "BLOCK",
    "RAW_SOURCES",
    "SPECS",
    "bias_add_",
    "cross_entropy_backward",
    "cross_entropy_forward",
    "dropout_backward",
    "dropout_forward",
    "kernel_dtype",
    "layer_norm_backward",
    "layer_norm_forward",
    "softmax_backward",
    "softmax_forward",
]

BLOCK = 256  # threads per block of the row kernels (a power of two; the shared buffers have this size)

# -- row kernels ---------------------------------------------------------------------------------------
_ROW_HEADER = r"""
#define FORGEML_BLOCK 256

__device__ __forceinline__ float forgeml_neg_inf(float) { return __int_as_float(0xff800000); }
__device__ __forceinline__ double forgeml_neg_inf(double) { return __longlong_as_double(0xfff0000000000000ULL); }

// the larger of a and b; NaN wins, as in PyTorch's max
template <typename T>
__device__ __forceinline__ T forgeml_max(T a, T b) { return (a > b || a != a) ? a : b; }

// sum of v over the block (every thread gets the result); buf holds blockDim.x values
template <typename T>
__device__ T forgeml_block_sum(T v, T* buf) {
  buf[threadIdx.x] = v;
  __syncthreads();
  for (unsigned int s = blockDim.x >> 1; s > 0; s >>= 1) {
    if (threadIdx.x < s) buf[threadIdx.x] += buf[threadIdx.x + s];
    __syncthreads();
  }
  T r = buf[0];
  __syncthreads();
  return r;
}

template <typename T>
__device__ T forgeml_block_max(T v, T* buf) {
  buf[threadIdx.x] = v;
  __syncthreads();
  for (unsigned int s = blockDim.x >> 1; s > 0; s >>= 1) {
    if (threadIdx.x < s) buf[threadIdx.x] = forgeml_max(buf[threadIdx.x], buf[threadIdx.x + s]);
    __syncthreads();
  }
  T r = buf[0];
  __syncthreads();
  return r;
}
"""

SOFTMAX_SOURCE = (
    _ROW_HEADER
    + r"""
// y = softmax(x) (or log_softmax when log_out) of each row of a contiguous [rows, n] array.
// zero_masked_rows: a row whose entries are all -inf gives zeros instead of NaN (attention).
template <typename T>
__device__ void forgeml_softmax_row(const T* x, T* y, long long n, int log_out, int zero_masked_rows, T* buf) {
  const T* xr = x + (long long)blockIdx.x * n;
  T* yr = y + (long long)blockIdx.x * n;
  T m = forgeml_neg_inf((T)0);
  for (long long j = threadIdx.x; j < n; j += blockDim.x) m = forgeml_max(m, xr[j]);
  m = forgeml_block_max(m, buf);
  if (zero_masked_rows && m == forgeml_neg_inf((T)0)) m = (T)0;
  T s = (T)0;
  for (long long j = threadIdx.x; j < n; j += blockDim.x) s += exp(xr[j] - m);
  s = forgeml_block_sum(s, buf);
  if (log_out) {
    T ls = log(s);
    for (long long j = threadIdx.x; j < n; j += blockDim.x) yr[j] = (xr[j] - m) - ls;
  } else {
    if (zero_masked_rows && s == (T)0) s = (T)1;
    for (long long j = threadIdx.x; j < n; j += blockDim.x) yr[j] = exp(xr[j] - m) / s;
  }
}

// dx from dy and the forward output y: y * (g - sum(g * y)) for softmax, g - exp(y) * sum(g) for log_softmax
template <typename T>
__device__ void forgeml_softmax_backward_row(const T* g, const T* y, T* dx, long long n, int log_out, T* buf) {
  long long base = (long long)blockIdx.x * n;
  const T* gr = g + base;
  const T* yr = y + base;
  T* dr = dx + base;
  T dot = (T)0;
  for (long long j = threadIdx.x; j < n; j += blockDim.x) dot += log_out ? gr[j] : gr[j] * yr[j];
  dot = forgeml_block_sum(dot, buf);
  if (log_out) {
    for (long long j = threadIdx.x; j < n; j += blockDim.x) dr[j] = gr[j] - exp(yr[j]) * dot;
  } else {
    for (long long j = threadIdx.x; j < n; j += blockDim.x) dr[j] = yr[j] * (gr[j] - dot);
  }
}

#define FORGEML_SOFTMAX(T, SUFFIX)                                                                          \
  extern "C" __global__ void forgeml_softmax_##SUFFIX(const T* x, T* y, long long n, int log_out,             \
                                                      int zero_masked_rows) {                                 \
    __shared__ T buf[FORGEML_BLOCK];                                                                          \
    forgeml_softmax_row<T>(x, y, n, log_out, zero_masked_rows, buf);                                          \
  }                                                                                                           \
  extern "C" __global__ void forgeml_softmax_backward_##SUFFIX(const T* g, const T* y, T* dx, long long n,    \
                                                               int log_out) {                                 \
    __shared__ T buf[FORGEML_BLOCK];                                                                          \
    forgeml_softmax_backward_row<T>(g, y, dx, n, log_out, buf);                                               \
  }

FORGEML_SOFTMAX(float, f32)
FORGEML_SOFTMAX(double, f64)
"""
)

CROSS_ENTROPY_SOURCE = (
    _ROW_HEADER
    + r"""
// Cross-entropy of each row of contiguous logits x [rows, n] against a class index per row.
// loss[row] = (1 - eps) * w[t] * (lse - x[t]) + eps / n * sum_c w[c] * (lse - x[c]), 0 where t == ignore_index;
// lse[row] (the log-sum-exp) is kept for the backward kernel. Without weights w is 1.
template <typename T>
__device__ void forgeml_cross_entropy_row(const T* x, const long long* target, const T* weight, int has_weight,
                                          long long n, long long ignore_index, T smoothing, T* loss, T* lse,
                                          T* buf) {
  long long row = blockIdx.x;
  const T* xr = x + row * n;
  T m = forgeml_neg_inf((T)0);
  for (long long j = threadIdx.x; j < n; j += blockDim.x) m = forgeml_max(m, xr[j]);
  m = forgeml_block_max(m, buf);
  T s = (T)0, ws = (T)0, wsum = (T)0;  // sum exp(x - m); sum w (x - m) and sum w for label smoothing
  for (long long j = threadIdx.x; j < n; j += blockDim.x) {
    T d = xr[j] - m;
    s += exp(d);
    if (smoothing != (T)0) {
      T wc = has_weight ? weight[j] : (T)1;
      ws += wc * d;
      wsum += wc;
    }
  }
  s = forgeml_block_sum(s, buf);
  if (smoothing != (T)0) {  // the same branch in every thread of the block
    ws = forgeml_block_sum(ws, buf);
    wsum = forgeml_block_sum(wsum, buf);
  }
  if (threadIdx.x == 0) {
    T ls = log(s);
    lse[row] = m + ls;
    long long t = target[row];
    if (t == ignore_index) {
      loss[row] = (T)0;
    } else {
      T wt = has_weight ? weight[t] : (T)1;
      T l = ((T)1 - smoothing) * wt * (ls - (xr[t] - m));
      if (smoothing != (T)0) l += smoothing / (T)n * (ls * wsum - ws);
      loss[row] = l;
    }
  }
}

#define FORGEML_CROSS_ENTROPY(T, SUFFIX)                                                                     \
  extern "C" __global__ void forgeml_cross_entropy_##SUFFIX(const T* x, const long long* target,              \
                                                            const T* weight, int has_weight, long long n,     \
                                                            long long ignore_index, T smoothing, T* loss,     \
                                                            T* lse) {                                         \
    __shared__ T buf[FORGEML_BLOCK];                                                                          \
    forgeml_cross_entropy_row<T>(x, target, weight, has_weight, n, ignore_index, smoothing, loss, lse, buf);  \
  }

FORGEML_CROSS_ENTROPY(float, f32)
FORGEML_CROSS_ENTROPY(double, f64)
"""
)

LAYER_NORM_SOURCE = (
    _ROW_HEADER
    + r"""
// LayerNorm of each row of a contiguous [rows, n] array: biased variance (two passes), eps inside the root.
template <typename T>
__device__ void forgeml_layer_norm_row(const T* x, const T* weight, const T* bias, int has_weight, int has_bias,
                                       long long n, T eps, T* y, T* mean_out, T* rstd_out, T* buf) {
  long long row = blockIdx.x;
  const T* xr = x + row * n;
  T* yr = y + row * n;
  T s = (T)0;
  for (long long j = threadIdx.x; j < n; j += blockDim.x) s += xr[j];
  T mean = forgeml_block_sum(s, buf) / (T)n;
  T v = (T)0;
  for (long long j = threadIdx.x; j < n; j += blockDim.x) {
    T d = xr[j] - mean;
    v += d * d;
  }
  T rstd = (T)1 / sqrt(forgeml_block_sum(v, buf) / (T)n + eps);
  for (long long j = threadIdx.x; j < n; j += blockDim.x) {
    T h = (xr[j] - mean) * rstd;
    if (has_weight) h *= weight[j];
    if (has_bias) h += bias[j];
    yr[j] = h;
  }
  if (threadIdx.x == 0) {
    mean_out[row] = mean;
    rstd_out[row] = rstd;
  }
}

// dx = rstd * (gw - mean(gw) - xhat * mean(gw * xhat)), gw = g * weight, xhat = (x - mean) * rstd
template <typename T>
__device__ void forgeml_layer_norm_backward_row(const T* g, const T* x, const T* weight, int has_weight,
                                                const T* mean, const T* rstd, long long n, T* dx, T* buf) {
  long long row = blockIdx.x;
  const T* gr = g + row * n;
  const T* xr = x + row * n;
  T* dr = dx + row * n;
  T mu = mean[row], r = rstd[row];
  T a = (T)0, b = (T)0;
  for (long long j = threadIdx.x; j < n; j += blockDim.x) {
    T gw = has_weight ? gr[j] * weight[j] : gr[j];
    a += gw;
    b += gw * ((xr[j] - mu) * r);
  }
  a = forgeml_block_sum(a, buf) / (T)n;
  b = forgeml_block_sum(b, buf) / (T)n;
  for (long long j = threadIdx.x; j < n; j += blockDim.x) {
    T gw = has_weight ? gr[j] * weight[j] : gr[j];
    dr[j] = (gw - a - ((xr[j] - mu) * r) * b) * r;
  }
}

#define FORGEML_LAYER_NORM(T, SUFFIX)                                                                        \
  extern "C" __global__ void forgeml_layer_norm_##SUFFIX(const T* x, const T* weight, const T* bias,         \
                                                         int has_weight, int has_bias, long long n, T eps,    \
                                                         T* y, T* mean, T* rstd) {                            \
    __shared__ T buf[FORGEML_BLOCK];                                                                          \
    forgeml_layer_norm_row<T>(x, weight, bias, has_weight, has_bias, n, eps, y, mean, rstd, buf);             \
  }                                                                                                           \
  extern "C" __global__ void forgeml_layer_norm_backward_##SUFFIX(const T* g, const T* x, const T* weight,   \
                                                                  int has_weight, const T* mean,              \
                                                                  const T* rstd, long long n, T* dx) {        \
    __shared__ T buf[FORGEML_BLOCK];                                                                          \
    forgeml_layer_norm_backward_row<T>(g, x, weight, has_weight, mean, rstd, n, dx, buf);                     \
  }

FORGEML_LAYER_NORM(float, f32)
FORGEML_LAYER_NORM(double, f64)
"""
)

RAW_SOURCES: dict[str, str] = {
    "softmax": SOFTMAX_SOURCE,
    "cross_entropy": CROSS_ENTROPY_SOURCE,
    "layer_norm": LAYER_NORM_SOURCE,
}

# -- elementwise kernels -------------------------------------------------------------------------------
_CROSS_ENTROPY_BACKWARD_BODY = """
long long row = i / n_cls;
long long col = i - row * n_cls;
long long t = target[row];
if (t == ignore_index) {
  dx = (T)0;
} else {
  T wt = has_weight ? weight[t] : (T)1;
  T wc = has_weight ? weight[col] : (T)1;
  T eps_c = smoothing / (T)n_cls;
  T total = ((T)1 - smoothing) * wt + eps_c * (has_weight ? wsum[0] : (T)n_cls);
  T a = eps_c * wc + (col == t ? ((T)1 - smoothing) * wt : (T)0);
  dx = (total * exp(x - lse[row]) - a) * scale[row * scale_stride];
}
"""

SPECS: dict[str, ElementwiseSpec] = {
    # d loss / d x of cross-entropy: (sum_c a_c) * softmax(x) - a, times the upstream gradient of the row
    "nn_cross_entropy_backward": ElementwiseSpec(
        "nn_cross_entropy_backward",
        "T x, raw T lse, raw int64 target, raw T weight, raw T wsum, raw T scale, int32 has_weight, "
        "int64 n_cls, int64 ignore_index, T smoothing, int64 scale_stride",
        "T dx",
        _CROSS_ENTROPY_BACKWARD_BODY,
    ),
    # dropout: keep where the uniform draw u >= p, survivors scaled by 1 / (1 - p)
    "nn_dropout": ElementwiseSpec(
        "nn_dropout",
        "T x, float32 u, float32 p, T scale",
        "T y, bool keep",
        "keep = u >= p; y = x * (keep ? scale : (T)0.0f)",
    ),
    "nn_dropout_backward": ElementwiseSpec(
        "nn_dropout_backward", "T g, bool keep, T scale", "T dx", "dx = g * (keep ? scale : (T)0.0f)"
    ),
    # the bias of a linear layer added to the GEMM's output in place (y has n_out columns)
    "nn_bias_add": ElementwiseSpec("nn_bias_add", "raw T bias, int64 n_out", "T y", "y = y + bias[i % n_out]"),
}

_SUFFIX = {"float32": "f32", "float64": "f64"}
_modules: dict = {}


def kernel_dtype(xp, dtype):
    """The dtype the row kernels compute ``dtype`` data in (float16 in float32), or None when they have none."""
    name = dtype.name
    if name in _SUFFIX:
        return dtype
    if name == "float16":
        return xp.dtype(xp.float32)
    return None


def _function(xp, source: str, name: str, dtype):
    """The kernel ``name`` of ``RAW_SOURCES[source]`` for ``dtype`` (float32/float64), compiled once per namespace."""
    key = (id(xp), source)
    module = _modules.get(key)
    if module is None:
        module = _modules[key] = xp.RawModule(code=RAW_SOURCES[source])
    return module.get_function(f"forgeml_{name}_{_SUFFIX[dtype.name]}")


def _rows(xp, a, n: int):
    """``a`` as a C-contiguous [rows, n] array."""
    return xp.ascontiguousarray(a).reshape(-1, n)


def softmax_forward(xp, x2, log: bool, zero_masked_rows: bool = False):
    """Softmax (or log-softmax) of each row of the contiguous 2-D float32/float64 array ``x2``."""
    rows, n = x2.shape
    y = xp.empty_like(x2)
    if rows and n:
        fn = _function(xp, "softmax", "softmax", x2.dtype)
        fn((rows,), (BLOCK,), (x2, y, xp.int64(n), xp.int32(log), xp.int32(zero_masked_rows)))
    return y


def softmax_backward(xp, g2, y2, log: bool):
    """The input gradient of a row softmax (log-softmax) from the upstream ``g2`` and the forward output ``y2``."""
    rows, n = y2.shape
    g2 = xp.ascontiguousarray(g2, dtype=y2.dtype)
    dx = xp.empty_like(y2)
    if rows and n:
        fn = _function(xp, "softmax", "softmax_backward", y2.dtype)
        fn((rows,), (BLOCK,), (g2, y2, dx, xp.int64(n), xp.int32(log)))
    return dx


def cross_entropy_forward(xp, x2, target, weight, ignore_index: int, smoothing: float):
    """Per-row cross-entropy of contiguous logits ``x2`` [rows, C] and int64 ``target`` [rows]; returns (loss, lse)."""
    rows, n = x2.shape
    loss = xp.empty(rows, dtype=x2.dtype)
    lse = xp.empty(rows, dtype=x2.dtype)
    if rows:
        fn = _function(xp, "cross_entropy", "cross_entropy", x2.dtype)
        w = weight if weight is not None else x2  # a pointer the kernel never reads
        args = (x2, target, w, xp.int32(weight is not None), xp.int64(n), xp.int64(ignore_index))
        fn((rows,), (BLOCK,), (*args, x2.dtype.type(smoothing), loss, lse))
    return loss, lse


def cross_entropy_backward(xp, x2, lse, target, weight, ignore_index: int, smoothing: float, scale):
    """d loss / d logits [rows, C]; ``scale`` is the upstream gradient per row ([rows]) or for all rows (0-d)."""
    n = x2.shape[1]
    has_weight = weight is not None
    w = weight if has_weight else lse
    wsum = weight.sum() if has_weight and smoothing else lse
    scale = xp.ascontiguousarray(scale.reshape(-1), dtype=x2.dtype)
    stride = 0 if scale.size == 1 else 1  # one upstream gradient for all rows, or one per row
    k = SPECS["nn_cross_entropy_backward"](xp)
    t = x2.dtype.type
    return k(x2, lse, target, w, wsum, scale, xp.int32(has_weight), n, ignore_index, t(smoothing), stride)


def layer_norm_forward(xp, x2, weight, bias, eps: float):
    """LayerNorm of each row of contiguous ``x2`` [rows, n]; returns (y, mean, rstd), mean and rstd of shape [rows]."""
    rows, n = x2.shape
    y = xp.empty_like(x2)
    mean = xp.empty(rows, dtype=x2.dtype)
    rstd = xp.empty(rows, dtype=x2.dtype)
    if rows and n:
        fn = _function(xp, "layer_norm", "layer_norm", x2.dtype)
        w = weight if weight is not None else x2
        b = bias if bias is not None else x2
        flags = (xp.int32(weight is not None), xp.int32(bias is not None))
        fn((rows,), (BLOCK,), (x2, w, b, *flags, xp.int64(n), x2.dtype.type(eps), y, mean, rstd))
    return y, mean, rstd


def layer_norm_backward(xp, g2, x2, weight, mean, rstd):
    """The input gradient of LayerNorm for contiguous rows ``x2`` and upstream ``g2`` ([rows, n])."""
    rows, n = x2.shape
    g2 = xp.ascontiguousarray(g2, dtype=x2.dtype)
    dx = xp.empty_like(x2)
    if rows and n:
        fn = _function(xp, "layer_norm", "layer_norm_backward", x2.dtype)
        w = weight if weight is not None else x2
        fn((rows,), (BLOCK,), (g2, x2, w, xp.int32(weight is not None), mean, rstd, xp.int64(n), dx))
    return dx


def dropout_forward(xp, x, u, p: float, scale):
    """``(x * keep * scale, keep)`` with ``keep = u >= p`` in one pass (``scale`` of ``x``'s dtype)."""
    return SPECS["nn_dropout"](xp)(x, u, xp.float32(p), scale)


def dropout_backward(xp, g, keep, scale):
    return SPECS["nn_dropout_backward"](xp)(g, keep, scale)


def bias_add_(xp, out, bias):
    """``out += bias`` over the last dim of the GEMM output ``out``, in place."""
    SPECS["nn_bias_add"](xp)(bias, out.shape[-1], out)
    return out
