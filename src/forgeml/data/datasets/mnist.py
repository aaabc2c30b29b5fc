"""MNIST handwritten digits: 10,000 real digits bundled with ForgeML, or the full set from IDX files.

>>> from forgeml.data import DataLoader
>>> from forgeml.data.datasets import MNIST
>>> train = MNIST("train")                  # bundled: 8,000 digits (2,000 in "test")
>>> x, y = next(iter(DataLoader(train, batch_size=64, shuffle=True)))
>>> x.shape, x.dtype, y.dtype
((64, 1, 28, 28), forgeml.float32, forgeml.int64)
"""

from __future__ import annotations

import functools
import gzip
import importlib.resources
import operator
import os
import zlib
from pathlib import Path
from typing import ClassVar

import numpy as np

from ...ops.creation import from_numpy
from ...tensor import Tensor
from ..dataset import Dataset, _check_in_range, _overrides_getitem, batch_to_samples, index_array

__all__ = ["MNIST", "read_idx"]

_BUNDLED = "mnist10k.npz"
_SIDE = 28
_IMAGES_MAGIC = 2051  # 0x00000803: unsigned bytes, 3 dimensions
_LABELS_MAGIC = 2049  # 0x00000801: unsigned bytes, 1 dimension
_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
_ALL_FILES = ", ".join(name for pair in _FILES.values() for name in pair)


def read_idx(path, expected_magic: int | None = None) -> np.ndarray:
    """The array in an IDX file of unsigned bytes (``path`` may end in ``.gz``).

    ``expected_magic`` (2051 for MNIST images, 2049 for labels) is checked against
    the file's magic number. Raises ``ValueError`` naming the file for a corrupt
    header, an unsupported element type, or a size that disagrees with the header.
    """
    path = Path(path)
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as f:
                raw = f.read()
        else:
            raw = path.read_bytes()
    except (OSError, EOFError, zlib.error) as exc:
        if isinstance(exc, FileNotFoundError):
            raise
        raise ValueError(f"could not read IDX file {path}: {exc}") from exc
    if len(raw) < 4:
        raise ValueError(f"corrupt IDX file {path}: {len(raw)} bytes is too short for the 4-byte magic number")
    magic = int.from_bytes(raw[:4], "big")
    if expected_magic is not None and magic != expected_magic:
        raise ValueError(
            f"corrupt IDX header in {path}: magic number {magic} (0x{magic:08X}), "
            f"expected {expected_magic} (0x{expected_magic:08X})"
        )
    if raw[0] or raw[1]:
        raise ValueError(f"corrupt IDX header in {path}: magic number 0x{magic:08X} does not start with two zero bytes")
    if raw[2] != 0x08:
        raise ValueError(f"IDX file {path} holds element type 0x{raw[2]:02X}; only unsigned bytes (0x08) are supported")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise ValueError(f"corrupt IDX file {path}: the header announces {ndim} dimensions but the file ends first")
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    expected = int(np.prod(shape, dtype=np.int64))
    found = len(raw) - header
    if found != expected:
        raise ValueError(
            f"corrupt IDX file {path}: the header says shape {list(shape)} ({expected} bytes of data), "
            f"but the file holds {found} bytes of data"
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape).copy()


def _find(root: Path, name: str) -> Path:
    folders = [root, root / "MNIST" / "raw"]
    for folder in folders:
        for candidate in (folder / name, folder / (name + ".gz")):
            if candidate.is_file():
                return candidate
    looked = " and ".join(str(f) for f in folders)
    raise FileNotFoundError(
        f"MNIST: no file {name!r} (or {name + '.gz'!r}) in {looked}. With root=, MNIST reads the standard IDX files "
        f"{_ALL_FILES} (each optionally gzipped); leave root=None for the bundled 10,000 digits."
    )


def _load_root(root, split: str) -> tuple[np.ndarray, np.ndarray]:
    root = Path(os.fspath(root)).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"MNIST: root directory {root} does not exist (expected it to hold {_ALL_FILES})")
    image_name, label_name = _FILES[split]
    images = read_idx(_find(root, image_name), _IMAGES_MAGIC)
    labels = read_idx(_find(root, label_name), _LABELS_MAGIC)
    if images.shape[1:] != (_SIDE, _SIDE):
        raise ValueError(f"MNIST: {image_name} holds images of shape {list(images.shape[1:])}, expected [28, 28]")
    if labels.shape[0] != images.shape[0]:
        raise ValueError(
            f"MNIST: {image_name} holds {images.shape[0]} images but {label_name} holds {labels.shape[0]} labels"
        )
    if labels.size and labels.max() > 9:
        raise ValueError(f"MNIST: {label_name} holds label {int(labels.max())}; digit labels are 0..9")
    return images, labels


@functools.cache
def _bundled() -> dict[str, np.ndarray]:
    """The bundled arrays, read once per process (read-only; each dataset indexes its own copy out of them)."""
    resource = importlib.resources.files(__package__).joinpath(_BUNDLED)
    try:
        with resource.open("rb") as f, np.load(f, allow_pickle=False) as npz:
            arrays = {key: npz[key] for key in ("images", "labels", "train_indices", "test_indices")}
    except FileNotFoundError:
        raise FileNotFoundError(
            f"the bundled MNIST file {_BUNDLED} is missing from the forgeml.data.datasets package "
            f"({resource}); rebuild it with `python tools/build_mnist10k.py`, or pass root= to read IDX files"
        ) from None
    for array in arrays.values():
        array.setflags(write=False)
    return arrays


def _load_bundled(split: str) -> tuple[np.ndarray, np.ndarray]:
    arrays = _bundled()
    idx = arrays[f"{split}_indices"].astype(np.intp)
    return arrays["images"][idx], arrays["labels"][idx]


def _to_float(images: np.ndarray) -> np.ndarray:
    """uint8 pixels to float32 in [0, 1] (``x / 255``, as torchvision's ``ToTensor`` computes it)."""
    return images.astype(np.float32) / np.float32(255)


class MNIST(Dataset):
    """MNIST digits. Items are ``(image, label)``.

    ``image`` is a float32 tensor in [0, 1] of shape ``[1, 28, 28]`` (``[784]`` with
    ``flatten=True``); ``label`` an int64 0-d tensor. ``transform`` is applied to
    the image tensor and ``target_transform`` to the label tensor (torchvision
    passes a PIL image and an int instead).

    Args:
        split: ``"train"`` or ``"test"``.
        root: ``None`` for the bundled set: 10,000 real MNIST digits, split 8,000 /
            2,000 by a fixed split stratified by class (the same on every machine).
            Otherwise a folder holding the standard IDX files of the full set
            (``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``,
            ``t10k-images-idx3-ubyte``, ``t10k-labels-idx1-ubyte``, each optionally
            ``.gz``), directly or in ``MNIST/raw/`` below it (torchvision's layout).
        flatten: give images as ``[784]`` vectors.
        transform, target_transform: callables applied to each item's image / label.

    Attributes:
        data: the split's images, a uint8 array ``[N, 28, 28]``.
        targets: the split's labels, an int64 array ``[N]``.
        classes: the class names, ``"0 - zero"`` .. ``"9 - nine"``.

    With no transform, batches are built vectorised (``get_batch``): one fancy
    index into ``data`` and ``targets`` per batch.
    """

    classes: ClassVar[list[str]] = [
        "0 - zero",
        "1 - one",
        "2 - two",
        "3 - three",
        "4 - four",
        "5 - five",
        "6 - six",
        "7 - seven",
        "8 - eight",
        "9 - nine",
    ]

    def __init__(self, split: str = "train", root=None, flatten: bool = False, transform=None, target_transform=None):
        if split not in _FILES:
            raise ValueError(f"MNIST: split must be 'train' or 'test', got {split!r}")
        for name, fn in (("transform", transform), ("target_transform", target_transform)):
            if fn is not None and not callable(fn):
                raise TypeError(f"MNIST: {name} must be callable or None, got {type(fn).__name__}")
        images, labels = _load_bundled(split) if root is None else _load_root(root, split)
        self.split = split
        self.root = root
        self.flatten = bool(flatten)
        self.transform = transform
        self.target_transform = target_transform
        self.data = images
        self.targets = labels.astype(np.int64)

    @property
    def train(self) -> bool:
        return self.split == "train"

    @property
    def class_to_idx(self) -> dict[str, int]:
        return {name: i for i, name in enumerate(self.classes)}

    def _image_shape(self, n: int | None = None) -> tuple[int, ...]:
        sample = (_SIDE * _SIDE,) if self.flatten else (1, _SIDE, _SIDE)
        return sample if n is None else (n, *sample)

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index):
        i = operator.index(index)
        n = len(self)
        if not -n <= i < n:
            raise IndexError(f"index {i} is out of range for MNIST {self.split!r} split of {n} digits")
        image = Tensor._make(_to_float(self.data[i]).reshape(self._image_shape()), False, None)
        label = from_numpy(np.array(self.targets[i]))
        if self.transform is not None:
            image = self.transform(image)
        if self.target_transform is not None:
            label = self.target_transform(label)
        return image, label

    def get_batch(self, indices):
        """``[images, labels]`` for ``indices``, by one fancy index each; ``NotImplemented`` with a transform."""
        if self.transform is not None or self.target_transform is not None or _overrides_getitem(self, MNIST):
            return NotImplemented
        idx = index_array(indices)
        _check_in_range(idx, len(self), f"MNIST {self.split!r} split")
        images = _to_float(self.data[idx]).reshape(self._image_shape(len(idx)))
        return [Tensor._make(images, False, None), Tensor._make(self.targets[idx], False, None)]

    def __getitems__(self, indices) -> list:
        batch = self.get_batch(indices)
        if batch is NotImplemented:
            return [self[i] for i in indices]
        return batch_to_samples(batch)

    def __repr__(self) -> str:
        where = "bundled (10,000-digit subset)" if self.root is None else str(self.root)
        lines = [
            "Dataset MNIST",
            f"    Number of datapoints: {len(self)}",
            f"    Split: {self.split}",
            f"    Root location: {where}",
        ]
        if self.flatten:
            lines.append("    Flatten: True")
        for name in ("transform", "target_transform"):
            if getattr(self, name) is not None:
                lines.append(f"    {name}: {getattr(self, name)!r}")
        return "\n".join(lines)
