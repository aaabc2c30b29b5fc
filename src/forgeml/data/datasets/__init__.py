"""Ready-made datasets: MNIST (10,000 real digits bundled, or the full set from IDX files), CSV tables, and the
SpamAssassin mail corpus (ham vs spam, bundled, or read from the corpus folders)."""

from .mnist import MNIST, read_idx
from .spam import SpamAssassin
from .tabular import CSVDataset

__all__ = ["CSVDataset", "MNIST", "SpamAssassin", "read_idx"]
