"""ForgeML: a PyTorch-like deep-learning framework on NumPy, with reverse-mode autograd.

>>> import forgeml as fm
>>> x = fm.randn(3, 4, requires_grad=True)
>>> y = (x @ x.T).relu().sum()
>>> y.backward()
>>> x.grad.shape
(3, 4)
"""

from . import (
    amp,
    autograd,
    backends,
    cuda,
    data,
    nn,
    optim,
    profiler,
    utils,
)
from ._methods import narrow, select
from ._tensor_str import set_printoptions
from ._threads import get_num_threads, set_num_threads
from .amp import autocast
from .autograd import enable_grad, is_grad_enabled, no_grad, set_grad_enabled
from .autograd.inference_mode import inference_mode, is_inference_mode_enabled
from .backend import (
    Device,
    DType,
    Generator,
    cuda_is_available,
    default_generator,
    get_default_dtype,
    set_default_dtype,
)
from .backend import dtypes as _dtypes
from .backend.device import Device as device
from .backend.dtype_info import finfo, iinfo
from .backend.dtypes import promote_types
from .backend.random import get_rng_state, initial_seed, manual_seed, seed, set_rng_state
from .ops import double_backward as _double_backward  # registers the create_graph backwards
from .ops.conversion import clone
from .ops.creation import (
    arange,
    as_tensor,
    empty,
    empty_like,
    eye,
    from_numpy,
    full,
    full_like,
    linspace,
    ones,
    ones_like,
    rand,
    rand_like,
    randint,
    randint_like,
    randn,
    randn_like,
    randperm,
    tensor,
    zeros,
    zeros_like,
)
from .ops.distance import cosine_similarity
from .ops.einsum import einsum
from .ops.elementwise import (
    abs,
    add,
    allclose,
    ceil,
    clamp,
    clip,
    cos,
    div,
    elu,
    eq,
    equal,
    exp,
    floor,
    floor_divide,
    ge,
    gelu,
    gt,
    isfinite,
    isinf,
    isnan,
    le,
    leaky_relu,
    log,
    log1p,
    logical_and,
    logical_not,
    logical_or,
    logical_xor,
    lt,
    maximum,
    minimum,
    mul,
    ne,
    neg,
    pow,
    reciprocal,
    relu,
    remainder,
    round,
    rsqrt,
    sigmoid,
    sign,
    silu,
    sin,
    softplus,
    sqrt,
    square,
    sub,
    tanh,
    trunc,
    where,
)
from .ops.indexing import gather, index_select, masked_fill, nonzero, scatter_add
from .ops.inplace import relu_
from .ops.linalg import bmm, dot, matmul, mm, mv, outer
from .ops.logical import all, any
from .ops.nn import log_softmax, softmax
from .ops.pointwise import addcdiv, addcmul, lerp
from .ops.reduce import amax, amin, argmax, argmin, logsumexp, max, mean, min, norm, prod, std, sum, var
from .ops.reorder import fliplr, flipud, roll, t
from .ops.resample import pixel_shuffle, pixel_unshuffle
from .ops.sampling import multinomial
from .ops.scan import cumprod, cumsum
from .ops.shape import (
    broadcast_to,
    cat,
    chunk,
    concat,
    expand,
    flatten,
    flip,
    movedim,
    permute,
    repeat,
    reshape,
    split,
    squeeze,
    stack,
    tile,
    transpose,
    tril,
    triu,
    unbind,
    unflatten,
    unsqueeze,
)
from .ops.sorting import argsort, sort, topk
from .tensor import Tensor

multiply, subtract, divide, true_divide, negative = mul, sub, div, div, neg
swapaxes = transpose

float16 = half = _dtypes.float16
bfloat16 = _dtypes.bfloat16
float32 = float = _dtypes.float32
float64 = double = _dtypes.float64
uint8 = _dtypes.uint8
int8 = _dtypes.int8
int16 = short = _dtypes.int16
int32 = int = _dtypes.int32
int64 = long = _dtypes.int64
bool = _dtypes.bool_


def result_type(*operands):
    """The dtype PyTorch's promotion rules give an op on these tensors and numbers."""
    from .ops._util import operand_result_type

    return operand_result_type(*operands)


def is_tensor(obj) -> "builtins.bool":  # noqa: F821
    return isinstance(obj, Tensor)


def numel(input: Tensor) -> "builtins.int":  # noqa: F821
    return input.numel()


from .io import from_dlpack, load, save  # noqa: E402  (io builds on nn)

__version__ = "0.1.0"
