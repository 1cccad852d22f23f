"""Transforms (deterministic) and augmentations (which sample transforms)."""

from .augmentation import AugInput, Augmentation, apply_augmentations
from .augmentation_impl import (
    ColorAugSSD,
    FixedSizeCrop,
    RandomCrop,
    RandomCrop_CategoryAreaConstraint,
    RandomFlip,
    ResizeScale,
    ResizeShortestEdge,
    shortest_edge_output_shape,
)
from .transform import (
    ColorAugSSDTransform,
    CropTransform,
    HFlipTransform,
    NoOpTransform,
    PadTransform,
    ResizeTransform,
    Transform,
    TransformList,
    VFlipTransform,
)

__all__ = [
    "AugInput",
    "Augmentation",
    "ColorAugSSD",
    "ColorAugSSDTransform",
    "CropTransform",
    "FixedSizeCrop",
    "HFlipTransform",
    "NoOpTransform",
    "PadTransform",
    "RandomCrop",
    "RandomCrop_CategoryAreaConstraint",
    "RandomFlip",
    "ResizeScale",
    "ResizeShortestEdge",
    "ResizeTransform",
    "Transform",
    "TransformList",
    "VFlipTransform",
    "apply_augmentations",
    "shortest_edge_output_shape",
]
