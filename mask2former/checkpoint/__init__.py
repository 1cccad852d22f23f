"""Checkpoints: safe reading of .pkl/.pth/.safetensors, exact-name loading, converters."""

from .convert import convert_swin_release, convert_torchvision_resnet, convert_weights_file
from .detection_checkpoint import DetectionCheckpointer
from .io import (
    CheckpointError,
    RestrictedUnpickler,
    UnsafeCheckpointError,
    atomic_write,
    read_checkpoint,
    save_weights,
)
from .matching import IncompatibleKeys, add_backbone_prefix_if_backbone_only, load_state_dict_exact

__all__ = [
    "CheckpointError",
    "DetectionCheckpointer",
    "IncompatibleKeys",
    "RestrictedUnpickler",
    "UnsafeCheckpointError",
    "add_backbone_prefix_if_backbone_only",
    "atomic_write",
    "convert_swin_release",
    "convert_torchvision_resnet",
    "convert_weights_file",
    "load_state_dict_exact",
    "read_checkpoint",
    "save_weights",
]
