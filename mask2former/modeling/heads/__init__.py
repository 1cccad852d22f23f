"""Segmentation heads; importing this package registers them in ``SEM_SEG_HEADS_REGISTRY``."""

from .build import SEM_SEG_HEADS_REGISTRY, build_sem_seg_head
from .mask_former_head import MaskFormerHead
from .per_pixel_baseline import PerPixelBaselineHead, PerPixelBaselinePlusHead

__all__ = [
    "SEM_SEG_HEADS_REGISTRY",
    "MaskFormerHead",
    "PerPixelBaselineHead",
    "PerPixelBaselinePlusHead",
    "build_sem_seg_head",
]
