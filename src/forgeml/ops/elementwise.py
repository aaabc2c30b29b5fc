"""Elementwise ops: arithmetic, activations and comparisons, with broadcasting.

Each differentiable op is a raw :class:`~forgeml.autograd.Function` (forward
and local gradient on arrays); the functions below it promote dtypes the way
PyTorch does and turn NumPy's broadcast errors into messages that name the
shapes.
"""

from __future__ import annotations

import math

import numpy as np

from ..autograd.function import Function
from ..tensor import Tensor
from ._util import binary_operands, float_like, is_number, python_scalar, unbroadcast

_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)
_INV_SQRT_2 = 1.0 / math.sqrt(2.0)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)
# exp(x) overflows past these; sigmoid clamps its argument there, which changes no representable result
_EXP_LIMIT = {np.dtype(np.float16): 11.0, np.dtype(np.float32): 88.0, np.dtype(np.float64): 708.0}


def _shape(x):
    return getattr(x, "shape", ())


# ---------------------------------------------------------------- binary ops
class Add(Function):
    _raw = True

    @staticmethod
    def forward(ctx, a, b):
        ctx.shapes = (getattr(a, "shape", ()), getattr(b, "shape", ()))
        return a + b

    @staticmethod
    def backward(ctx, g):
        n = ctx.needs_input_grad
        sa, sb = ctx.shapes
        return (unbroadcast(g, sa) if n[0] else None, unbroadcast(g, sb) if n[1] else None)


class Sub(Function):
    _raw = True

    @staticmethod
    def forward(ctx, a, b):
        ctx.shapes = (getattr(a, "shape", ()), getattr(b, "shape", ()))
        return a - b

    @staticmethod
    def backward(ctx, g):
        n = ctx.needs_input_grad
        sa, sb = ctx.shapes
        return (unbroadcast(g, sa) if n[0] else None, unbroadcast(-g, sb) if n[1] else None)


class Mul(Function):
    _raw = True

    @staticmethod
    def forward(ctx, a, b):
        n = ctx.needs_input_grad
        ctx.save_for_backward(b if n[0] else None, a if n[1] else None)
        ctx.shapes = (getattr(a, "shape", ()), getattr(b, "shape", ()))
        return a * b

    @staticmethod
    def backward(ctx, g):
        b, a = ctx.saved_tensors
        n = ctx.needs_input_grad
        sa, sb = ctx.shapes
        return (unbroadcast(g * b, sa) if n[0] else None, unbroadcast(g * a, sb) if n[1] else None)


class Div(Function):
    _raw = True

    @staticmethod
    def forward(ctx, a, b):
        out = a / b
        n = ctx.needs_input_grad
        ctx.save_for_backward(b, out if n[1] else None)
        ctx.shapes = (getattr(a, "shape", ()), getattr(b, "shape", ()))
        return out

    @staticmethod
    def backward(ctx, g):
        b, out = ctx.saved_tensors
        n = ctx.needs_input_grad
        sa, sb = ctx.shapes
        ga = unbroadcast(g / b, sa) if n[0] else None
        gb = unbroadcast(-g * out / b, sb) if n[1] else None
        return ga, gb


class Pow(Function):
    _raw = True

    @staticmethod
    def forward(ctx, a, b):
        out = a**b
        ctx.save_for_backward(a, b, out)
        ctx.shapes = (getattr(a, "shape", ()), getattr(b, "shape", ()))
        return out

    @staticmethod
    def backward(ctx, g):
        a, b, out = ctx.saved_tensors
        n = ctx.needs_input_grad
        ga = gb = None
        if n[0]:
            if is_number(b):
                ga = np.zeros_like(g * a) if b == 0 else g * (b * a ** (b - 1))
            else:
                ga = g * np.where(b == 0, 0, b * a ** np.where(b == 0, 1, b - 1))
            ga = unbroadcast(ga, ctx.shapes[0])
        if n[1]:
            base = a if not is_number(a) else np.asarray(a, dtype=np.result_type(out))
            with np.errstate(divide="ignore", invalid="ignore"):
                local = out * np.log(base)
            local = np.where((base == 0) & (np.asarray(b) >= 0), 0, local)
            gb = unbroadcast(g * local, ctx.shapes[1])
        return ga, gb


class Maximum(Function):
    _raw = True

    @staticmethod
    def forward(ctx, a, b):
        ctx.save_for_backward(a, b)
        ctx.shapes = (getattr(a, "shape", ()), getattr(b, "shape", ()))
        return np.maximum(a, b)

    @staticmethod
    def backward(ctx, g):
        a, b = ctx.saved_tensors
        return _tie_split(ctx, g, a > b, a == b)


class Minimum(Function):
    _raw = True

    @staticmethod
    def forward(ctx, a, b):
        ctx.save_for_backward(a, b)
        ctx.shapes = (getattr(a, "shape", ()), getattr(b, "shape", ()))
        return np.minimum(a, b)

    @staticmethod
    def backward(ctx, g):
        a, b = ctx.saved_tensors
        return _tie_split(ctx, g, a < b, a == b)


def _tie_split(ctx, g, a_wins, tie):
    """Gradient of max/min of two tensors: to the winner, half to each on a tie."""
    n = ctx.needs_input_grad
    sa, sb = ctx.shapes
    half = (g * tie) * 0.5
    ga = unbroadcast(g * a_wins + half, sa) if n[0] else None
    gb = unbroadcast(g * ~(a_wins | tie) + half, sb) if n[1] else None
    return ga, gb


class Remainder(Function):
    _raw = True

    @staticmethod
    def forward(ctx, a, b):
        n = ctx.needs_input_grad
        ctx.save_for_backward(a if n[1] else None, b if n[1] else None)
        ctx.shapes = (getattr(a, "shape", ()), getattr(b, "shape", ()))
        return np.remainder(a, b)

    @staticmethod
    def backward(ctx, g):
        a, b = ctx.saved_tensors
        n = ctx.needs_input_grad
        sa, sb = ctx.shapes
        ga = unbroadcast(g, sa) if n[0] else None
        gb = unbroadcast(-g * np.floor_divide(a, b), sb) if n[1] else None
        return ga, gb


class FloorDivide(Function):
    _raw = True

    @staticmethod
    def forward(ctx, a, b):
        return np.floor_divide(a, b)

    @staticmethod
    def backward(ctx, g):
        raise RuntimeError("the derivative of floor_divide (//) is not implemented, as in PyTorch")


class Where(Function):
    _raw = True

    @staticmethod
    def forward(ctx, cond, a, b):
        ctx.save_for_backward(cond)
        ctx.shapes = (_shape(a), _shape(b))
        return np.where(cond, a, b)

    @staticmethod
    def backward(ctx, g):
        (cond,) = ctx.saved_tensors
        n = ctx.needs_input_grad
        sa, sb = ctx.shapes
        zero = np.zeros((), dtype=g.dtype)
        ga = unbroadcast(np.where(cond, g, zero), sa) if n[1] else None
        gb = unbroadcast(np.where(cond, zero, g), sb) if n[2] else None
        return None, ga, gb


# ----------------------------------------------------------------- unary ops
class Neg(Function):
    _raw = True

    @staticmethod
    def forward(ctx, x):
        return -x

    @staticmethod
    def backward(ctx, g):
        return -g


class Abs(Function):
    _raw = True

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return np.abs(x)

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return g * np.sign(x)


class Exp(Function):
    _raw = True

    @staticmethod
    def forward(ctx, x):
        out = np.exp(x)
        ctx.save_for_backward(out)
        return out

    @staticmethod
    def backward(ctx, g):
        (out,) = ctx.saved_tensors
        return g * out


class Log(Function):
    _raw = True

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return np.log(x)

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return g / x


class Log1p(Function):
    _raw = True

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return np.log1p(x)

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return g / (1 + x)


class Sqrt(Function):
    _raw = True

    @staticmethod
    def forward(ctx, x):
        out = np.sqrt(x)
        ctx.save_for_backward(out)
        return out

    @staticmethod
    def backward(ctx, g):
        (out,) = ctx.saved_tensors
        return g / (2 * out)


class Rsqrt(Function):
    _raw = True

    @staticmethod
    def forward(ctx, x):
        out = 1 / np.sqrt(x)
        ctx.save_for_backward(out)
        return out

    @staticmethod
    def backward(ctx, g):
        (out,) = ctx.saved_tensors
        return g * (-0.5 * out * out * out)


class Sin(Function):
    _raw = True

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return np.sin(x)

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return g * np.cos(x)


class Cos(Function):
    _raw = True

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return np.cos(x)

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return -g * np.sin(x)


class Tanh(Function):
    _raw = True

    @staticmethod
    def forward(ctx, x):
        out = np.tanh(x)
        ctx.save_for_backward(out)
        return out

    @staticmethod
    def backward(ctx, g):
        (out,) = ctx.saved_tensors
        return g * (1 - out * out)


def sigmoid_array(x):
    """Logistic function without overflow warnings: exp's argument is clamped where it would overflow."""
    return 1 / (1 + np.exp(np.minimum(-x, _EXP_LIMIT[x.dtype])))


class Sigmoid(Function):
    _raw = True

    @staticmethod
    def forward(ctx, x):
        out = sigmoid_array(x)
        ctx.save_for_backward(out)
        return out

    @staticmethod
    def backward(ctx, g):
        (out,) = ctx.saved_tensors
        return g * (out * (1 - out))


class Relu(Function):
    _raw = True

    @staticmethod
    def forward(ctx, x):
        out = np.maximum(x, 0)
        ctx.save_for_backward(out)
        return out

    @staticmethod
    def backward(ctx, g):
        (out,) = ctx.saved_tensors
        return g * (out > 0)


class LeakyRelu(Function):
    _raw = True

    @staticmethod
    def forward(ctx, x, negative_slope):
        ctx.save_for_backward(x)
        ctx.slope = negative_slope
        return np.where(x > 0, x, x * negative_slope)

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return g * np.where(x > 0, 1, ctx.slope).astype(g.dtype, copy=False), None


class Elu(Function):
    _raw = True

    @staticmethod
    def forward(ctx, x, alpha):
        out = np.where(x > 0, x, alpha * np.expm1(np.minimum(x, 0)))
        ctx.save_for_backward(x, out)
        ctx.alpha = alpha
        return out

    @staticmethod
    def backward(ctx, g):
        x, out = ctx.saved_tensors
        return g * np.where(x > 0, 1, out + ctx.alpha).astype(g.dtype, copy=False), None


class Silu(Function):
    _raw = True

    @staticmethod
    def forward(ctx, x):
        s = sigmoid_array(x)
        ctx.save_for_backward(x, s)
        return x * s

    @staticmethod
    def backward(ctx, g):
        x, s = ctx.saved_tensors
        return g * (s * (1 + x * (1 - s)))


class Softplus(Function):
    _raw = True

    @staticmethod
    def forward(ctx, x, beta, threshold):
        z = x * beta
        linear = z > threshold
        out = np.where(linear, x, np.log1p(np.exp(np.minimum(z, threshold))) / beta)
        ctx.save_for_backward(z, linear)
        return out.astype(x.dtype, copy=False)

    @staticmethod
    def backward(ctx, g):
        z, linear = ctx.saved_tensors
        return g * np.where(linear, 1, sigmoid_array(z)).astype(g.dtype, copy=False), None, None


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


def _half_erfc_of_scaled(a):
    """``erfc(a / sqrt(2)) / 2`` for ``a >= 0`` in float32, i.e. the normal tail ``P(X > a)``.

    Numerical Recipes' fit gives ``erfc(z) = t exp(-z^2 + poly(t))``. The exponent
    ``-z^2 = -a^2/2`` is where float32 loses accuracy, so ``a`` is split as
    ``ah + (a - ah)`` with ``ah`` on a 1/16 grid: ``ah^2`` is exact and the rest is
    small, as libm's erfc does it; the two parts are exponentiated separately. Relative error below
    5e-7 up to ``a = 9``.
    """
    t = np.multiply(a, np.float32(0.5 * _INV_SQRT_2))
    t += np.float32(1.0)
    np.reciprocal(t, out=t)
    poly = np.full_like(a, _ERFC_COEFFICIENTS[0])
    for c in _ERFC_COEFFICIENTS[1:]:  # Horner's rule
        poly *= t
        poly += np.float32(c)
    ah = np.multiply(a, np.float32(16.0))
    np.floor(ah, out=ah)
    ah *= np.float32(1.0 / 16.0)
    rest = np.subtract(a, ah)
    rest *= a + ah  # (a - ah)(a + ah) = a^2 - ah^2, accurately
    rest *= np.float32(0.5)
    poly -= rest
    np.exp(poly, out=poly)
    ah *= ah  # exact: ah has at most 8 significant bits
    ah *= np.float32(-0.5)
    np.exp(ah, out=ah)  # exp(-ah^2/2) of an exact argument
    poly *= ah
    poly *= t
    poly *= np.float32(0.5)
    return poly


_erfc_exact = np.frompyfunc(math.erfc, 1, 1)


def normal_cdf(x):
    """Phi(x), the standard normal CDF, accurate in relative terms in both tails.

    float64 uses libm's erfc (exact); float32 and float16 a float32 fit whose
    error is below float32 precision in the body and about 2e-7 relative in the
    tails (NumPy has no vectorised erf).
    """
    if x.dtype == np.float64:
        z = np.abs(x) * _INV_SQRT_2
        tail = 0.5 * _erfc_exact(z).astype(np.float64)
        return np.where(x < 0, tail, 1.0 - tail)
    tail = _half_erfc_of_scaled(np.abs(x).astype(np.float32, copy=False))
    # Phi(x) is the tail for x < 0 and 1 - tail otherwise: tail + [x >= 0] (1 - 2 tail), cheaper than a select.
    flip = np.multiply(tail, np.float32(-2.0))
    flip += np.float32(1.0)
    flip *= x >= 0
    tail += flip
    return tail.astype(x.dtype, copy=False)


class Gelu(Function):
    _raw = True

    @staticmethod
    def forward(ctx, x, approximate):
        ctx.approximate = approximate
        if approximate == "tanh":
            inner = _SQRT_2_OVER_PI * (x + 0.044715 * x * x * x)
            t = np.tanh(inner)
            ctx.save_for_backward(x, t)
            return 0.5 * x * (1 + t)
        cdf = normal_cdf(x)
        ctx.save_for_backward(x, cdf)
        return x * cdf

    @staticmethod
    def backward(ctx, g):
        x, aux = ctx.saved_tensors
        if ctx.approximate == "tanh":
            t = aux
            d_inner = _SQRT_2_OVER_PI * (1 + 3 * 0.044715 * x * x)
            local = 0.5 * (1 + t) + 0.5 * x * (1 - t * t) * d_inner
        else:
            local = aux + x * (_INV_SQRT_2PI * np.exp(-0.5 * x * x))
        return g * local.astype(g.dtype, copy=False), None


class Clamp(Function):
    _raw = True

    @staticmethod
    def forward(ctx, x, low, high):
        out = x
        if low is not None:
            out = np.maximum(out, low)
        if high is not None:
            out = np.minimum(out, high)
        if out is x:
            out = x.copy()
        if ctx.needs_input_grad[0]:
            keep = np.ones(x.shape, dtype=bool)
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


class ZeroGrad(Function):
    """Piecewise-constant ops (floor, ceil, round, trunc, sign): the gradient is zero."""

    _raw = True

    @staticmethod
    def forward(ctx, x, fn):
        return fn(x)

    @staticmethod
    def backward(ctx, g):
        return np.zeros_like(g), None


class Reciprocal(Function):
    _raw = True

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
    sa, sb = _shape(a.data if isinstance(a, Tensor) else a), _shape(b.data if isinstance(b, Tensor) else b)
    try:
        np.broadcast_shapes(sa, sb)
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
            (type(b) is float and a.data.dtype.kind == "f") or (isinstance(b, Tensor) and a.data.dtype == b.data.dtype)
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
    return isinstance(x, bool) or (isinstance(x, Tensor) and x.data.dtype == np.bool_)


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
    if isinstance(a, Tensor) and a.data.dtype.kind in "biu" and not (isinstance(b, float)):
        a = float_like(a)
    if isinstance(b, Tensor) and b.data.dtype.kind in "biu" and not (isinstance(a, float)):
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
    cond = condition.data if isinstance(condition, Tensor) else np.asarray(condition)
    if cond.dtype != np.bool_:
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
    return x.data if isinstance(x, Tensor) else x


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
        return value.data.astype(input.data.dtype, copy=False)
    if not is_number(value):
        raise TypeError(f"clamp: {name} must be a number or a Tensor, got {type(value).__name__}")
    return python_scalar(value)


clip = clamp


def _zero_grad_op(fn):
    def op(input):
        if input.data.dtype.kind in "biu":
            return Tensor._make(fn(input.data), False, None)
        return ZeroGrad.apply(input, fn)

    return op


floor = _zero_grad_op(np.floor)
ceil = _zero_grad_op(np.ceil)
trunc = _zero_grad_op(np.trunc)
sign = _zero_grad_op(np.sign)


def round(input, decimals: int = 0):
    return _zero_grad_op(lambda a: np.round(a, decimals))(input)


# --------------------------------------------------------- comparisons, logic
def _compare(ufunc, op_name):
    def op(input, other):
        a, b = binary_operands(input, other, op_name)
        try:
            out = ufunc(_data(a), _data(b))
        except ValueError as exc:
            error = _broadcast_error(a, b, op_name)
            if error is None:
                raise
            raise error from exc
        return Tensor._make(np.asarray(out), False, None)

    return op


eq = _compare(np.equal, "eq")
ne = _compare(np.not_equal, "ne")
lt = _compare(np.less, "lt")
le = _compare(np.less_equal, "le")
gt = _compare(np.greater, "gt")
ge = _compare(np.greater_equal, "ge")
logical_and = _compare(np.logical_and, "logical_and")
logical_or = _compare(np.logical_or, "logical_or")
logical_xor = _compare(np.logical_xor, "logical_xor")


def logical_not(input):
    return Tensor._make(np.logical_not(input.data), False, None)


def isnan(input):
    return Tensor._make(np.isnan(input.data), False, None)


def isinf(input):
    return Tensor._make(np.isinf(input.data), False, None)


def isfinite(input):
    return Tensor._make(np.isfinite(input.data), False, None)


def allclose(input, other, rtol: float = 1e-5, atol: float = 1e-8, equal_nan: bool = False) -> bool:
    return bool(np.allclose(input.data, _data(other), rtol=rtol, atol=atol, equal_nan=equal_nan))


def equal(input, other) -> bool:
    """True when both tensors have the same shape and elements."""
    return input.data.shape == other.data.shape and bool(np.array_equal(input.data, other.data))
