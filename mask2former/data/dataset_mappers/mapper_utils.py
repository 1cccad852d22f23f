"""Pieces shared by the dataset mappers: config -> augmentations, reading, padding."""

from __future__ import annotations

import numpy as np

from ...config import configurable
from ..catalog import MetadataCatalog
from ..detection_utils import check_image_size, read_image
from ..transforms import (
    Augmentation,
    ColorAugSSD,
    NoOpTransform,
    PadTransform,
    RandomCrop,
    RandomCrop_CategoryAreaConstraint,
    RandomFlip,
    ResizeShortestEdge,
    Transform,
)

IMAGE_PAD_VALUE = 128


def flip_from_config(cfg) -> list[Augmentation]:
    """``INPUT.RANDOM_FLIP``: "horizontal", "vertical" or "none"."""
    mode = cfg.INPUT.RANDOM_FLIP
    if mode not in ("horizontal", "vertical", "none"):
        raise ValueError(f"INPUT.RANDOM_FLIP must be horizontal, vertical or none, got {mode!r}")
    if mode == "none":
        return []
    return [RandomFlip(horizontal=mode == "horizontal", vertical=mode == "vertical")]


def resize_from_config(cfg) -> ResizeShortestEdge:
    return ResizeShortestEdge(
        cfg.INPUT.MIN_SIZE_TRAIN, cfg.INPUT.MAX_SIZE_TRAIN, cfg.INPUT.MIN_SIZE_TRAIN_SAMPLING
    )


def mask_former_augmentations(cfg, *, area_constraint: bool) -> list[Augmentation]:
    """Resize shortest edge, optional crop, optional SSD colour jitter, flip (MaskFormer recipe).

    ``area_constraint``: crop with the single-category max-area rule (semantic / panoptic).
    """
    augmentations: list[Augmentation] = [resize_from_config(cfg)]
    crop = cfg.INPUT.CROP
    if crop.ENABLED and area_constraint:
        augmentations.append(
            RandomCrop_CategoryAreaConstraint(
                crop.TYPE, crop.SIZE, crop.SINGLE_CATEGORY_MAX_AREA, ignore_label_from_config(cfg)
            )
        )
    elif crop.ENABLED:
        augmentations.append(RandomCrop(crop.TYPE, crop.SIZE))
    if cfg.INPUT.COLOR_AUG_SSD:
        augmentations.append(ColorAugSSD(img_format=cfg.INPUT.FORMAT))
    return augmentations + flip_from_config(cfg)


def ignore_label_from_config(cfg) -> int:
    """The first training dataset's ``ignore_label``, else ``MODEL.SEM_SEG_HEAD.IGNORE_VALUE``."""
    default = cfg.MODEL.SEM_SEG_HEAD.IGNORE_VALUE
    if not cfg.DATASETS.TRAIN:
        return default
    return MetadataCatalog.get(cfg.DATASETS.TRAIN[0]).get("ignore_label", default)


def read_checked_image(dataset_dict: dict, image_format: str) -> np.ndarray:
    """The sample's image in ``image_format``, checked against its "height" / "width"."""
    image = read_image(dataset_dict["file_name"], format=image_format)
    check_image_size(dataset_dict, image)
    return image


def divisibility_padding(
    image_size: tuple[int, int], size_divisibility: int, ignore_label: int
) -> Transform:
    """Pad (right / bottom) to multiples of ``size_divisibility`` (<= 0: no padding)."""
    if size_divisibility <= 0:
        return NoOpTransform()
    h, w = image_size
    pad_h = -h % size_divisibility
    pad_w = -w % size_divisibility
    return PadTransform(h, w, pad_h, pad_w, IMAGE_PAD_VALUE, ignore_label)


class LabelMapMapperBase:
    """Constructor and ``from_config`` shared by the mappers that read a label map (semantic
    and panoptic): augmentations with the single-category area constraint, the image format,
    the ignore label, padding divisibility, and the number of classes labels are checked
    against."""

    @configurable
    def __init__(
        self,
        *,
        augmentations: list[Augmentation],
        image_format: str,
        ignore_label: int,
        size_divisibility: int,
        num_classes: int | None = None,
    ):
        self.augmentations = augmentations
        self.image_format = image_format
        self.ignore_label = ignore_label
        self.size_divisibility = size_divisibility
        self.num_classes = num_classes

    @classmethod
    def from_config(cls, cfg) -> dict:
        return {
            "augmentations": mask_former_augmentations(cfg, area_constraint=True),
            "image_format": cfg.INPUT.FORMAT,
            "ignore_label": ignore_label_from_config(cfg),
            "size_divisibility": cfg.INPUT.SIZE_DIVISIBILITY,
            "num_classes": cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES,
        }
