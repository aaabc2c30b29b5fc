"""Neural-network building blocks, as in ``torch.nn``: ``Module``, layers, losses, ``init``, ``utils``."""

from . import functional, init, utils
from .activation import ELU, GELU, LeakyReLU, LogSoftmax, ReLU, Sigmoid, SiLU, Softmax, Softplus, Tanh
from .attention import MultiHeadAttention, MultiheadAttention
from .batchnorm import BatchNorm1d, BatchNorm2d
from .container import ModuleDict, ModuleList, Sequential
from .conv import Conv2d
from .dropout import Dropout
from .flatten import Flatten, Unflatten
from .linear import Identity, Linear
from .loss import BCELoss, BCEWithLogitsLoss, CrossEntropyLoss, L1Loss, MSELoss, NLLLoss, SmoothL1Loss
from .masked import MaskedBatch
from .module import Module
from .normalization import LayerNorm, RMSNorm
from .parameter import Parameter
from .pooling import AdaptiveAvgPool2d, AvgPool2d, MaxPool2d
from .positional import LearnedPositionalEmbedding, PositionalEncoding
from .sequence import SequencePool
from .sparse import Embedding, EmbeddingLayer
from .spec import build, to_spec
from .transformer import FeedForward, TransformerEncoder, TransformerEncoderLayer


def __getattr__(name: str):
    # nn.parallel and nn.SyncBatchNorm need process groups, which sit above nn: imported when first asked for.
    if name == "parallel":
        import importlib

        return importlib.import_module(".parallel", __name__)
    if name == "SyncBatchNorm":
        from ..distributed.sync_batchnorm import SyncBatchNorm

        return SyncBatchNorm
    raise AttributeError(f"module 'forgeml.nn' has no attribute {name!r}")


__all__ = [
    "Embedding",
    "EmbeddingLayer",
    "FeedForward",
    "LayerNorm",
    "LearnedPositionalEmbedding",
    "MaskedBatch",
    "MultiHeadAttention",
    "MultiheadAttention",
    "PositionalEncoding",
    "RMSNorm",
    "SequencePool",
    "TransformerEncoder",
    "TransformerEncoderLayer",
    "AdaptiveAvgPool2d",
    "AvgPool2d",
    "BCELoss",
    "BCEWithLogitsLoss",
    "BatchNorm1d",
    "BatchNorm2d",
    "Conv2d",
    "CrossEntropyLoss",
    "Dropout",
    "ELU",
    "Flatten",
    "GELU",
    "Identity",
    "L1Loss",
    "LeakyReLU",
    "Linear",
    "LogSoftmax",
    "MSELoss",
    "MaxPool2d",
    "Module",
    "ModuleDict",
    "ModuleList",
    "NLLLoss",
    "Parameter",
    "ReLU",
    "Sequential",
    "SiLU",
    "Sigmoid",
    "SmoothL1Loss",
    "Softmax",
    "Softplus",
    "Tanh",
    "Unflatten",
    "build",
    "SyncBatchNorm",
    "functional",
    "init",
    "parallel",
    "to_spec",
    "utils",
]
