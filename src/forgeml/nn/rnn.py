"""Recurrent layers, as in ``torch.nn``: ``RNN``, ``LSTM``, ``GRU`` and their single-step cells.

Parameters carry PyTorch's names and layouts (``weight_ih_l0``,
``weight_hh_l1_reverse``, gates stacked in the order LSTM ``(i, f, g, o)``,
GRU ``(r, z, n)``), so a state_dict moves between the two frameworks as is.
Each layer and direction projects the whole input sequence through
``weight_ih`` with one matmul, then runs the recurrence as one op
(:func:`forgeml.ops.rnn.recurrent_scan`).
"""

from __future__ import annotations

import math
import numbers
import warnings

from ..ops.creation import empty, zeros
from ..ops.indexing import index_select
from ..ops.nn import dropout as _dropout
from ..ops.nn import linear
from ..ops.rnn import GATES, recurrent_scan
from ..ops.shape import cat, stack, unbind
from ..tensor import Tensor
from . import init
from .module import Module
from .parameter import Parameter
from .utils.rnn import PackedSequence, _host_ints, packed_to_padded, padded_to_packed

__all__ = ["GRU", "GRUCell", "LSTM", "LSTMCell", "RNN", "RNNBase", "RNNCell", "RNNCellBase"]

_MODE_NAMES = {"RNN_TANH": "RNN", "RNN_RELU": "RNN", "LSTM": "LSTM", "GRU": "GRU"}


class RNNBase(Module):
    """What ``RNN``, ``LSTM`` and ``GRU`` share: parameters, checks, layers, directions, packed input."""

    def __init__(
        self,
        mode: str,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        bias: bool = True,
        batch_first: bool = False,
        dropout: float = 0.0,
        bidirectional: bool = False,
        proj_size: int = 0,
        device=None,
        dtype=None,
    ) -> None:
        super().__init__()
        if mode not in GATES:
            raise ValueError(f"Unrecognized RNN mode: {mode!r}; expected one of {sorted(GATES)}")
        if not isinstance(dropout, numbers.Number) or isinstance(dropout, bool) or not 0 <= dropout <= 1:
            raise ValueError(
                "dropout should be a number in range [0, 1] representing the probability of an element being zeroed"
            )
        if dropout > 0 and num_layers == 1:
            warnings.warn(
                "dropout option adds dropout after all but last recurrent layer, so non-zero dropout expects "
                f"num_layers greater than 1, but got dropout={dropout} and num_layers={num_layers}",
                stacklevel=2,
            )
        for name, value in (("input_size", input_size), ("hidden_size", hidden_size), ("num_layers", num_layers)):
            if not isinstance(value, int) or isinstance(value, bool):
                raise TypeError(f"{name} should be of type int, got: {type(value).__name__}")
            if value <= 0:
                raise ValueError(f"{name} must be greater than zero, got {value}")
        if proj_size:
            raise NotImplementedError(
                f"{_MODE_NAMES[mode]}: proj_size={proj_size} (LSTM with projections) is not supported by ForgeML; "
                "use proj_size=0"
            )
        self.mode = mode
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.bias = bias
        self.batch_first = batch_first
        self.dropout = float(dropout)
        self.bidirectional = bidirectional
        self.proj_size = proj_size
        num_directions = 2 if bidirectional else 1
        gate_size = GATES[mode] * hidden_size
        self._flat_weights_names = []
        self._all_weights = []
        for layer in range(num_layers):
            layer_input = input_size if layer == 0 else hidden_size * num_directions
            for direction in range(num_directions):
                suffix = f"_l{layer}" + ("_reverse" if direction == 1 else "")
                shapes = {
                    f"weight_ih{suffix}": (gate_size, layer_input),
                    f"weight_hh{suffix}": (gate_size, hidden_size),
                }
                if bias:
                    shapes[f"bias_ih{suffix}"] = (gate_size,)
                    shapes[f"bias_hh{suffix}"] = (gate_size,)
                for name, shape in shapes.items():
                    setattr(self, name, Parameter(empty(*shape, dtype=dtype, device=device)))
                self._flat_weights_names.extend(shapes)
                self._all_weights.append(list(shapes))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Every weight and bias from U(-1/sqrt(hidden_size), 1/sqrt(hidden_size)), as in PyTorch."""
        stdv = 1.0 / math.sqrt(self.hidden_size) if self.hidden_size > 0 else 0.0
        for weight in self.parameters():
            init.uniform_(weight, -stdv, stdv)

    @property
    def _flat_weights(self) -> list:
        return [getattr(self, name) for name in self._flat_weights_names]

    @property
    def all_weights(self) -> list:
        """The parameters per layer and direction: ``[[weight_ih, weight_hh, bias_ih, bias_hh], ...]``."""
        return [[getattr(self, name) for name in names] for names in self._all_weights]

    def flatten_parameters(self) -> None:
        """A no-op kept for PyTorch compatibility (cuDNN's contiguous weight buffer has no ForgeML counterpart)."""

    # -- forward ---------------------------------------------------------------
    def forward(self, input, hx=None):
        name = _MODE_NAMES[self.mode]
        is_lstm = self.mode == "LSTM"
        num_directions = 2 if self.bidirectional else 1
        packed = isinstance(input, PackedSequence)
        batch_sizes = None
        if packed:
            sizes = _host_ints(input.batch_sizes)
            batch_sizes = tuple(int(b) for b in sizes)
            x = packed_to_padded(input.data, sizes, len(sizes))
            sorted_indices, unsorted_indices = input.sorted_indices, input.unsorted_indices
            batched = True
        else:
            if not isinstance(input, Tensor):
                raise TypeError(f"{name}: expected a Tensor or a PackedSequence as input, got {type(input).__name__}")
            if input.ndim not in (2, 3):
                raise ValueError(f"{name}: Expected input to be 2D or 3D, got {input.ndim}D instead")
            batched = input.ndim == 3
            x = input if batched else input.unsqueeze(1)
            if self.batch_first and batched:
                x = x.transpose(0, 1)
            sorted_indices = unsorted_indices = None
        if x.shape[-1] != self.input_size:
            raise RuntimeError(
                f"input.size(-1) must be equal to input_size. Expected {self.input_size}, got {x.shape[-1]}"
            )
        batch = x.shape[1]
        expected = (self.num_layers * num_directions, batch, self.hidden_size)
        if hx is None:
            h0 = zeros(*expected, dtype=x.dtype, device=x.device)
            c0 = h0 if is_lstm else None
        else:
            if is_lstm:
                if not isinstance(hx, (tuple, list)) or len(hx) != 2:
                    raise RuntimeError("LSTM: hx must be a tuple (h_0, c_0) of two tensors")
                h0, c0 = hx
            elif isinstance(hx, (tuple, list)):
                raise RuntimeError(f"{name}: hx must be a Tensor, not a {type(hx).__name__}")
            else:
                h0, c0 = hx, None
            h0 = self._prepare_hidden(h0, batched, expected, sorted_indices, name, x.dtype)
            if is_lstm:
                c0 = self._prepare_hidden(c0, batched, expected, sorted_indices, name, x.dtype)
        outputs, h_n, c_n = self._run_layers(x, h0, c0, batch_sizes)
        h_n = stack(h_n)
        c_n = stack(c_n) if is_lstm else None
        if packed:
            output = PackedSequence(
                padded_to_packed(outputs, sizes), input.batch_sizes, sorted_indices, unsorted_indices
            )
            if unsorted_indices is not None:
                h_n = index_select(h_n, 1, unsorted_indices)
                c_n = index_select(c_n, 1, unsorted_indices) if is_lstm else None
        else:
            output = outputs
            if not batched:
                output, h_n = output.squeeze(1), h_n.squeeze(1)
                c_n = c_n.squeeze(1) if is_lstm else None
            elif self.batch_first:
                output = output.transpose(0, 1)
        return output, ((h_n, c_n) if is_lstm else h_n)

    def _prepare_hidden(self, h, batched, expected, sorted_indices, name, dtype):
        """``h`` checked against ``expected`` (after giving unbatched state its batch dim) and put in sorted order."""
        if not isinstance(h, Tensor):
            raise TypeError(f"{name}: hidden state must be a Tensor, got {type(h).__name__}")
        if batched and h.ndim != 3:
            raise RuntimeError(f"For batched 3-D input, hx should also be 3-D but got {h.ndim}-D tensor")
        if not batched:
            if h.ndim != 2:
                raise RuntimeError(f"For unbatched 2-D input, hx should also be 2-D but got {h.ndim}-D tensor")
            h = h.unsqueeze(1)
        if sorted_indices is not None:
            h = index_select(h, 1, sorted_indices)
        if tuple(h.shape) != expected:
            raise RuntimeError(f"Expected hidden size {expected}, got {list(h.shape)}")
        if h.dtype != dtype:
            raise RuntimeError(
                f"{name}: input dtype {dtype} and hidden state dtype {h.dtype} differ; convert one with .to()"
            )
        return h

    def _run_layers(self, x, h0, c0, batch_sizes):
        """All layers and directions over time-major ``x``; returns the last layer's output and the final states."""
        num_directions = 2 if self.bidirectional else 1
        h_init = unbind(h0, 0)
        c_init = unbind(c0, 0) if c0 is not None else None
        h_n, c_n = [], []
        for layer in range(self.num_layers):
            if layer > 0 and self.dropout > 0 and self.training:
                x = _dropout(x, self.dropout, True)
            outs = []
            for direction in range(num_directions):
                k = layer * num_directions + direction
                w_ih, w_hh, b_ih, b_hh = self._layer_weights(k)
                gi = linear(x, w_ih, b_ih)
                result = recurrent_scan(
                    gi,
                    h_init[k],
                    None if c_init is None else c_init[k],
                    w_hh,
                    b_hh,
                    self.mode,
                    batch_sizes,
                    reverse=direction == 1,
                )
                outs.append(result[0])
                h_n.append(result[1])
                if len(result) == 3:
                    c_n.append(result[2])
            x = outs[0] if num_directions == 1 else cat(outs, dim=2)
        return x, h_n, c_n

    def _layer_weights(self, k):
        names = self._all_weights[k]
        weights = [getattr(self, n) for n in names]
        return weights if self.bias else weights + [None, None]

    def extra_repr(self) -> str:
        s = f"{self.input_size}, {self.hidden_size}"
        if self.num_layers != 1:
            s += f", num_layers={self.num_layers}"
        if self.bias is not True:
            s += f", bias={self.bias}"
        if self.batch_first is not False:
            s += f", batch_first={self.batch_first}"
        if self.dropout != 0:
            s += f", dropout={self.dropout}"
        if self.bidirectional is not False:
            s += f", bidirectional={self.bidirectional}"
        return s


class RNN(RNNBase):
    """Elman RNN: ``h_t = nonlinearity(x_t W_ih^T + b_ih + h_{t-1} W_hh^T + b_hh)``, ``nonlinearity`` in
    ``'tanh'`` (default) or ``'relu'``.

    ``forward(input, hx=None)`` returns ``(output, h_n)``: ``output`` ``[T, B, D*H]``
    (``[B, T, D*H]`` with ``batch_first``; ``[T, D*H]`` for unbatched input,
    or a ``PackedSequence`` for a packed one), ``h_n`` ``[num_layers*D, B, H]``.
    """

    def __init__(self, *args, nonlinearity: str = "tanh", **kwargs) -> None:
        if len(args) > 3:  # PyTorch's positional order: input_size, hidden_size, num_layers, nonlinearity, bias, ...
            nonlinearity, args = args[3], args[:3] + args[4:]
        if nonlinearity not in ("tanh", "relu"):
            raise ValueError(f"Unknown nonlinearity '{nonlinearity}'. Select from 'tanh' or 'relu'.")
        super().__init__("RNN_TANH" if nonlinearity == "tanh" else "RNN_RELU", *args, **kwargs)
        self.nonlinearity = nonlinearity


class LSTM(RNNBase):
    """Long short-term memory, gates ``(i, f, g, o)`` as in PyTorch:
    ``c_t = f * c_{t-1} + i * g``, ``h_t = o * tanh(c_t)``.

    ``forward(input, hx=None)`` with ``hx = (h_0, c_0)`` returns
    ``(output, (h_n, c_n))``, shapes as for :class:`RNN`. ``proj_size`` is not
    supported (it raises NotImplementedError).
    """

    def __init__(self, *args, **kwargs) -> None:
        super().__init__("LSTM", *args, **kwargs)


class GRU(RNNBase):
    """Gated recurrent unit, gates ``(r, z, n)`` as in PyTorch:
    ``n = tanh(W_in x + b_in + r * (W_hn h + b_hn))``, ``h_t = (1 - z) * n + z * h_{t-1}``.

    ``forward(input, hx=None)`` returns ``(output, h_n)``, shapes as for :class:`RNN`.
    """

    def __init__(self, *args, **kwargs) -> None:
        super().__init__("GRU", *args, **kwargs)


# ------------------------------------------------------------------- cells
class RNNCellBase(Module):
    """What the cells share: ``weight_ih`` ``[chunks*H, input_size]``, ``weight_hh`` ``[chunks*H, H]``, the biases."""

    def __init__(self, input_size: int, hidden_size: int, bias: bool, num_chunks: int, device=None, dtype=None):
        super().__init__()
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.bias = bias
        self.weight_ih = Parameter(empty(num_chunks * hidden_size, input_size, dtype=dtype, device=device))
        self.weight_hh = Parameter(empty(num_chunks * hidden_size, hidden_size, dtype=dtype, device=device))
        if bias:
            self.bias_ih = Parameter(empty(num_chunks * hidden_size, dtype=dtype, device=device))
            self.bias_hh = Parameter(empty(num_chunks * hidden_size, dtype=dtype, device=device))
        else:
            self.register_parameter("bias_ih", None)
            self.register_parameter("bias_hh", None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Every weight and bias from U(-1/sqrt(hidden_size), 1/sqrt(hidden_size)), as in PyTorch."""
        stdv = 1.0 / math.sqrt(self.hidden_size) if self.hidden_size > 0 else 0.0
        for weight in self.parameters():
            init.uniform_(weight, -stdv, stdv)

    def _step(self, mode, input, hx, n_states):
        """One step of ``mode``; returns the new states (one, or ``(h, c)``), unbatched if ``input`` was."""
        name = type(self).__name__
        if not isinstance(input, Tensor) or input.ndim not in (1, 2):
            got = f"{input.ndim}D" if isinstance(input, Tensor) else type(input).__name__
            raise ValueError(f"{name}: Expected input to be 1D or 2D, got {got} instead")
        if input.shape[-1] != self.input_size:
            raise RuntimeError(f"input has inconsistent input_size: got {input.shape[-1]} expected {self.input_size}")
        batched = input.ndim == 2
        x = input if batched else input.unsqueeze(0)
        expected = (x.shape[0], self.hidden_size)
        if hx is None:
            states = [zeros(*expected, dtype=x.dtype, device=x.device)] * n_states
        else:
            states = list(hx) if n_states == 2 else [hx]
            if len(states) != n_states:
                raise RuntimeError(f"{name}: hx must be a tuple (h_0, c_0) of two tensors")
            for i, h in enumerate(states):
                if h.ndim != x.ndim + (0 if batched else -1) or tuple(h.shape[-1:]) != (self.hidden_size,):
                    raise RuntimeError(
                        f"{name}: hidden state must be [batch, {self.hidden_size}] (or [{self.hidden_size}] for "
                        f"unbatched input), got {list(h.shape)}"
                    )
                if h.dtype != x.dtype:
                    raise RuntimeError(f"{name}: input dtype {x.dtype} and hidden state dtype {h.dtype} differ")
                states[i] = h if batched else h.unsqueeze(0)
                if tuple(states[i].shape) != expected:
                    raise RuntimeError(f"Input batch size {expected[0]} doesn't match hidden batch size {h.shape[0]}")
        gi = linear(x, self.weight_ih, self.bias_ih).unsqueeze(0)
        result = recurrent_scan(gi, states[0], states[1] if n_states == 2 else None, self.weight_hh, self.bias_hh, mode)
        new = result[1:]
        if not batched:
            new = tuple(s.squeeze(0) for s in new)
        return new if n_states == 2 else new[0]

    def extra_repr(self) -> str:
        s = f"{self.input_size}, {self.hidden_size}"
        if self.bias is not True:
            s += f", bias={self.bias}"
        nonlinearity = getattr(self, "nonlinearity", "tanh")
        return s if nonlinearity == "tanh" else s + f", nonlinearity={nonlinearity}"


class RNNCell(RNNCellBase):
    """One Elman RNN step: ``h' = nonlinearity(x W_ih^T + b_ih + h W_hh^T + b_hh)``; ``forward(input, hx=None)``."""

    def __init__(
        self, input_size: int, hidden_size: int, bias: bool = True, nonlinearity: str = "tanh", device=None, dtype=None
    ):
        if nonlinearity not in ("tanh", "relu"):
            raise ValueError(f"Unknown nonlinearity: {nonlinearity}. Select from 'tanh' or 'relu'.")
        super().__init__(input_size, hidden_size, bias, 1, device, dtype)
        self.nonlinearity = nonlinearity

    def forward(self, input, hx=None):
        return self._step("RNN_TANH" if self.nonlinearity == "tanh" else "RNN_RELU", input, hx, 1)


class LSTMCell(RNNCellBase):
    """One LSTM step, gates ``(i, f, g, o)``; ``forward(input, hx=None)`` with ``hx = (h, c)`` returns ``(h', c')``."""

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True, device=None, dtype=None):
        super().__init__(input_size, hidden_size, bias, 4, device, dtype)

    def forward(self, input, hx=None):
        return self._step("LSTM", input, hx, 2)


class GRUCell(RNNCellBase):
    """One GRU step, gates ``(r, z, n)``; ``forward(input, hx=None)`` returns ``h'``."""

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True, device=None, dtype=None):
        super().__init__(input_size, hidden_size, bias, 3, device, dtype)

    def forward(self, input, hx=None):
        return self._step("GRU", input, hx, 1)
