"""``mask_former_instance``: image + COCO instance annotations -> one mask per instance."""

from __future__ import annotations

import copy

import numpy as np
import torch

from ...config import configurable
from ...structures import Instances, polygons_to_bitmask
from ..detection_utils import (
    BadSampleError,
    image_to_tensor,
    transform_instance_annotations,
)
from ..transforms import AugInput, Augmentation, Transform, apply_transform_gens
from .build import register_dataset_mapper
from .mapper_utils import (
    IMAGE_PAD_VALUE,
    ImageMapperBase,
    check_is_train,
    check_mask_format,
    mask_former_augmentations,
    pad_to_square,
    read_checked_image,
    refuse_unread_inputs,
)

__all__ = ["MaskFormerInstanceDatasetMapper"]


@register_dataset_mapper("mask_former_instance")
class MaskFormerInstanceDatasetMapper(ImageMapperBase):
    """Instance segmentation training mapper (``INPUT.DATASET_MAPPER_NAME: mask_former_instance``).

    ``MaskFormerInstanceDatasetMapper(cfg, is_train=True)``: shortest-edge resize, optional
    crop (no area rule), optional SSD colour jitter, horizontal flip; polygons move as points
    and are rasterised at the augmented size, RLE masks move by nearest neighbour. Crowd
    annotations are left out; every other one gives an instance, even one the crop left
    empty (as published). With ``size_divisibility`` > 0 the image (128) and masks (0) are
    padded to that square. Both INPUT.MASK_FORMAT values give the same masks here: every
    mask is rasterised.
    """

    @configurable
    def __init__(
        self,
        is_train: bool = True,
        *,
        augmentations: list[Augmentation | Transform],
        image_format: str,
        size_divisibility: int,
    ):
        super().__init__(is_train, augmentations, image_format)
        self.size_divisibility = size_divisibility

    @classmethod
    def from_config(cls, cfg, is_train: bool = True) -> dict:
        check_mask_format(cfg)
        refuse_unread_inputs(
            cfg,
            "mask_former_instance",
            {"INPUT.RANDOM_FLIP": "horizontal", "INPUT.CROP.SINGLE_CATEGORY_MAX_AREA": 1.0},
        )
        return {
            "is_train": is_train,
            "augmentations": mask_former_augmentations(cfg, area_constraint=False),
            "image_format": cfg.INPUT.FORMAT,
            "size_divisibility": cfg.INPUT.SIZE_DIVISIBILITY,
        }

    def __call__(self, dataset_dict: dict) -> dict:
        check_is_train(self, self.is_train)
        dataset_dict = copy.deepcopy(dataset_dict)
        file_name = dataset_dict["file_name"]
        if "annotations" not in dataset_dict:
            raise BadSampleError(file_name, "no 'annotations' for instance segmentation")
        image = read_checked_image(dataset_dict, self.image_format)
        input_size = image.shape[:2]
        aug_input, transforms = apply_transform_gens(self.augmentations, AugInput(image))
        size = aug_input.image.shape[:2]

        classes, masks = [], []
        for annotation in dataset_dict.pop("annotations"):
            if annotation.get("iscrowd", 0):
                continue
            if "segmentation" not in annotation:
                raise BadSampleError(file_name, f"annotation without 'segmentation': {annotation}")
            moved = transform_instance_annotations(
                annotation, transforms, size, input_size=input_size, file_name=file_name
            )["segmentation"]
            if isinstance(moved, list):
                masks.append(polygons_to_bitmask(moved, *size))
            else:
                masks.append(moved.astype(bool))
            classes.append(int(annotation["category_id"]))

        image = image_to_tensor(aug_input.image)
        mask_tensor = (
            torch.from_numpy(np.stack(masks))
            if masks
            else torch.zeros((0, *size), dtype=torch.bool)
        )
        if self.size_divisibility > 0:
            image = pad_to_square(image, self.size_divisibility, IMAGE_PAD_VALUE)
            mask_tensor = pad_to_square(mask_tensor, self.size_divisibility, 0)
        instances = Instances(tuple(image.shape[-2:]))
        instances.gt_classes = torch.tensor(classes, dtype=torch.int64)
        instances.gt_masks = mask_tensor
        dataset_dict["image"] = image
        dataset_dict["instances"] = instances
        return dataset_dict
