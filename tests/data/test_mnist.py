"""MNIST: the bundled 10,000-digit split, and reading the standard IDX files."""

import gzip
import hashlib
import importlib.resources

import numpy as np
import pytest

import forgeml as fm
from forgeml.data import DataLoader, default_collate
from forgeml.data.datasets import MNIST, read_idx


def per_item_collate(samples):
    """default_collate under another name: the DataLoader then fetches item by item."""
    return default_collate(samples)


@pytest.fixture(scope="module")
def train_ds():
    return MNIST("train")


@pytest.fixture(scope="module")
def test_ds():
    return MNIST("test")


def test_bundled_split_sizes_and_arrays(train_ds, test_ds):
    assert len(train_ds) == 8000 and len(test_ds) == 2000
    for ds in (train_ds, test_ds):
        assert ds.data.dtype == np.uint8 and ds.data.shape == (len(ds), 28, 28)
        assert ds.targets.dtype == np.int64 and ds.targets.shape == (len(ds),)
        assert set(np.unique(ds.targets).tolist()) == set(range(10))
    assert train_ds.train and not test_ds.train
    assert train_ds.classes[3] == "3 - three" and train_ds.class_to_idx["9 - nine"] == 9


def test_bundled_split_is_a_fixed_stratified_80_20_split(train_ds, test_ds):
    train_counts = np.bincount(train_ds.targets, minlength=10)
    total = train_counts + np.bincount(test_ds.targets, minlength=10)
    assert total.tolist() == [1001, 1127, 991, 1032, 980, 863, 1014, 1070, 944, 978]
    assert np.all(np.abs(train_counts - 0.8 * total) <= 1)
    # pinned content: the split and order never change silently
    assert hashlib.sha256(train_ds.data.tobytes()).hexdigest()[:16] == "f62b28ec024a082e"
    assert hashlib.sha256(test_ds.targets.tobytes()).hexdigest()[:16] == "887c4be72b848a43"
    assert train_ds.targets[:10].tolist() == [2, 9, 6, 6, 2, 3, 8, 8, 7, 0]


def test_bundled_file_splits_are_disjoint_and_cover_everything():
    resource = importlib.resources.files("forgeml.data.datasets").joinpath("mnist10k.npz")
    with resource.open("rb") as f, np.load(f) as npz:
        tr, te = npz["train_indices"].astype(int), npz["test_indices"].astype(int)
        images = npz["images"]
    assert len(set(tr.tolist()) | set(te.tolist())) == 10000 and not set(tr.tolist()) & set(te.tolist())
    assert images.shape == (10000, 28, 28) and images.dtype == np.uint8


def test_bundled_digits_are_real_digits(train_ds, test_ds):
    """A nearest-centroid classifier reaches ~81 % on real MNIST; noise or shuffled labels give ~10 %."""
    x = train_ds.data.reshape(-1, 784) / 255.0
    centroids = np.stack([x[train_ds.targets == c].mean(0) for c in range(10)])
    xt = test_ds.data.reshape(-1, 784) / 255.0
    dists = (xt**2).sum(1)[:, None] - 2 * xt @ centroids.T + (centroids**2).sum(1)[None]
    accuracy = (dists.argmin(1) == test_ds.targets).mean()
    assert accuracy > 0.75
    assert centroids[1].mean() < centroids[0].mean()  # ones use the least ink


def test_items_value_range_shape_and_dtype(train_ds):
    image, label = train_ds[0]
    assert image.shape == (1, 28, 28) and image.dtype == fm.float32
    assert label.shape == () and label.dtype == fm.int64 and label.item() == 2
    assert 0.0 <= image.numpy().min() and image.numpy().max() <= 1.0
    np.testing.assert_array_equal(image.numpy()[0], train_ds.data[0] / np.float32(255))
    assert train_ds[-1][1].item() == train_ds.targets[-1]
    with pytest.raises(IndexError, match="index 8000 is out of range for MNIST 'train' split of 8000 digits"):
        train_ds[8000]


def test_bundled_load_is_deterministic_and_independent():
    a, b = MNIST("test"), MNIST("test")
    np.testing.assert_array_equal(a.data, b.data)
    np.testing.assert_array_equal(a.targets, b.targets)
    a.data[0] = 0  # each dataset owns its arrays
    assert b.data[0].any()


def test_flatten(test_ds):
    flat = MNIST("test", flatten=True)
    image, _ = flat[5]
    assert image.shape == (784,)
    np.testing.assert_array_equal(image.numpy(), test_ds[5][0].numpy().reshape(784))
    x, y = flat.get_batch([0, 1, 2])
    assert x.shape == (3, 784) and y.tolist() == test_ds.targets[:3].tolist()


def test_transforms_are_applied_and_disable_the_vectorised_path():
    ds = MNIST("test", transform=lambda img: img * 2 - 1, target_transform=lambda y: y + 100)
    image, label = ds[0]
    assert image.numpy().min() == -1.0 and label.item() == ds.targets[0] + 100
    assert ds.get_batch([0, 1]) is NotImplemented
    x, y = next(iter(DataLoader(ds, batch_size=4)))
    assert x.shape == (4, 1, 28, 28) and x.numpy().min() == -1.0
    assert y.tolist() == (ds.targets[:4] + 100).tolist()
    with pytest.raises(TypeError, match="transform must be callable"):
        MNIST("test", transform=3)


def test_vectorised_batches_equal_per_item_batches(test_ds):
    idx = [5, 1999, 0, 5, -2]
    fast = test_ds.get_batch(idx)
    slow = default_collate([test_ds[i] for i in idx])
    for a, b in zip(fast, slow):
        assert a.dtype == b.dtype and a.shape == b.shape
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    samples = test_ds.__getitems__(idx)
    np.testing.assert_array_equal(samples[1][0].numpy(), test_ds[1999][0].numpy())
    fm.manual_seed(5)
    fast_epoch = [b[1].tolist() for b in DataLoader(test_ds, batch_size=300, shuffle=True)]
    fm.manual_seed(5)
    slow_epoch = [b[1].tolist() for b in DataLoader(test_ds, batch_size=300, shuffle=True, collate_fn=per_item_collate)]
    assert fast_epoch == slow_epoch


def test_loader_over_mnist(train_ds):
    loader = DataLoader(train_ds, batch_size=64, shuffle=True, drop_last=True)
    assert len(loader) == 125
    x, y = next(iter(loader))
    assert x.shape == (64, 1, 28, 28) and x.dtype == fm.float32 and y.shape == (64,) and y.dtype == fm.int64


def test_bad_split():
    with pytest.raises(ValueError, match="split must be 'train' or 'test', got 'val'"):
        MNIST("val")


# -- IDX files --------------------------------------------------------------------------------


def idx_bytes(array, magic=None):
    array = np.asarray(array, dtype=np.uint8)
    magic = (0x0800 | array.ndim) if magic is None else magic
    header = magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in array.shape)
    return header + array.tobytes()


def write_mnist(folder, n_train=6, n_test=4, gz=False, seed=0):
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        labels = rng.integers(0, 10, size=n, dtype=np.uint8)
        for kind, array in (("images-idx3-ubyte", images), ("labels-idx1-ubyte", labels)):
            name = f"{prefix}-{kind}"
            data = idx_bytes(array)
            if gz:
                (folder / (name + ".gz")).write_bytes(gzip.compress(data))
            else:
                (folder / name).write_bytes(data)
        out[prefix] = (images, labels)
    return out


@pytest.mark.parametrize("gz", [False, True], ids=["raw", "gz"])
def test_reads_idx_files(tmp_path, gz):
    arrays = write_mnist(tmp_path, gz=gz)
    for split, prefix in (("train", "train"), ("test", "t10k")):
        ds = MNIST(split, root=tmp_path)
        images, labels = arrays[prefix]
        np.testing.assert_array_equal(ds.data, images)
        assert ds.targets.dtype == np.int64 and ds.targets.tolist() == labels.tolist()
        image, label = ds[1]
        np.testing.assert_array_equal(image.numpy()[0], images[1].astype(np.float32) / 255)
        assert label.item() == labels[1]
    assert len(MNIST("train", root=str(tmp_path))) == 6


def test_reads_torchvision_layout(tmp_path):
    write_mnist(tmp_path / "MNIST" / "raw", gz=True)
    assert len(MNIST("test", root=tmp_path)) == 4


def test_missing_file_names_the_file_and_the_expected_names(tmp_path):
    write_mnist(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(FileNotFoundError) as info:
        MNIST("test", root=tmp_path)
    message = str(info.value)
    assert "'t10k-labels-idx1-ubyte'" in message and "'t10k-labels-idx1-ubyte.gz'" in message
    assert "train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte" in message
    with pytest.raises(FileNotFoundError, match=r"root directory .*nowhere does not exist"):
        MNIST("test", root=tmp_path / "nowhere")


def test_corrupt_header_names_the_magic_numbers(tmp_path):
    write_mnist(tmp_path)
    images = np.zeros((2, 28, 28), np.uint8)
    (tmp_path / "train-images-idx3-ubyte").write_bytes(idx_bytes(images, magic=2049))
    with pytest.raises(
        ValueError,
        match=r"corrupt IDX header in .*train-images-idx3-ubyte: magic number 2049 \(0x00000801\), expected 2051 \(0x00000803\)",
    ):
        MNIST("train", root=tmp_path)
    (tmp_path / "train-images-idx3-ubyte").write_bytes(b"\x1f\x8b\x08\x00")
    with pytest.raises(ValueError, match=r"magic number 529205248 .*expected 2051"):
        MNIST("train", root=tmp_path)


def test_truncated_and_inconsistent_files(tmp_path):
    write_mnist(tmp_path)
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(idx_bytes(np.zeros((3, 28, 28)))[:-10])
    with pytest.raises(
        ValueError, match=r"header says shape \[3, 28, 28\] \(2352 bytes of data\), but the file holds 2342"
    ):
        MNIST("train", root=tmp_path)
    path.write_bytes(idx_bytes(np.zeros((3, 28, 28))))
    with pytest.raises(ValueError, match="holds 3 images but train-labels-idx1-ubyte holds 6 labels"):
        MNIST("train", root=tmp_path)
    path.write_bytes(idx_bytes(np.zeros((6, 14, 14))))
    with pytest.raises(ValueError, match=r"images of shape \[14, 14\], expected \[28, 28\]"):
        MNIST("train", root=tmp_path)
    (tmp_path / "t10k-images-idx3-ubyte.gz").write_bytes(b"not gzip at all")
    (tmp_path / "t10k-images-idx3-ubyte").unlink()
    with pytest.raises(ValueError, match=r"could not read IDX file .*t10k-images-idx3-ubyte\.gz"):
        MNIST("test", root=tmp_path)


def test_read_idx_other_shapes(tmp_path):
    path = tmp_path / "x.idx"
    array = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    path.write_bytes(idx_bytes(array))
    np.testing.assert_array_equal(read_idx(path), array)
    path.write_bytes(b"\x00\x00\x0d\x01" + (1).to_bytes(4, "big") + b"\x00" * 4)
    with pytest.raises(ValueError, match="element type 0x0D; only unsigned bytes"):
        read_idx(path)
