"""Elementwise ops: arithmetic, activations and comparisons, with broadcasting.

Each differentiable op is an :class:`~forgeml.autograd.ArrayFunction`
(forward and local gradient on arrays, computed with ``ctx.xp``; autograd sums
broadcast gradients back to each input's shape); the functions below it
promote dtypes the way PyTorch does and turn broadcast errors into messages
that name the shapes. GELU has a fused CUDA kernel beside its portable body.
"""

from __future__ import annotations

import math

from ..autograd.function import ArrayFunction
from ..backend.device import HOST_XP, ignore_float_errors, is_cupy, namespace_of
from ..backend.shapes import broadcast_shapes
from ..tensor import Tensor
from . import _cpu, _fused
from ._util import as_tensor_like, binary_operands, float_like, is_number, no_grad_op, python_scalar

_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)
_INV_SQRT_2 = 1.0 / math.sqrt(2.0)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)
# exp(x) overflows past these; sigmoid clamps its argument there, which changes no representable result
_EXP_LIMIT_BY_NAME = {"float16": 11.0, "float32": 88.0, "float64": 708.0}
_EXP_LIMIT: dict = {}  # keyed by dtype object, filled on first use (dtype.name is slow to compute)


def _shape(x):
    return getattr(x, "shape", ())


# ---------------------------------------------------------------- binary ops
class Add(ArrayFunction):
    @staticmethod
    def forward(ctx, a, b):
        return a + b

    @staticmethod
    def backward(ctx, g):
        n = ctx.needs_input_grad
        return (g if n[0] else None), (g if n[1] else None)


class Sub(ArrayFunction):
    @staticmethod
    def forward(ctx, a, b):
        return a - b

    @staticmethod
    def backward(ctx, g):
        n = ctx.needs_input_grad
        return (g if n[0] else None), (-g if n[1] else None)


class Mul(ArrayFunction):
    @staticmethod
    def forward(ctx, a, b):
        n = ctx.needs_input_grad
        ctx.save_for_backward(b if n[0] else None, a if n[1] else None)
        return a * b

    @staticmethod
    def backward(ctx, g):
        b, a = ctx.saved_tensors
        n = ctx.needs_input_grad
        return (g * b if n[0] else None), (g * a if n[1] else None)


class Div(ArrayFunction):
    @staticmethod
    def forward(ctx, a, b):
        out = a / b
        n = ctx.needs_input_grad
        ctx.save_for_backward(b, out if n[1] else None)
        return out

    @staticmethod
    def backward(ctx, g):
        b, out = ctx.saved_tensors
        n = ctx.needs_input_grad
        return (g / b if n[0] else None), (-g * out / b if n[1] else None)


class Pow(ArrayFunction):
    @staticmethod
    def forward(ctx, a, b):
        out = a**b
        ctx.save_for_backward(a, b, out)
        return out

    @staticmethod
    def backward(ctx, g):
        a, b, out = ctx.saved_tensors
        xp = ctx.xp
        n = ctx.needs_input_grad
        ga = gb = None
        if n[0]:
            if is_number(b):
                ga = xp.zeros_like(g * a) if b == 0 else g * (b * a ** (b - 1))
            else:
                ga = g * xp.where(b == 0, 0, b * a ** xp.where(b == 0, 1, b - 1))
        if n[1]:
            base = a if not is_number(a) else xp.asarray(a, dtype=out.dtype)
            with ignore_float_errors():
                local = out * xp.log(base)
            local = xp.where((base == 0) & (b >= 0), 0, local)
            gb = g * local
        return ga, gb


class Maximum(ArrayFunction):
    @staticmethod
    def forward(ctx, a, b):
        ctx.save_for_backward(a, b)
        return ctx.xp.maximum(a, b)

    @staticmethod
    def backward(ctx, g):
        a, b = ctx.saved_tensors
        return _tie_split(ctx, g, a > b, a == b)


class Minimum(ArrayFunction):
    @staticmethod
    def forward(ctx, a, b):
        ctx.save_for_backward(a, b)
        return ctx.xp.minimum(a, b)

    @staticmethod
    def backward(ctx, g):
        a, b = ctx.saved_tensors
        return _tie_split(ctx, g, a < b, a == b)


def _tie_split(ctx, g, a_wins, tie):
    """Gradient of max/min of two tensors: to the winner, half to each on a tie."""
    n = ctx.needs_input_grad
    half = (g * tie) * 0.5
    ga = g * a_wins + half if n[0] else None
    gb = g * ~(a_wins | tie) + half if n[1] else None
    return ga, gb


class Remainder(ArrayFunction):
    @staticmethod
    def forward(ctx, a, b):
        n = ctx.needs_input_grad
        ctx.save_for_backward(a if n[1] else None, b if n[1] else None)
        return ctx.xp.remainder(a, b)

    @staticmethod
    def backward(ctx, g):
        a, b = ctx.saved_tensors
        n = ctx.needs_input_grad
        return (g if n[0] else None), (-g * ctx.xp.floor_divide(a, b) if n[1] else None)


class FloorDivide(ArrayFunction):
    @staticmethod
    def forward(ctx, a, b):
        return ctx.xp.floor_divide(a, b)

    @staticmethod
    def backward(ctx, g):
        raise RuntimeError("the derivative of floor_divide (//) is not implemented, as in PyTorch")


class Where(ArrayFunction):
    @staticmethod
    def forward(ctx, cond, a, b):
        ctx.save_for_backward(cond)
        return ctx.xp.where(cond, a, b)

    @staticmethod
    def backward(ctx, g):
        (cond,) = ctx.saved_tensors
        xp = ctx.xp
        n = ctx.needs_input_grad
        zero = xp.zeros((), dtype=g.dtype)
        ga = xp.where(cond, g, zero) if n[1] else None
        gb = xp.where(cond, zero, g) if n[2] else None
        return None, ga, gb


# ----------------------------------------------------------------- unary ops
class Neg(ArrayFunction):
    @staticmethod
    def forward(ctx, x):
        return -x

    @staticmethod
    def backward(ctx, g):
        return -g


class Abs(ArrayFunction):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return ctx.xp.abs(x)

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return g * ctx.xp.sign(x)


class Exp(ArrayFunction):
    @staticmethod
    def forward(ctx, x):
        out = ctx.xp.exp(x)
        ctx.save_for_backward(out)
        return out

    @staticmethod
    def backward(ctx, g):
        (out,) = ctx.saved_tensors
        return g * out


class Log(ArrayFunction):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return ctx.xp.log(x)

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return g / x


class Log1p(ArrayFunction):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return ctx.xp.log1p(x)

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return g / (1 + x)


class Sqrt(ArrayFunction):
    @staticmethod
    def forward(ctx, x):
        out = ctx.xp.sqrt(x)
        ctx.save_for_backward(out)
        return out

    @staticmethod
    def backward(ctx, g):
        (out,) = ctx.saved_tensors
        return g / (2 * out)


class Rsqrt(ArrayFunction):
    @staticmethod
    def forward(ctx, x):
        out = 1 / ctx.xp.sqrt(x)
        ctx.save_for_backward(out)
        return out

    @staticmethod
    def backward(ctx, g):
        (out,) = ctx.saved_tensors
        return g * (-0.5 * out * out * out)


class Sin(ArrayFunction):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return ctx.xp.sin(x)

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return g * ctx.xp.cos(x)


class Cos(ArrayFunction):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return ctx.xp.cos(x)

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return -g * ctx.xp.sin(x)


class Tanh(ArrayFunction):
    @staticmethod
    def forward(ctx, x):
        out = ctx.xp.tanh(x)
        ctx.save_for_backward(out)
        return out

    @staticmethod
    def backward(ctx, g):
        (out,) = ctx.saved_tensors
        return g * (1 - out * out)


def sigmoid_array(x, xp=None):
    """Logistic function without overflow warnings: exp's argument is clamped where it would overflow."""
    xp = xp or namespace_of(x)
    limit = _EXP_LIMIT.get(x.dtype)
    if limit is None:
        limit = _EXP_LIMIT[x.dtype] = _EXP_LIMIT_BY_NAME[x.dtype.name]
    return 1 / (1 + xp.exp(xp.minimum(-x, limit)))


class Sigmoid(ArrayFunction):
    @staticmethod
    def forward(ctx, x):
        out = sigmoid_array(x, ctx.xp)
        ctx.save_for_backward(out)
        return out

    @staticmethod
    def backward(ctx, g):
        (out,) = ctx.saved_tensors
        return g * (out * (1 - out))


class Relu(ArrayFunction):
    @staticmethod
    def forward(ctx, x):
        out = ctx.xp.maximum(x, 0)
        ctx.save_for_backward(out)
        return out

    @staticmethod
    def backward(ctx, g):
        (out,) = ctx.saved_tensors
        return g * (out > 0)


class LeakyRelu(ArrayFunction):
    @staticmethod
    def forward(ctx, x, negative_slope):
        ctx.save_for_backward(x)
        ctx.slope = negative_slope
        return ctx.xp.where(x > 0, x, x * negative_slope)

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return g * ctx.xp.where(x > 0, 1, ctx.slope).astype(g.dtype, copy=False), None


class Elu(ArrayFunction):
    @staticmethod
    def forward(ctx, x, alpha):
        xp = ctx.xp
        out = xp.where(x > 0, x, alpha * xp.expm1(xp.minimum(x, 0)))
        ctx.save_for_backward(x, out)
        ctx.alpha = alpha
        return out

    @staticmethod
    def backward(ctx, g):
        x, out = ctx.saved_tensors
        return g * ctx.xp.where(x > 0, 1, out + ctx.alpha).astype(g.dtype, copy=False), None


class Silu(ArrayFunction):
    @staticmethod
    def forward(ctx, x):
        s = sigmoid_array(x, ctx.xp)
        ctx.save_for_backward(x, s)
        return x * s

    @staticmethod
    def backward(ctx, g):
        x, s = ctx.saved_tensors
        return g * (s * (1 + x * (1 - s)))


class Softplus(ArrayFunction):
    @staticmethod
    def forward(ctx, x, beta, threshold):
        xp = ctx.xp
        z = x * beta
        linear = z > threshold
        out = xp.where(linear, x, xp.log1p(xp.exp(xp.minimum(z, threshold))) / beta)
        ctx.save_for_backward(z, linear)
        ctx.beta = beta  # for the create_graph backward (ops/double_backward.py)
        return out.astype(x.dtype, copy=False)

    @staticmethod
    def backward(ctx, g):
        z, linear = ctx.saved_tensors
        xp = ctx.xp
        return g * xp.where(linear, 1, sigmoid_array(z, xp)).astype(g.dtype, copy=False), None, None


_ERFC_COEFFICIENTS = (
    0.17087277,
    -0.82215223,
    1.48851587,
    -1.13520398,
    0.27886807,
    -0.18628806,
    0.09678418,
    0.37409196,
    1.00002368,
    -1.26551223,
)  # Numerical Recipes' Chebyshev fit of erfc, highest power first: fractional error below 1.2e-7


def _half_erfc_of_scaled(a, xp):
    """``erfc(a / sqrt(2)) / 2`` for ``a >= 0`` in float32, i.e. the normal tail ``P(X > a)``.

    Numerical Recipes' fit gives ``erfc(z) = t exp(-z^2 + poly(t))``. The exponent
    ``-z^2 = -a^2/2`` is where float32 loses accuracy, so ``a`` is split as
    ``ah + (a - ah)`` with ``ah`` on a 1/16 grid: ``ah^2`` is exact and the rest is
    small, as libm's erfc does it; the two parts are exponentiated separately. Relative error below
    5e-7 up to ``a = 9``.
    """
    f32 = xp.float32
    t = xp.multiply(a, f32(0.5 * _INV_SQRT_2))
    t += f32(1.0)
    xp.reciprocal(t, out=t)
    poly = xp.full_like(a, _ERFC_COEFFICIENTS[0])
    for c in _ERFC_COEFFICIENTS[1:]:  # Horner's rule
        poly *= t
        poly += f32(c)
    ah = xp.multiply(a, f32(16.0))
    xp.floor(ah, out=ah)
    ah *= f32(1.0 / 16.0)
    rest = xp.subtract(a, ah)
    rest *= a + ah  # (a - ah)(a + ah) = a^2 - ah^2, accurately
    rest *= f32(0.5)
    poly -= rest
    xp.exp(poly, out=poly)
    ah *= ah  # exact: ah has at most 8 significant bits
    ah *= f32(-0.5)
    xp.exp(ah, out=ah)  # exp(-ah^2/2) of an exact argument
    poly *= ah
    poly *= t
    poly *= f32(0.5)
    return poly


def erfc64_portable(z, xp):
    """``erfc(z)`` for float64 ``z >= 0`` with array ops alone, to about 2e-13 relative.

    Below 2 it is ``1 - erf(z)`` from erf's Maclaurin series (40 terms); from 2
    up, the continued fraction ``erfc(z) = exp(-z^2)/sqrt(pi) / (z + (1/2)/(z +
    1/(z + (3/2)/(z + ...))))`` evaluated from its 60th level inward.
    """
    small = xp.minimum(z, 2.0)
    z2 = small * small
    term = small.copy()
    total = small.copy()
    for n in range(1, 40):
        term = term * (-z2) / n
        total = total + term / (2 * n + 1)
    series = 1.0 - total * (2.0 / math.sqrt(math.pi))
    big = xp.maximum(z, 2.0)
    frac = big.copy()
    for k in range(60, 0, -1):
        frac = big + (k / 2.0) / frac
    tail = xp.exp(-big * big) / (math.sqrt(math.pi) * frac)
    return xp.where(z < 2.0, series, tail)


def normal_cdf(x, xp=None):
    """Phi(x), the standard normal CDF, accurate in relative terms in both tails.

    float64 uses an exact erfc (libm's on the CPU, CUDA's on a GPU, a float64
    rational fit elsewhere); float32 and float16 a float32 fit whose error is
    below float32 precision in the body and about 2e-7 relative in the tails.
    """
    xp = xp or namespace_of(x)
    if x.dtype.name == "float64":
        z = xp.abs(x) * _INV_SQRT_2
        if xp is HOST_XP:
            erfc = _cpu.erfc64(z)
        elif is_cupy(xp):
            erfc = _fused.erfc64(xp, z)
        else:
            erfc = erfc64_portable(z, xp)
        tail = 0.5 * erfc
        return xp.where(x < 0, tail, 1.0 - tail)
    return normal_cdf_and_density(x, xp)[0]


def normal_cdf_and_density(x, xp=None):
    """``(Phi(x), exp(-x^2 / 2))`` for float32 or float16 ``x``, in ``x``'s dtype: GELU's forward needs the
    first and its backward the second (the density without its 1/sqrt(2 pi)), and both share one ``exp``.

    ``Phi`` is as accurate as :func:`normal_cdf` promises (relative error about 2e-7 in both tails)."""
    xp = xp or namespace_of(x)
    flat = x.reshape(-1)
    if xp is HOST_XP and x.size > _CDF_BLOCK:
        # ~30 array passes: on the CPU, blocks that stay in cache take half the time of whole-array passes
        cdf, gauss = xp.empty(flat.shape, dtype=x.dtype), xp.empty(flat.shape, dtype=x.dtype)
        for start in range(0, flat.size, _CDF_BLOCK):
            block = slice(start, start + _CDF_BLOCK)
            cdf[block], gauss[block] = _cdf_and_gauss32(flat[block], xp)
    else:
        cdf, gauss = (part.astype(x.dtype, copy=False) for part in _cdf_and_gauss32(flat, xp))
    # Beyond -_FAR_TAIL, float32's rounding of x^2 / 2 inside exp costs more than 5e-7 of Phi's relative
    # accuracy: the few elements out there (1 in 30,000 of a standard normal's) take the split exponent of
    # _half_erfc_of_scaled. (Above +_FAR_TAIL, 1 - tail rounds the same either way.)
    far = xp.flatnonzero(flat < -_FAR_TAIL)
    if far.size:
        cdf[far] = _half_erfc_of_scaled(-flat[far].astype(xp.float32, copy=False), xp)
    return cdf.reshape(x.shape), gauss.reshape(x.shape)


_CDF_BLOCK = 32768  # elements: a float32 block and its few temporaries fit a core's L2 cache (measured best)
# P(X > a) = t F(t) exp(-a^2/2) with t = 1 / (1 + a / (2 sqrt 2)): F is erfcx(a / sqrt 2) / (2 t), smooth on
# t in (0, 1]; a degree-10 least-squares fit in float64 (relative error 1.2e-8; 1.8e-7 evaluated in float32).
_TAIL_COEFFICIENTS = (
    0.14104739761845453,
    0.141046874979308,
    0.12344233160745224,
    0.08765752515918637,
    0.046733860547167466,
    -0.029614703171044567,
    0.06610773169136766,
    -0.2275126936974292,
    0.24686845991625628,
    -0.11737636035795257,
    0.021599578000110295,
)
_FAR_TAIL = 4.0  # see normal_cdf_and_density


def _cdf_and_gauss32(x, xp):
    """``(Phi(x), exp(-x^2 / 2))`` in float32, before :func:`normal_cdf_and_density`'s far-tail fix."""
    f32 = xp.float32
    a = xp.abs(x).astype(f32, copy=False)
    t = xp.multiply(a, f32(0.5 * _INV_SQRT_2))
    t += f32(1.0)
    xp.reciprocal(t, out=t)
    tail = xp.full_like(a, _TAIL_COEFFICIENTS[-1])
    for c in _TAIL_COEFFICIENTS[-2::-1]:  # Horner's rule
        tail *= t
        tail += f32(c)
    tail *= t
    gauss = xp.multiply(a, a)
    gauss *= f32(-0.5)
    xp.exp(gauss, out=gauss)
    tail *= gauss
    # Phi(x) is the tail for x < 0 and 1 - tail otherwise: tail + [x >= 0] (1 - 2 tail), cheaper than a select.
    flip = xp.multiply(tail, f32(-2.0))
    flip += f32(1.0)
    flip *= x >= 0
    tail += flip
    return tail, gauss


class Gelu(ArrayFunction):
    @staticmethod
    def forward(ctx, x, approximate):
        xp = ctx.xp
        ctx.approximate = approximate
        if is_cupy(xp):
            ctx.save_for_backward(x)
            return _fused.gelu_forward(xp, x, approximate)
        if approximate == "tanh":
            inner = _SQRT_2_OVER_PI * (x + 0.044715 * x * x * x)
            t = xp.tanh(inner)
            ctx.save_for_backward(x, t)
            return 0.5 * x * (1 + t)
        if x.dtype.name == "float64":
            cdf = normal_cdf(x, xp)
            ctx.save_for_backward(x, cdf)
            return x * cdf
        cdf, gauss = normal_cdf_and_density(x, xp)
        ctx.save_for_backward(x, cdf, gauss)  # the density, for backward: no second exp there
        return x * cdf

    @staticmethod
    def backward(ctx, g):
        xp = ctx.xp
        if is_cupy(xp):
            (x,) = ctx.saved_tensors
            return _fused.gelu_backward(xp, g, x, ctx.approximate), None
        x, aux, *gauss = ctx.saved_tensors
        if ctx.approximate == "tanh":
            t = aux
            d_inner = _SQRT_2_OVER_PI * (1 + 3 * 0.044715 * x * x)
            local = 0.5 * (1 + t) + 0.5 * x * (1 - t * t) * d_inner
        elif gauss:
            local = x * gauss[0]
            local *= x.dtype.type(_INV_SQRT_2PI)
            local += aux
        else:
            local = aux + x * (_INV_SQRT_2PI * xp.exp(-0.5 * x * x))
        return g * local.astype(g.dtype, copy=False), None


class Clamp(ArrayFunction):
    @staticmethod
    def forward(ctx, x, low, high):
        xp = ctx.xp
        out = x
        if low is not None:
            out = xp.maximum(out, low)
        if high is not None:
            out = xp.minimum(out, high)
        if out is x:
            out = x.copy()
        if ctx.needs_input_grad[0]:
            keep = xp.ones(x.shape, dtype=bool)
            if low is not None:
                keep &= x >= low
            if high is not None:
                keep &= x <= high
            ctx.save_for_backward(keep)
        return out

    @staticmethod
    def backward(ctx, g):
        (keep,) = ctx.saved_tensors
        return g * keep, None, None


class ZeroGrad(ArrayFunction):
    """Piecewise-constant ops (floor, ceil, round, trunc, sign): the gradient is zero."""

    @staticmethod
    def forward(ctx, x, fn):
        return getattr(ctx.xp, fn)(x)

    @staticmethod
    def backward(ctx, g):
        return ctx.xp.zeros_like(g), None


class Round(ArrayFunction):
    """Rounding to ``decimals`` places (half to even, as PyTorch): the gradient is zero."""

    @staticmethod
    def forward(ctx, x, decimals):
        return ctx.xp.round(x, decimals)

    @staticmethod
    def backward(ctx, g):
        return ctx.xp.zeros_like(g), None


class Reciprocal(ArrayFunction):
    @staticmethod
    def forward(ctx, x):
        out = 1 / x
        ctx.save_for_backward(out)
        return out

    @staticmethod
    def backward(ctx, g):
        (out,) = ctx.saved_tensors
        return -g * out * out


# ------------------------------------------------------------- the functions
def _broadcast_error(a, b, op_name):
    sa, sb = _shape(a._data if isinstance(a, Tensor) else a), _shape(b._data if isinstance(b, Tensor) else b)
    try:
        broadcast_shapes(sa, sb)
    except ValueError:
        ra, rb = sa[::-1], sb[::-1]
        for i in range(min(len(ra), len(rb))):
            if ra[i] != rb[i] and ra[i] != 1 and rb[i] != 1:
                dim = max(len(sa), len(sb)) - 1 - i
                return RuntimeError(
                    f"{op_name}: the size of tensor a ({ra[i]}) must match the size of tensor b ({rb[i]}) "
                    f"at non-singleton dimension {dim} (shapes {list(sa)} and {list(sb)})"
                )
    return None


def _binary(fn_cls, a, b, op_name):
    # Fast path for the common cases that need no promotion: float tensor with a Python
    # float, or two tensors of one dtype. Everything else goes through binary_operands.
    if not (
        isinstance(a, Tensor)
        and (
            (type(b) is float and a._data.dtype.kind == "f")
            or (isinstance(b, Tensor) and a._data.dtype == b._data.dtype)
        )
    ):
        a, b = binary_operands(a, b, op_name)
    try:
        return fn_cls.apply(a, b)
    except ValueError as exc:
        error = _broadcast_error(a, b, op_name)
        if error is None:
            raise
        raise error from exc


def add(input, other, *, alpha=1):
    """``input + alpha * other``."""
    if alpha != 1:
        other = mul(other, alpha)
    return _binary(Add, input, other, "add")


def _is_bool(x) -> bool:
    return isinstance(x, bool) or (isinstance(x, Tensor) and x._data.dtype.kind == "b")


def sub(input, other, *, alpha=1):
    """``input - alpha * other`` (not defined for bool operands, as in PyTorch)."""
    if _is_bool(input) or _is_bool(other):
        raise RuntimeError(
            "Subtraction, the `-` operator, with a bool tensor is not supported. "
            "If you are trying to invert a mask, use the `~` or `logical_not()` operator instead."
        )
    if alpha != 1:
        other = mul(other, alpha)
    return _binary(Sub, input, other, "sub")


def mul(input, other):
    return _binary(Mul, input, other, "mul")


def div(input, other, *, rounding_mode=None):
    """True division (integers give floats), or ``rounding_mode='floor'|'trunc'``."""
    if rounding_mode == "floor":
        return floor_divide(input, other)
    if rounding_mode == "trunc":
        return trunc(div(input, other)).to(_result_dtype_for_rounding(input, other))
    if rounding_mode is not None:
        raise ValueError(f"div expected rounding_mode to be one of None, 'trunc' or 'floor', got {rounding_mode!r}")
    a, b = binary_operands(input, other, "div")
    if isinstance(a, Tensor) and a._data.dtype.kind in "biu" and not (isinstance(b, float)):
        a = float_like(a)
    if isinstance(b, Tensor) and b._data.dtype.kind in "biu" and not (isinstance(a, float)):
        b = float_like(b)
    return _binary(Div, a, b, "div")


def _result_dtype_for_rounding(a, b):
    from ._util import operand_result_type

    return operand_result_type(a, b)


def floor_divide(input, other):
    return _binary(FloorDivide, input, other, "floor_divide")


def remainder(input, other):
    return _binary(Remainder, input, other, "remainder")


def pow(input, exponent):
    return _binary(Pow, input, exponent, "pow")


def maximum(input, other):
    return _binary(Maximum, input, other, "maximum")


def minimum(input, other):
    return _binary(Minimum, input, other, "minimum")


def where(condition, input=None, other=None):
    """Elements of ``input`` where ``condition`` holds, else of ``other`` (either may be a number)."""
    if input is None and other is None:
        from .indexing import nonzero

        return nonzero(condition, as_tuple=True)
    if not isinstance(condition, Tensor):
        condition = as_tensor_like(condition, input if isinstance(input, Tensor) else other)
    cond = condition._data
    if cond.dtype.kind != "b":
        raise TypeError(f"where expected condition to be a boolean tensor, but got a tensor with dtype {cond.dtype}")
    a, b = binary_operands(input, other, "where")
    try:
        return Where.apply(cond, a, b)
    except ValueError as exc:
        raise RuntimeError(
            f"where: condition {list(cond.shape)}, input {list(_shape(_data(a)))} and other "
            f"{list(_shape(_data(b)))} cannot be broadcast together"
        ) from exc


def _data(x):
    return x._data if isinstance(x, Tensor) else x


def _float_input(x: Tensor) -> Tensor:
    if not isinstance(x, Tensor):
        raise TypeError(f"expected a Tensor, got {type(x).__name__}")
    return float_like(x)


def _unary(fn_cls):
    def op(input):
        return fn_cls.apply(_float_input(input))

    return op


def neg(input):
    if _is_bool(input):
        raise RuntimeError(
            "Negation, the `-` operator, on a bool tensor is not supported. "
            "If you are trying to invert a mask, use the `~` or `logical_not()` operator instead."
        )
    return Neg.apply(input)


def abs(input):
    return Abs.apply(input)


exp = _unary(Exp)
log = _unary(Log)
log1p = _unary(Log1p)
sqrt = _unary(Sqrt)
rsqrt = _unary(Rsqrt)
sin = _unary(Sin)
cos = _unary(Cos)
tanh = _unary(Tanh)
sigmoid = _unary(Sigmoid)
silu = _unary(Silu)
reciprocal = _unary(Reciprocal)


def relu(input):
    return Relu.apply(input)


def square(input):
    return mul(input, input)


def leaky_relu(input, negative_slope: float = 0.01):
    return LeakyRelu.apply(_float_input(input), negative_slope)


def elu(input, alpha: float = 1.0):
    return Elu.apply(_float_input(input), alpha)


def softplus(input, beta: float = 1.0, threshold: float = 20.0):
    return Softplus.apply(_float_input(input), beta, threshold)


def gelu(input, approximate: str = "none"):
    """GELU: ``x * Phi(x)`` (``approximate='none'``) or its tanh approximation (``'tanh'``)."""
    if approximate not in ("none", "tanh"):
        raise ValueError(f"gelu: approximate must be 'none' or 'tanh', got {approximate!r}")
    return Gelu.apply(_float_input(input), approximate)


def clamp(input, min=None, max=None):
    """Limit ``input`` to ``[min, max]``; the gradient passes where ``min <= x <= max``."""
    if min is None and max is None:
        raise RuntimeError("clamp: at least one of 'min' or 'max' must not be None")
    low = _bound(min, input, "min")
    high = _bound(max, input, "max")
    if isinstance(low, float) or isinstance(high, float):
        input = float_like(input)
    return Clamp.apply(input, low, high)


def _bound(value, input, name):
    if value is None:
        return None
    if isinstance(value, Tensor):
        return value._data.astype(input._data.dtype, copy=False)
    if not is_number(value):
        raise TypeError(f"clamp: {name} must be a number or a Tensor, got {type(value).__name__}")
    return python_scalar(value)


clip = clamp


def _zero_grad_op(name):
    def op(input):
        if input._data.dtype.kind in "biu":
            return no_grad_op(lambda xp, a: getattr(xp, name)(a), input)
        return ZeroGrad.apply(input, name)

    op.__name__ = name
    return op


floor = _zero_grad_op("floor")
ceil = _zero_grad_op("ceil")
trunc = _zero_grad_op("trunc")
sign = _zero_grad_op("sign")


def round(input, decimals: int = 0):
    if input._data.dtype.kind in "biu":
        return no_grad_op(lambda xp, a: xp.round(a, decimals), input)
    return Round.apply(input, decimals)


# --------------------------------------------------------- comparisons, logic
def _compare(ufunc_name, op_name):
    def op(input, other):
        a, b = binary_operands(input, other, op_name)
        try:
            return no_grad_op(lambda xp, x, y: getattr(xp, ufunc_name)(x, y), a, b, name=op_name)
        except ValueError as exc:
            error = _broadcast_error(a, b, op_name)
            if error is None:
                raise
            raise error from exc

    op.__name__ = op_name
    return op


eq = _compare("equal", "eq")
ne = _compare("not_equal", "ne")
lt = _compare("less", "lt")
le = _compare("less_equal", "le")
gt = _compare("greater", "gt")
ge = _compare("greater_equal", "ge")
logical_and = _compare("logical_and", "logical_and")
logical_or = _compare("logical_or", "logical_or")
logical_xor = _compare("logical_xor", "logical_xor")


def logical_not(input):
    return no_grad_op(lambda xp, a: xp.logical_not(a), input)


def isnan(input):
    return no_grad_op(lambda xp, a: xp.isnan(a), input)


def isinf(input):
    return no_grad_op(lambda xp, a: xp.isinf(a), input)


def isfinite(input):
    return no_grad_op(lambda xp, a: xp.isfinite(a), input)


def allclose(input, other, rtol: float = 1e-5, atol: float = 1e-8, equal_nan: bool = False) -> bool:
    close = no_grad_op(lambda xp, a, b: xp.allclose(a, b, rtol=rtol, atol=atol, equal_nan=equal_nan), input, other)
    return bool(close._data)


def equal(input, other) -> bool:
    """True when both tensors have the same shape and elements."""
    if input._data.shape != other._data.shape:
        return False
    return bool(no_grad_op(lambda xp, a, b: xp.array_equal(a, b), input, other)._data)
