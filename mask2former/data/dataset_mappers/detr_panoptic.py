"""``detr_panoptic`` (MaskFormer v1 COCO panoptic): DETR's resize-or-crop augmentation."""

from __future__ import annotations

import numpy as np

from ...config import configurable
from ..transforms import Augmentation, RandomCrop, ResizeShortestEdge
from .build import register_dataset_mapper
from .mapper_utils import flip_from_config, ignore_label_from_config, resize_from_config
from .mask_former_panoptic import MaskFormerPanopticDatasetMapper

__all__ = ["DETRPanopticDatasetMapper"]

# DETR's intermediate resize before its random crop.
DETR_CROP_PRE_RESIZE = (400, 500, 600)


@register_dataset_mapper("detr_panoptic")
class DETRPanopticDatasetMapper(MaskFormerPanopticDatasetMapper):
    """Panoptic mapper whose augmentation, with INPUT.CROP.ENABLED, is half the time
    flip + resize, and half the time flip + resize to 400-600 + random crop + resize."""

    @configurable
    def __init__(
        self,
        *,
        augmentations: list[Augmentation],
        crop_augmentations: list[Augmentation] | None,
        image_format: str,
        ignore_label: int,
        size_divisibility: int,
        num_classes: int | None = None,
    ):
        super().__init__(
            augmentations=augmentations,
            image_format=image_format,
            ignore_label=ignore_label,
            size_divisibility=size_divisibility,
            num_classes=num_classes,
        )
        self.crop_augmentations = crop_augmentations

    @classmethod
    def from_config(cls, cfg) -> dict:
        flip, resize = flip_from_config(cfg), resize_from_config(cfg)
        crop = None
        if cfg.INPUT.CROP.ENABLED:
            crop = flip + [
                ResizeShortestEdge(DETR_CROP_PRE_RESIZE, sample_style="choice"),
                RandomCrop(cfg.INPUT.CROP.TYPE, cfg.INPUT.CROP.SIZE),
                resize,
            ]
        return {
            "augmentations": flip + [resize],
            "crop_augmentations": crop,
            "image_format": cfg.INPUT.FORMAT,
            "ignore_label": ignore_label_from_config(cfg),
            "size_divisibility": cfg.INPUT.SIZE_DIVISIBILITY,
            "num_classes": cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES,
        }

    def sample_augmentations(self) -> list[Augmentation]:
        if self.crop_augmentations is None or np.random.uniform() > 0.5:
            return self.augmentations
        return self.crop_augmentations
