"""Variable-length sequences for the recurrent layers, as in ``torch.nn.utils.rnn``.

A :class:`PackedSequence` holds a batch of sequences of different lengths
without padding: ``data`` stacks, time step by time step, the elements of the
sequences still running at that step (longest sequence first), and
``batch_sizes[t]`` says how many there are. ``sorted_indices`` maps that
longest-first order back to the caller's batch order (``None`` when the batch
was already sorted).

Every conversion here is one gather (``index_select``) over the flattened
steps, so gradients flow through packing and unpacking.
"""

from __future__ import annotations

import math
from typing import NamedTuple

from ...backend.device import HOST_XP
from ...ops.creation import full, tensor
from ...ops.indexing import index_select
from ...ops.shape import cat
from ...tensor import Tensor

__all__ = [
    "PackedSequence",
    "invert_permutation",
    "pack_padded_sequence",
    "pack_sequence",
    "pad_packed_sequence",
    "pad_sequence",
    "unpack_sequence",
    "unpad_sequence",
]

host = HOST_XP  # lengths and batch sizes are host-side bookkeeping (PyTorch keeps batch_sizes on the CPU too)


class _PackedSequenceFields(NamedTuple):
    data: Tensor
    batch_sizes: Tensor
    sorted_indices: Tensor | None
    unsorted_indices: Tensor | None


def invert_permutation(permutation):
    """The permutation that undoes ``permutation`` (a 1-D int64 tensor), or None for None."""
    if permutation is None:
        return None
    perm = _host_ints(permutation)
    inverse = host.empty_like(perm)
    inverse[perm] = host.arange(len(perm))
    return tensor(inverse, device=permutation.device if isinstance(permutation, Tensor) else None)


class PackedSequence(_PackedSequenceFields):
    """A batch of variable-length sequences packed without padding (see the module docstring).

    Build one with :func:`pack_padded_sequence` or :func:`pack_sequence`
    rather than by hand. ``batch_sizes`` always lives on the CPU; ``to``,
    ``cuda`` and ``cpu`` move the data and the index tensors.
    """

    def __new__(cls, data, batch_sizes=None, sorted_indices=None, unsorted_indices=None):
        if batch_sizes is None:
            raise TypeError("PackedSequence needs batch_sizes (build one with pack_padded_sequence or pack_sequence)")
        if not isinstance(batch_sizes, Tensor):
            batch_sizes = tensor(host.asarray(batch_sizes, dtype=host.int64))
        if unsorted_indices is None:
            unsorted_indices = invert_permutation(sorted_indices)
        return super().__new__(cls, data, batch_sizes, sorted_indices, unsorted_indices)

    def _replace_data(self, data, move_indices=None):
        sorted_i, unsorted_i = self.sorted_indices, self.unsorted_indices
        if move_indices is not None and sorted_i is not None:
            sorted_i, unsorted_i = move_indices(sorted_i), move_indices(unsorted_i)
        return type(self)(data, self.batch_sizes, sorted_i, unsorted_i)

    def to(self, *args, **kwargs) -> PackedSequence:
        """``data.to(*args, **kwargs)``; the index tensors follow the data to its device."""
        data = self.data.to(*args, **kwargs)
        if data is self.data:
            return self
        return self._replace_data(data, lambda t: t.to(data.device))

    def cuda(self, *args, **kwargs) -> PackedSequence:
        data = self.data.cuda(*args, **kwargs)
        return self._replace_data(data, lambda t: t.to(data.device))

    def cpu(self) -> PackedSequence:
        return self._replace_data(self.data.cpu(), lambda t: t.cpu())

    def double(self) -> PackedSequence:
        return self._replace_data(self.data.double())

    def float(self) -> PackedSequence:
        return self._replace_data(self.data.float())

    def half(self) -> PackedSequence:
        return self._replace_data(self.data.half())

    @property
    def is_cuda(self) -> bool:
        return self.data.is_cuda


def _host_ints(values):
    """A 1-D int64 NumPy copy of ``values`` (a list, an array or a tensor on any device)."""
    if isinstance(values, Tensor):
        values = values.detach().cpu().numpy()
    arr = host.asarray(values)
    if arr.ndim != 1 or (arr.size and arr.dtype.kind not in "iu"):
        raise RuntimeError(f"expected a 1-D sequence of integers, got shape {list(arr.shape)} dtype {arr.dtype}")
    return arr.astype(host.int64)


def _packed_rows(batch_sizes, n_steps: int):
    """For each element of the packed data, its row in the padded ``[n_steps * B]`` flattening."""
    batch = int(batch_sizes[0])
    return host.concatenate([t * batch + host.arange(bs) for t, bs in enumerate(batch_sizes)])


def _gather_rows(source, rows, fill_row: int, padding_value):
    """Rows of ``source`` (flattened to 2-D) picked by ``rows``, where ``fill_row`` means ``padding_value``."""
    flat = source.reshape(source.shape[0], -1)
    if (rows == fill_row).any():
        pad = full((1, flat.shape[1]), padding_value, dtype=source.dtype, device=source.device)
        flat = cat([flat, pad])
    return index_select(flat, 0, rows)


def packed_to_padded(data, batch_sizes, n_steps: int, padding_value=0.0):
    """``[n_steps, B, *]`` padded, sorted-order sequences from packed ``data`` (a gather)."""
    batch = int(batch_sizes[0])
    rows = host.full(n_steps * batch, data.shape[0], dtype=host.int64)
    rows[_packed_rows(batch_sizes, n_steps)] = host.arange(data.shape[0])
    return _gather_rows(data, rows, data.shape[0], padding_value).reshape((n_steps, batch) + tuple(data.shape[1:]))


def padded_to_packed(padded, batch_sizes):
    """Packed data from ``[T, B, *]`` padded, sorted-order sequences (``T >= len(batch_sizes)``)."""
    n_steps = len(batch_sizes)
    rest = tuple(padded.shape[2:])
    flat = padded[:n_steps].reshape((n_steps * padded.shape[1],) + rest)
    return index_select(flat, 0, _packed_rows(batch_sizes, n_steps))


def pack_padded_sequence(input, lengths, batch_first: bool = False, enforce_sorted: bool = True) -> PackedSequence:
    """Pack a padded batch ``[T, B, *]`` (``[B, T, *]`` with ``batch_first``) of sequences of ``lengths``.

    With ``enforce_sorted=True`` the lengths must be non-increasing; with
    ``False`` the batch is sorted here and the order kept in
    ``sorted_indices``.
    """
    lengths = _host_ints(lengths)
    batch_dim = 0 if batch_first else 1
    if input.ndim < 2:
        raise ValueError(f"pack_padded_sequence: expected an input of at least 2 dims, got {input.ndim}")
    if len(lengths) != input.shape[batch_dim]:
        raise RuntimeError(
            f"Expected `len(lengths)` to be equal to batch_size, but got {len(lengths)} (batch_size={input.shape[batch_dim]})"
        )
    if len(lengths) == 0 or lengths.min() <= 0:
        raise RuntimeError(
            "Length of all samples has to be greater than 0, but found an element in 'lengths' that is <= 0"
        )
    n_steps = input.shape[1 - batch_dim]
    if lengths.max() > n_steps:
        raise RuntimeError(f"pack_padded_sequence: a length of {lengths.max()} exceeds the {n_steps} padded steps")
    sorted_indices = None
    if enforce_sorted:
        if host.any(host.diff(lengths) > 0):
            raise RuntimeError(
                "`lengths` array must be sorted in decreasing order when `enforce_sorted` is True. You can pass "
                "`enforce_sorted=False` to pack_padded_sequence and/or pack_sequence to sidestep this requirement "
                "if you do not need ONNX exportability."
            )
    else:
        order = host.argsort(-lengths, kind="stable")
        lengths = lengths[order]
        sorted_indices = tensor(order, device=input.device)
        input = index_select(input, batch_dim, order)
    if batch_first:
        input = input.transpose(0, 1)
    batch_sizes = (lengths[None, :] > host.arange(lengths[0])[:, None]).sum(axis=1)
    data = padded_to_packed(input, batch_sizes)
    return PackedSequence(data, tensor(batch_sizes), sorted_indices, None)


def pad_packed_sequence(
    sequence: PackedSequence, batch_first: bool = False, padding_value: float = 0.0, total_length: int | None = None
):
    """Undo :func:`pack_padded_sequence`: returns ``(padded, lengths)`` in the original batch order.

    ``padded`` has ``max(lengths)`` steps, or ``total_length`` when given;
    ``lengths`` is an int64 CPU tensor.
    """
    batch_sizes = _host_ints(sequence.batch_sizes)
    n_steps = len(batch_sizes)
    if total_length is not None:
        if total_length < n_steps:
            raise ValueError(
                "Expected total_length to be at least the length of the longest sequence in input, but got "
                f"total_length={total_length} and max sequence length being {n_steps}"
            )
        n_steps = total_length
    padded = packed_to_padded(sequence.data, batch_sizes, n_steps, padding_value)
    lengths = (batch_sizes[None, :] > host.arange(batch_sizes[0])[:, None]).sum(axis=1)
    if sequence.unsorted_indices is not None:
        unsorted = _host_ints(sequence.unsorted_indices)
        padded = index_select(padded, 1, unsorted)
        lengths = lengths[unsorted]
    if batch_first:
        padded = padded.transpose(0, 1)
    return padded, tensor(lengths)


def pad_sequence(sequences, batch_first: bool = False, padding_value: float = 0.0, padding_side: str = "right"):
    """Stack tensors ``[L_i, *]`` into ``[max L, B, *]`` (``[B, max L, *]`` with ``batch_first``), padding
    each with ``padding_value`` on ``padding_side`` (``"right"`` or ``"left"``)."""
    if padding_side not in ("right", "left"):
        raise ValueError(f"Expected padding_side to be one of left or right, but got {padding_side}.")
    if isinstance(sequences, Tensor):
        sequences = list(sequences.unbind(0))
    sequences = list(sequences)
    if not sequences:
        raise RuntimeError("pad_sequence: received an empty list of sequences")
    rest = tuple(sequences[0].shape[1:])
    for i, s in enumerate(sequences):
        if s.ndim == 0 or tuple(s.shape[1:]) != rest:
            raise RuntimeError(
                f"pad_sequence: every sequence must have the trailing shape {list(rest)}, got {list(s.shape)} "
                f"at position {i}"
            )
    lengths = host.array([s.shape[0] for s in sequences], dtype=host.int64)
    longest = int(lengths.max())
    starts = host.concatenate([[0], host.cumsum(lengths)[:-1]])
    steps = host.arange(longest)[None, :]  # [1, T]
    first = host.zeros_like(lengths) if padding_side == "right" else longest - lengths
    offset = steps - first[:, None]  # each [b, t]: the step of sequence b shown there
    total = int(lengths.sum())
    rows = host.where((offset >= 0) & (offset < lengths[:, None]), starts[:, None] + offset, total)  # [B, T]
    if not batch_first:
        rows = rows.T
    width = math.prod(rest)
    stacked = cat([s.reshape(s.shape[0], width) for s in sequences])
    return _gather_rows(stacked, rows.reshape(-1), total, padding_value).reshape(rows.shape + rest)


def unpad_sequence(padded_sequences, lengths, batch_first: bool = False) -> list:
    """The inverse of :func:`pad_sequence` (right padding): a list of tensors ``[L_i, *]``."""
    lengths = _host_ints(lengths)
    if not batch_first:
        padded_sequences = padded_sequences.transpose(0, 1)
    return [padded_sequences[b, : int(n)] for b, n in enumerate(lengths)]


def pack_sequence(sequences, enforce_sorted: bool = True) -> PackedSequence:
    """Pack a list of tensors ``[L_i, *]`` (longest first unless ``enforce_sorted=False``)."""
    lengths = [s.shape[0] for s in sequences]
    return pack_padded_sequence(pad_sequence(sequences), lengths, enforce_sorted=enforce_sorted)


def unpack_sequence(packed_sequences: PackedSequence) -> list:
    """The inverse of :func:`pack_sequence`: a list of tensors ``[L_i, *]`` in the original order."""
    padded, lengths = pad_packed_sequence(packed_sequences, batch_first=True)
    return unpad_sequence(padded, lengths, batch_first=True)
