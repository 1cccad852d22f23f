"""Test-time augmentation inputs: every scale in TEST.AUG.MIN_SIZES, optionally flipped."""

from __future__ import annotations

import copy

import numpy as np
import torch

from ...config import configurable
from ..transforms import (
    NoOpTransform,
    RandomFlip,
    ResizeShortestEdge,
    ResizeTransform,
    apply_transform_gens,
)

__all__ = ["DatasetMapperTTA"]


class DatasetMapperTTA:
    """``DatasetMapperTTA(cfg)``: one mapped input dict -> a list of augmented copies.

    The input's "image" (3, H, W) uint8, as the test mapper made it, is resized again so its
    short side is each of ``min_sizes`` (long side at most ``max_size``; PIL bilinear, as
    detectron2), and with ``flip`` also flipped horizontally. Each copy keeps "height" /
    "width" and gets "transforms": the resize from the original image plus the augmentation.
    """

    @configurable
    def __init__(self, min_sizes: list[int], max_size: int, flip: bool):
        if len(min_sizes) == 0:
            raise ValueError("DatasetMapperTTA needs at least one size in TEST.AUG.MIN_SIZES")
        self.min_sizes = min_sizes
        self.max_size = max_size
        self.flip = flip

    @classmethod
    def from_config(cls, cfg) -> dict:
        return {
            "min_sizes": cfg.TEST.AUG.MIN_SIZES,
            "max_size": cfg.TEST.AUG.MAX_SIZE,
            "flip": cfg.TEST.AUG.FLIP,
        }

    def __call__(self, dataset_dict: dict) -> list[dict]:
        image = dataset_dict["image"].permute(1, 2, 0).numpy()
        shape = image.shape[:2]
        original = (dataset_dict["height"], dataset_dict["width"])
        pre_tfm = ResizeTransform(*original, *shape) if shape != original else NoOpTransform()
        candidates = []
        for min_size in self.min_sizes:
            resize = ResizeShortestEdge(min_size, self.max_size)
            candidates.append([resize])
            if self.flip:
                candidates.append([resize, RandomFlip(prob=1.0)])
        augmented = []
        for augmentations in candidates:
            new_image, transforms = apply_transform_gens(augmentations, np.copy(image))
            copied = copy.deepcopy(dataset_dict)
            copied["image"] = torch.from_numpy(np.ascontiguousarray(new_image.transpose(2, 0, 1)))
            copied["transforms"] = pre_tfm + transforms
            augmented.append(copied)
        return augmented
