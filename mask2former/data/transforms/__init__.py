"""Transforms (deterministic) and augmentations (which sample transforms), as in detectron2.

``from mask2former.data import transforms as T`` gives detectron2's ``T`` namespace for the
parts the published recipes use: resizing (PIL for uint8 images, as detectron2), crops,
flips, padding, SSD colour jitter and large-scale jitter.
"""

from .augmentation import (
    AugInput,
    Augmentation,
    AugmentationList,
    StandardAugInput,
    TransformGen,
    apply_augmentations,
    apply_transform_gens,
)
from .augmentation_impl import (
    FixedSizeCrop,
    RandomApply,
    RandomCrop,
    RandomCrop_CategoryAreaConstraint,
    RandomFlip,
    Resize,
    ResizeScale,
    ResizeShortestEdge,
)
from .clip_augmentation import ByClip, apply_augmentations_to_clip
from .transform import (
    BlendTransform,
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
    "AugmentationList",
    "BlendTransform",
    "ByClip",
    "ColorAugSSDTransform",
    "CropTransform",
    "FixedSizeCrop",
    "HFlipTransform",
    "NoOpTransform",
    "PadTransform",
    "RandomApply",
    "RandomCrop",
    "RandomCrop_CategoryAreaConstraint",
    "RandomFlip",
    "Resize",
    "ResizeScale",
    "ResizeShortestEdge",
    "ResizeTransform",
    "StandardAugInput",
    "Transform",
    "TransformGen",
    "TransformList",
    "VFlipTransform",
    "apply_augmentations",
    "apply_augmentations_to_clip",
    "apply_transform_gens",
]
