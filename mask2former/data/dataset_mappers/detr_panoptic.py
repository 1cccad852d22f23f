"""``detr_panoptic`` (MaskFormer v1 COCO panoptic): DETR's resize-or-crop augmentation."""

from __future__ import annotations

import copy
import logging

import numpy as np

from ...config import configurable
from ...utils.panoptic_png import rgb2id
from ..detection_utils import image_to_tensor, shortest_edge_resize
from ..transforms import (
    Augmentation,
    RandomCrop,
    RandomFlip,
    ResizeShortestEdge,
    apply_transform_gens,
)
from .build import register_dataset_mapper
from .mapper_utils import read_checked_image, refuse_unread_inputs
from .mask_former_panoptic import instances_from_panoptic, read_panoptic_png

__all__ = ["DETRPanopticDatasetMapper"]

logger = logging.getLogger(__name__)

# DETR's intermediate resize before its random crop.
DETR_CROP_PRE_RESIZE = (400, 500, 600)


@register_dataset_mapper("detr_panoptic")
class DETRPanopticDatasetMapper:
    """MaskFormer v1's COCO panoptic mapper (``INPUT.DATASET_MAPPER_NAME: detr_panoptic``).

    ``DETRPanopticDatasetMapper(cfg, is_train=True)``. Training: a horizontal flip, then
    (with INPUT.CROP.ENABLED, half of the time) a resize to a short side of 400/500/600 and a
    random crop, then the shortest-edge resize; "instances" has one mask per non-crowd
    segment. Test (``is_train=False``): the test resize, the image only.
    """

    @configurable
    def __init__(
        self,
        is_train: bool = True,
        *,
        crop_gen: list[Augmentation] | None,
        tfm_gens: list[Augmentation],
        image_format: str,
    ):
        self.is_train = is_train
        self.crop_gen = crop_gen
        self.tfm_gens = tfm_gens
        self.image_format = image_format
        logger.info("[%s] augmentations: %s, crop: %s", type(self).__name__, tfm_gens, crop_gen)

    @classmethod
    def from_config(cls, cfg, is_train: bool = True) -> dict:
        refuse_unread_inputs(
            cfg,
            "detr_panoptic",
            {
                "INPUT.RANDOM_FLIP": "horizontal",
                "INPUT.COLOR_AUG_SSD": False,
                "INPUT.CROP.SINGLE_CATEGORY_MAX_AREA": 1.0,
            },
        )
        crop_gen = None
        if cfg.INPUT.CROP.ENABLED and is_train:
            crop_gen = [
                ResizeShortestEdge(DETR_CROP_PRE_RESIZE, sample_style="choice"),
                RandomCrop(cfg.INPUT.CROP.TYPE, cfg.INPUT.CROP.SIZE),
            ]
        return {
            "is_train": is_train,
            "crop_gen": crop_gen,
            "tfm_gens": ([RandomFlip()] if is_train else [])
            + [shortest_edge_resize(cfg, is_train)],
            "image_format": cfg.INPUT.FORMAT,
        }

    def sample_augmentations(self) -> list[Augmentation]:
        """The full list, or (half of the time when cropping) the crop before the resize."""
        if self.crop_gen is None or np.random.rand() > 0.5:
            return self.tfm_gens
        return self.tfm_gens[:-1] + self.crop_gen + self.tfm_gens[-1:]

    def __call__(self, dataset_dict: dict) -> dict:
        dataset_dict = copy.deepcopy(dataset_dict)
        image = read_checked_image(dataset_dict, self.image_format)
        augmented, transforms = apply_transform_gens(self.sample_augmentations(), image)
        dataset_dict["image"] = image_to_tensor(augmented)
        if not self.is_train:
            dataset_dict.pop("annotations", None)
            return dataset_dict
        pan_colors = read_panoptic_png(dataset_dict, image)
        segment_ids = rgb2id(transforms.apply_segmentation(pan_colors))
        dataset_dict["instances"] = instances_from_panoptic(
            segment_ids, dataset_dict["segments_info"]
        )
        return dataset_dict
