"""Saving, loading and sharing: safetensors checkpoints and DLPack (ONNX lives in ``forgeml.onnx``)."""

from .checkpoint import CheckpointError, load, read_metadata, save
from .dlpack import from_dlpack

__all__ = ["CheckpointError", "from_dlpack", "load", "read_metadata", "save"]
