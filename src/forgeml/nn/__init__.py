"""Neural-network building blocks, as in ``torch.nn``: ``Module``, layers, losses, ``init``, ``utils``."""

from . import functional, init, utils
from .activation import ELU, GELU, LeakyReLU, LogSoftmax, ReLU, Sigmoid, SiLU, Softmax, Softplus, Tanh
from .attention import MultiHeadAttention, MultiheadAttention
from .batchnorm import BatchNorm1d, BatchNorm2d
from .channel_dropout import Dropout1d, Dropout2d, Dropout3d
from .container import ModuleDict, ModuleList, Sequential
from .conv import Conv2d
from .conv1d import Conv1d
from .conv_transpose import ConvTranspose1d, ConvTranspose2d
from .distance import CosineSimilarity, KLDivLoss
from .dropout import Dropout
from .flatten import Flatten, Unflatten
from .groupnorm import GroupNorm, InstanceNorm1d, InstanceNorm2d
from .linear import Identity, Linear
from .loss import BCELoss, BCEWithLogitsLoss, CrossEntropyLoss, L1Loss, MSELoss, NLLLoss, SmoothL1Loss
from .masked import MaskedBatch
from .module import Module
from .normalization import LayerNorm, RMSNorm
from .padding import (
    CircularPad1d,
    CircularPad2d,
    CircularPad3d,
    ConstantPad1d,
    ConstantPad2d,
    ConstantPad3d,
    ReflectionPad1d,
    ReflectionPad2d,
    ReflectionPad3d,
    ReplicationPad1d,
    ReplicationPad2d,
    ReplicationPad3d,
    ZeroPad1d,
    ZeroPad2d,
    ZeroPad3d,
)
from .parameter import Parameter
from .pixelshuffle import PixelShuffle, PixelUnshuffle
from .pooling import AdaptiveAvgPool2d, AvgPool2d, MaxPool2d
from .pooling1d import AdaptiveAvgPool1d, AdaptiveMaxPool1d, AvgPool1d, MaxPool1d
from .positional import LearnedPositionalEmbedding, PositionalEncoding
from .rnn import GRU, LSTM, RNN, GRUCell, LSTMCell, RNNBase, RNNCell, RNNCellBase
from .sequence import SequencePool
from .sparse import Embedding, EmbeddingLayer
from .spec import build, to_spec
from .transformer import FeedForward, TransformerEncoder, TransformerEncoderLayer
from .transformer_decoder import Transformer, TransformerDecoder, TransformerDecoderLayer
from .upsampling import Upsample, UpsamplingBilinear2d, UpsamplingNearest2d


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
    "CircularPad1d",
    "CircularPad2d",
    "CircularPad3d",
    "ConstantPad1d",
    "ConstantPad2d",
    "ConstantPad3d",
    "CosineSimilarity",
    "Dropout1d",
    "Dropout2d",
    "Dropout3d",
    "KLDivLoss",
    "PixelShuffle",
    "PixelUnshuffle",
    "ReflectionPad1d",
    "ReflectionPad2d",
    "ReflectionPad3d",
    "ReplicationPad1d",
    "ReplicationPad2d",
    "ReplicationPad3d",
    "Upsample",
    "UpsamplingBilinear2d",
    "UpsamplingNearest2d",
    "ZeroPad1d",
    "ZeroPad2d",
    "ZeroPad3d",
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
    "GRU",
    "GRUCell",
    "LSTM",
    "LSTMCell",
    "RNN",
    "RNNBase",
    "RNNCell",
    "RNNCellBase",
    "SequencePool",
    "Transformer",
    "TransformerDecoder",
    "TransformerDecoderLayer",
    "TransformerEncoder",
    "TransformerEncoderLayer",
    "AdaptiveAvgPool2d",
    "AvgPool2d",
    "BCELoss",
    "BCEWithLogitsLoss",
    "BatchNorm1d",
    "BatchNorm2d",
    "Conv1d",
    "Conv2d",
    "ConvTranspose1d",
    "ConvTranspose2d",
    "GroupNorm",
    "InstanceNorm1d",
    "InstanceNorm2d",
    "AdaptiveAvgPool1d",
    "AdaptiveMaxPool1d",
    "AvgPool1d",
    "MaxPool1d",
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
