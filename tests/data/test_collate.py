"""default_collate / default_convert against torch.utils.data's on the same nested samples."""

import collections

import numpy as np
import pytest

import forgeml as fm
from forgeml.data import default_collate, default_convert

torch = pytest.importorskip("torch")
from torch.utils.data import default_collate as torch_collate  # noqa: E402
from torch.utils.data import default_convert as torch_convert  # noqa: E402

Point = collections.namedtuple("Point", ["x", "y"])


class TagDict(dict):
    """A dict subclass: both libraries keep the mapping type."""


def assert_same_structure(ours, theirs, path="batch"):
    """Same container types (tuple/list/dict/namedtuple), same dtypes, shapes and values, same leaves."""
    if isinstance(theirs, torch.Tensor):
        assert isinstance(ours, fm.Tensor), f"{path}: {type(ours).__name__} instead of a tensor"
        assert ours.dtype.name == str(theirs.dtype).removeprefix("torch."), f"{path}: {ours.dtype} vs {theirs.dtype}"
        assert ours.shape == tuple(theirs.shape), f"{path}: {ours.shape} vs {tuple(theirs.shape)}"
        np.testing.assert_array_equal(ours.numpy(), theirs.numpy(), err_msg=path)
        return
    assert type(ours) is type(theirs), f"{path}: {type(ours).__name__} vs {type(theirs).__name__}"
    if isinstance(theirs, dict):
        assert list(ours) == list(theirs), path
        for key in theirs:
            assert_same_structure(ours[key], theirs[key], f"{path}[{key!r}]")
    elif isinstance(theirs, (list, tuple)):
        assert len(ours) == len(theirs), path
        for i, (o, t) in enumerate(zip(ours, theirs)):
            assert_same_structure(o, t, f"{path}[{i}]")
    else:
        assert ours == theirs, path


def to_torch(sample):
    """The same sample with ForgeML tensors replaced by torch tensors."""
    if isinstance(sample, fm.Tensor):
        return torch.from_numpy(sample.numpy().copy())
    if isinstance(sample, Point):
        return Point(*(to_torch(s) for s in sample))
    if isinstance(sample, dict):
        return type(sample)({k: to_torch(v) for k, v in sample.items()})
    if isinstance(sample, (list, tuple)):
        return type(sample)(to_torch(s) for s in sample)
    return sample


def samples(rng, n=3):
    return [
        {
            "image": fm.tensor(rng.standard_normal((2, 3)).astype(np.float32)),
            "label": int(rng.integers(10)),
            "weight": float(rng.random()),
            "flag": bool(i % 2),
            "name": f"s{i}",
            "arr": rng.standard_normal(4),
            "arr32": rng.integers(0, 5, size=(2,)).astype(np.int32),
            "np_scalar": np.float32(i) / 3,
            "np_int": np.int64(i),
            "pair": (fm.tensor([i, i + 1]), f"p{i}"),
            "list": [float(i), fm.tensor(float(i))],
            "point": Point(fm.tensor([1.0 * i]), i),
            "nested": TagDict(a=[np.uint8(i), {"deep": (i, 2.5 * i)}]),
        }
        for i in range(n)
    ]


def test_nested_structures_match_torch(rng):
    batch = samples(rng)
    assert_same_structure(default_collate(batch), torch_collate([to_torch(s) for s in batch]))


@pytest.mark.parametrize(
    "batch",
    [
        [1, 2, 3],
        [1.5, 2.0],
        [1, 2.5],
        [True, False],
        [np.float32(1.5), np.float32(2)],
        [np.int32(1), np.int32(7)],
        [np.uint8(3), np.uint8(4)],
        [np.bool_(True)],
        ["a", "b"],
        [(1, "x"), (2, "y")],
        [[1, 2], [3, 4]],
        [np.zeros((2, 2), np.float32), np.ones((2, 2), np.float32)],
        [np.arange(3), np.arange(3) * 2],
        [np.array(2.5), np.array(3.5)],
        [Point(1, 2.0), Point(3, 4.0)],
    ],
    ids=lambda b: type(b[0]).__name__ + "-" + str(b[0])[:10],
)
def test_leaf_types_match_torch(batch):
    assert_same_structure(default_collate(batch), torch_collate(batch))


def test_tensors_are_stacked_along_a_new_first_dim():
    batch = [fm.full((2, 3), float(i)) for i in range(4)]
    out = default_collate(batch)
    assert out.shape == (4, 2, 3) and out.dtype == fm.float32
    np.testing.assert_array_equal(out.numpy()[:, 0, 0], [0, 1, 2, 3])


def test_tuple_sample_becomes_a_list_of_batches():
    out = default_collate([(fm.tensor([1.0]), 0), (fm.tensor([2.0]), 1)])
    assert isinstance(out, list) and len(out) == 2
    assert out[0].shape == (2, 1) and out[1].dtype == fm.int64


def test_grad_flows_through_collated_tensors():
    a = fm.tensor([1.0, 2.0], requires_grad=True)
    b = fm.tensor([3.0, 4.0], requires_grad=True)
    out = default_collate([a, b])
    (out * fm.tensor([[1.0, 1.0], [2.0, 2.0]])).sum().backward()
    np.testing.assert_array_equal(a.grad.numpy(), [1, 1])
    np.testing.assert_array_equal(b.grad.numpy(), [2, 2])


@pytest.mark.parametrize(
    ("batch", "error", "match"),
    [
        ([None, None], TypeError, "found <class 'NoneType'>"),
        ([np.array(["a"]), np.array(["b"])], TypeError, "found <U1"),
        ([[1, 2], [3]], RuntimeError, "each element in list of batch should be of equal size"),
        ([fm.zeros(2), fm.zeros(3)], RuntimeError, r"equal size, but got \[2\] at entry 0 and \[3\] at entry 1"),
        ([np.zeros(2), np.zeros(3)], RuntimeError, r"equal size, but got \[2\] at entry 0 and \[3\] at entry 1"),
        ([fm.zeros(2), np.zeros(2)], TypeError, "element 1 is ndarray"),
        ([{"a": 1}, {"b": 2}], KeyError, "a"),
        ([], ValueError, "empty"),
    ],
)
def test_errors(batch, error, match):
    with pytest.raises(error, match=match):
        default_collate(batch)


def test_errors_agree_with_torch_on_type():
    for batch in ([None], [np.array(["a"])], [[1, 2], [3]]):
        with pytest.raises(Exception) as theirs:
            torch_collate(batch)
        with pytest.raises(type(theirs.value)):
            default_collate(batch)


def test_default_convert_matches_torch(rng):
    sample = {
        "arr": rng.standard_normal(3),
        "scalar": np.int32(4),
        "num": 3,
        "text": "t",
        "strings": np.array(["a", "b"]),
        "tup": (np.zeros(2, np.float32), 1.5),
        "point": Point(np.ones(1), "y"),
        "lst": [np.arange(2)],
    }
    ours, theirs = default_convert(sample), torch_convert(sample)
    strings_ours, strings_theirs = ours.pop("strings"), theirs.pop("strings")
    assert strings_ours is strings_theirs is sample["strings"]
    assert_same_structure(ours, theirs)
