"""nn.utils.rnn: packing and padding variable-length sequences, against torch.nn.utils.rnn (values and gradients)."""

import numpy as np
import pytest

import forgeml as fm
from forgeml.autograd import gradcheck
from forgeml.nn.utils import rnn

torch = pytest.importorskip("torch")
trnn = torch.nn.utils.rnn


def _np(t):
    return None if t is None else t.detach().numpy()


def _same_packed(ours, theirs):
    np.testing.assert_array_equal(_np(ours.data), _np(theirs.data))
    for field in ("batch_sizes", "sorted_indices", "unsorted_indices"):
        o, t = getattr(ours, field), getattr(theirs, field)
        assert (o is None) == (t is None), field
        if t is not None:
            assert o.dtype == fm.int64, field
            np.testing.assert_array_equal(_np(o), _np(t), err_msg=field)


@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize(("lengths", "enforce_sorted"), [([5, 3, 3, 1], True), ([2, 5, 1, 4], False)])
def test_pack_and_pad_round_trip_match_torch(lengths, enforce_sorted, batch_first):
    x = np.random.default_rng(0).standard_normal((4, 5, 3) if batch_first else (5, 4, 3)).astype(np.float32)
    fx, tx = fm.tensor(x, requires_grad=True), torch.tensor(x, requires_grad=True)
    ours = rnn.pack_padded_sequence(fx, lengths, batch_first=batch_first, enforce_sorted=enforce_sorted)
    theirs = trnn.pack_padded_sequence(tx, lengths, batch_first=batch_first, enforce_sorted=enforce_sorted)
    assert isinstance(ours, tuple) and ours._fields == theirs._fields
    _same_packed(ours, theirs)
    f_pad, f_len = rnn.pad_packed_sequence(ours, batch_first=batch_first, padding_value=-1.5, total_length=7)
    t_pad, t_len = trnn.pad_packed_sequence(theirs, batch_first=batch_first, padding_value=-1.5, total_length=7)
    np.testing.assert_array_equal(_np(f_pad), _np(t_pad))
    np.testing.assert_array_equal(_np(f_len), _np(t_len))
    assert f_len.dtype == fm.int64
    g = np.random.default_rng(1).standard_normal(tuple(t_pad.shape)).astype(np.float32)
    (f_pad * fm.tensor(g)).sum().backward()
    (t_pad * torch.tensor(g)).sum().backward()
    np.testing.assert_allclose(_np(fx.grad), _np(tx.grad), rtol=1e-6)


@pytest.mark.parametrize("padding_side", ["right", "left"])
@pytest.mark.parametrize("batch_first", [False, True])
def test_pad_sequence_matches_torch(batch_first, padding_side):
    rng = np.random.default_rng(2)
    arrays = [rng.standard_normal((n, 2, 3)).astype(np.float32) for n in (3, 1, 4)]
    fs = [fm.tensor(a, requires_grad=True) for a in arrays]
    ts = [torch.tensor(a, requires_grad=True) for a in arrays]
    fo = rnn.pad_sequence(fs, batch_first=batch_first, padding_value=7.0, padding_side=padding_side)
    to = trnn.pad_sequence(ts, batch_first=batch_first, padding_value=7.0, padding_side=padding_side)
    np.testing.assert_array_equal(_np(fo), _np(to))
    g = rng.standard_normal(tuple(to.shape)).astype(np.float32)
    (fo * fm.tensor(g)).sum().backward()
    (to * torch.tensor(g)).sum().backward()
    for f, t in zip(fs, ts):
        np.testing.assert_allclose(_np(f.grad), _np(t.grad))


def test_pad_sequence_of_1d_tensors_and_pack_sequence():
    arrays = [np.arange(n, dtype=np.float32) + 10 * n for n in (2, 4, 3)]
    fo = rnn.pad_sequence([fm.tensor(a) for a in arrays])
    to = trnn.pad_sequence([torch.tensor(a) for a in arrays])
    np.testing.assert_array_equal(_np(fo), _np(to))
    ours = rnn.pack_sequence([fm.tensor(a) for a in arrays], enforce_sorted=False)
    theirs = trnn.pack_sequence([torch.tensor(a) for a in arrays], enforce_sorted=False)
    _same_packed(ours, theirs)
    unpacked = rnn.unpack_sequence(ours)
    assert [u.tolist() for u in unpacked] == [a.tolist() for a in arrays]
    padded = rnn.pad_sequence([fm.tensor(a) for a in arrays], batch_first=True)
    assert [u.tolist() for u in rnn.unpad_sequence(padded, fm.tensor([2, 4, 3]), batch_first=True)] == [
        a.tolist() for a in arrays
    ]


def test_pack_gradcheck_float64():
    x = fm.randn(4, 3, 2, dtype=fm.float64, requires_grad=True)

    def round_trip(x):
        packed = rnn.pack_padded_sequence(x, [3, 4, 2], enforce_sorted=False)
        return packed.data, rnn.pad_packed_sequence(packed, padding_value=0.5)[0]

    assert gradcheck(round_trip, (x,))


def test_packed_sequence_members():
    packed = rnn.pack_sequence([fm.randn(3, 2), fm.randn(2, 2)])
    assert packed.sorted_indices is None and packed.unsorted_indices is None
    moved = packed.double()
    assert moved.data.dtype == fm.float64 and moved.batch_sizes is packed.batch_sizes
    assert packed.to(fm.float32) is packed
    assert not packed.is_cuda
    built = rnn.PackedSequence(packed.data, packed.batch_sizes, fm.tensor([1, 0]))
    assert built.unsorted_indices.tolist() == [1, 0]
    _data, batch_sizes, *_ = built  # a named tuple, as in PyTorch
    assert batch_sizes.tolist() == [2, 2, 1]


def test_errors_name_the_problem():
    x = fm.randn(4, 2, 3)
    with pytest.raises(RuntimeError, match="sorted in decreasing order"):
        rnn.pack_padded_sequence(x, [2, 4])
    with pytest.raises(RuntimeError, match="greater than 0"):
        rnn.pack_padded_sequence(x, [2, 0], enforce_sorted=False)
    with pytest.raises(RuntimeError, match="batch_size"):
        rnn.pack_padded_sequence(x, [2, 1, 1])
    packed = rnn.pack_padded_sequence(x, [4, 2])
    with pytest.raises(ValueError, match="total_length=3"):
        rnn.pad_packed_sequence(packed, total_length=3)
    with pytest.raises(RuntimeError, match="trailing shape"):
        rnn.pad_sequence([fm.randn(2, 3), fm.randn(2, 4)])
