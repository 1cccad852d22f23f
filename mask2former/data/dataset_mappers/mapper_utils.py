"""Pieces shared by the dataset mappers: augmentations from the config, reading, padding."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ...config import ConfigError
from ..catalog import MetadataCatalog
from ..detection_utils import MASK_FORMATS, check_image_size, read_image, shortest_edge_resize
from ..transforms import (
    Augmentation,
    ColorAugSSDTransform,
    RandomCrop,
    RandomCrop_CategoryAreaConstraint,
    RandomFlip,
    Transform,
)

IMAGE_PAD_VALUE = 128


def mask_former_augmentations(cfg, *, area_constraint: bool) -> list[Augmentation | Transform]:
    """The MaskFormer training recipe, in the published order: shortest-edge resize, optional
    crop (INPUT.CROP.*; with the single-category area rule when ``area_constraint``, its
    ignored category MODEL.SEM_SEG_HEAD.IGNORE_VALUE), optional SSD colour jitter
    (INPUT.COLOR_AUG_SSD), then a horizontal flip with probability 1/2 (the published
    mappers always flip: INPUT.RANDOM_FLIP is not theirs to read)."""
    augmentations: list[Augmentation | Transform] = [shortest_edge_resize(cfg, True)]
    crop = cfg.INPUT.CROP
    if crop.ENABLED and area_constraint:
        augmentations.append(
            RandomCrop_CategoryAreaConstraint(
                crop.TYPE,
                crop.SIZE,
                crop.SINGLE_CATEGORY_MAX_AREA,
                cfg.MODEL.SEM_SEG_HEAD.IGNORE_VALUE,
            )
        )
    elif crop.ENABLED:
        augmentations.append(RandomCrop(crop.TYPE, crop.SIZE))
    if cfg.INPUT.COLOR_AUG_SSD:
        augmentations.append(ColorAugSSDTransform(img_format=cfg.INPUT.FORMAT))
    augmentations.append(RandomFlip())
    return augmentations


def log_augmentations(mapper: Any, augmentations: Sequence) -> None:
    """Log the augmentations ``mapper`` applies in its mode (detectron2's line), under the
    logger of the mapper's module."""
    mode = "training" if mapper.is_train else "inference"
    logging.getLogger(type(mapper).__module__).info(
        "[%s] augmentations used in %s: %s", type(mapper).__name__, mode, augmentations
    )


class ImageMapperBase:
    """What every image mapper holds: its mode (``is_train``), the augmentations it applies
    and the image format it reads (INPUT.FORMAT); it logs the augmentations (detectron2's
    line)."""

    def __init__(self, is_train: bool, augmentations: Sequence, image_format: str):
        self.is_train = is_train
        self.augmentations = augmentations
        self.image_format = image_format
        log_augmentations(self, augmentations)


def refuse_unread_inputs(cfg, mapper_name: str, expected: Mapping[str, Any]) -> None:
    """Raise a ConfigError naming the key when an INPUT key that ``mapper_name`` does not read
    (as in the published code) is set to anything but the value its behaviour matches.

    ``expected``: dotted key ("INPUT.RANDOM_FLIP") -> the value the mapper behaves as.
    """
    for key, value_expected in expected.items():
        value = cfg
        for part in key.split("."):
            value = getattr(value, part)
        if value != value_expected:
            raise ConfigError(
                f"{key}={value!r} has no effect with INPUT.DATASET_MAPPER_NAME {mapper_name!r} "
                f"(the published mapper does not read it); set it to {value_expected!r}"
            )


def check_mask_format(cfg) -> str:
    """``INPUT.MASK_FORMAT``, "polygon" or "bitmask" (anything else is refused)."""
    if cfg.INPUT.MASK_FORMAT not in MASK_FORMATS:
        raise ConfigError(
            f"INPUT.MASK_FORMAT must be one of {MASK_FORMATS}, got {cfg.INPUT.MASK_FORMAT!r}"
        )
    return cfg.INPUT.MASK_FORMAT


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


def pad_to_square(tensor: torch.Tensor, size: int, value: float) -> torch.Tensor:
    """Pad the last two dims at the right and bottom to ``size`` x ``size`` (a side already
    longer is cut to ``size``), as the published mappers' ``INPUT.SIZE_DIVISIBILITY`` does."""
    h, w = tensor.shape[-2:]
    return F.pad(tensor, [0, size - w, 0, size - h], value=value).contiguous()


def check_is_train(mapper: object, is_train: bool) -> None:
    if not is_train:
        raise ValueError(
            f"{type(mapper).__name__} maps training samples only (is_train=False); evaluation "
            "uses DatasetMapper(cfg, False)"
        )
