"""Large-scale-jitter COCO mappers: ``coco_instance_lsj`` and ``coco_panoptic_lsj``.

Augmentation: flip, resize by a random scale in [INPUT.MIN_SCALE, INPUT.MAX_SCALE] of
INPUT.IMAGE_SIZE, then crop / pad to INPUT.IMAGE_SIZE square (image pad 128). Outputs add
"padding_mask" (H, W) bool, True on padded pixels, and gt_boxes (tight boxes of the masks).
"""

from __future__ import annotations

import copy

import numpy as np
import torch

from ...config import configurable
from ...utils.panoptic_png import rgb2id
from ..detection_utils import (
    BadSampleError,
    add_boxes_from_masks,
    check_label_size,
    image_to_tensor,
    instances_from_annotations,
    instances_from_panoptic,
    read_image,
)
from ..transforms import (
    AugInput,
    Augmentation,
    FixedSizeCrop,
    ResizeScale,
    TransformList,
    apply_augmentations,
)
from .build import register_dataset_mapper
from .mapper_utils import flip_from_config, ignore_label_from_config, read_checked_image

__all__ = ["COCOInstanceLSJDatasetMapper", "COCOPanopticLSJDatasetMapper", "lsj_augmentations"]


def lsj_augmentations(cfg) -> list[Augmentation]:
    size = cfg.INPUT.IMAGE_SIZE
    return flip_from_config(cfg) + [
        ResizeScale(cfg.INPUT.MIN_SCALE, cfg.INPUT.MAX_SCALE, size, size),
        FixedSizeCrop((size, size), seg_pad_value=ignore_label_from_config(cfg)),
    ]


class _LSJMapper:
    @configurable
    def __init__(self, *, augmentations: list[Augmentation], image_format: str):
        self.augmentations = augmentations
        self.image_format = image_format

    @classmethod
    def from_config(cls, cfg) -> dict:
        return {"augmentations": lsj_augmentations(cfg), "image_format": cfg.INPUT.FORMAT}

    def augment(self, dataset_dict: dict) -> tuple[np.ndarray, TransformList]:
        """Read and augment the image; set "image" and "padding_mask"."""
        image = read_checked_image(dataset_dict, self.image_format)
        aug_input = AugInput(image)
        transforms = apply_augmentations(self.augmentations, aug_input)
        valid = transforms.apply_mask(np.ones(image.shape[:2], dtype=np.uint8))
        dataset_dict["image"] = image_to_tensor(aug_input.image)
        dataset_dict["padding_mask"] = torch.from_numpy(valid == 0)
        return image, transforms


@register_dataset_mapper("coco_instance_lsj")
class COCOInstanceLSJDatasetMapper(_LSJMapper):
    """LSJ instance mapper: "annotations" -> instances (gt_classes, gt_masks, gt_boxes)."""

    def __call__(self, dataset_dict: dict) -> dict:
        dataset_dict = copy.deepcopy(dataset_dict)
        file_name = dataset_dict["file_name"]
        if "annotations" not in dataset_dict:
            raise BadSampleError(file_name, "no 'annotations' for instance segmentation")
        image, transforms = self.augment(dataset_dict)
        instances = instances_from_annotations(
            dataset_dict.pop("annotations"),
            transforms,
            image.shape[:2],
            tuple(dataset_dict["image"].shape[-2:]),
            file_name,
        )
        dataset_dict["instances"] = add_boxes_from_masks(instances)
        return dataset_dict


@register_dataset_mapper("coco_panoptic_lsj")
class COCOPanopticLSJDatasetMapper(_LSJMapper):
    """LSJ panoptic mapper: panoptic PNG -> instances (gt_classes, gt_masks, gt_boxes)."""

    def __call__(self, dataset_dict: dict) -> dict:
        dataset_dict = copy.deepcopy(dataset_dict)
        file_name = dataset_dict["file_name"]
        if "pan_seg_file_name" not in dataset_dict or "segments_info" not in dataset_dict:
            raise BadSampleError(file_name, "no 'pan_seg_file_name' / 'segments_info' for panoptic")
        image, transforms = self.augment(dataset_dict)
        pan_file = dataset_dict.pop("pan_seg_file_name")
        pan_colors = read_image(pan_file, "RGB")
        check_label_size(pan_file, pan_colors, file_name, image)
        # Padding of the panoptic map is 0: an id no segment has.
        segment_ids = rgb2id(transforms.apply_mask(pan_colors))
        instances = instances_from_panoptic(segment_ids, dataset_dict["segments_info"])
        dataset_dict["instances"] = add_boxes_from_masks(instances)
        return dataset_dict
