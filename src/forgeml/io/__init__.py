"""Saving and loading: safetensors checkpoints (ONNX export and DLPack come later)."""

from .checkpoint import CheckpointError, load, read_metadata, save

__all__ = ["CheckpointError", "load", "read_metadata", "save"]
