"""Loading data: datasets, samplers and the ``DataLoader``, shaped like ``torch.utils.data``.

>>> import forgeml as fm
>>> from forgeml.data import DataLoader, TensorDataset
>>> ds = TensorDataset(fm.randn(10, 3), fm.arange(10))
>>> [tuple(x.shape) for x, y in DataLoader(ds, batch_size=4)]
[(4, 3), (4, 3), (2, 3)]

Batches of :class:`TensorDataset`, :class:`Subset` of it, and the bundled
:mod:`~forgeml.data.datasets` are gathered with one NumPy fancy index per tensor
(see :class:`DataLoader`). This layer imports the tensor layer, never the reverse.
"""

from . import datasets, text
from ._worker import WorkerInfo, get_worker_info
from .collate import default_collate, default_convert
from .dataloader import DataLoader
from .dataset import ConcatDataset, Dataset, Subset, TensorDataset, random_split
from .datasets import MNIST, CSVDataset, SpamAssassin
from .iterable import IterableDataset
from .sampler import (
    BatchSampler,
    RandomSampler,
    Sampler,
    SequentialSampler,
    SubsetRandomSampler,
    WeightedRandomSampler,
)
from .text import CharVocabulary, HFTokenizerAdapter, PadCollate, TextClassificationDataset, Vocabulary, tokenize

__all__ = [
    "BatchSampler",
    "CSVDataset",
    "CharVocabulary",
    "ConcatDataset",
    "DataLoader",
    "Dataset",
    "HFTokenizerAdapter",
    "IterableDataset",
    "MNIST",
    "PadCollate",
    "RandomSampler",
    "Sampler",
    "SequentialSampler",
    "SpamAssassin",
    "Subset",
    "SubsetRandomSampler",
    "TensorDataset",
    "TextClassificationDataset",
    "Vocabulary",
    "WeightedRandomSampler",
    "WorkerInfo",
    "datasets",
    "default_collate",
    "default_convert",
    "get_worker_info",
    "random_split",
    "text",
    "tokenize",
]
