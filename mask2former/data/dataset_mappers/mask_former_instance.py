"""``mask_former_instance``: image + COCO instance annotations -> one mask per instance."""

from __future__ import annotations

import copy

from ...config import configurable
from ..detection_utils import BadSampleError, image_to_tensor, instances_from_annotations
from ..transforms import AugInput, Augmentation, TransformList, apply_augmentations
from .build import register_dataset_mapper
from .mapper_utils import divisibility_padding, mask_former_augmentations, read_checked_image

__all__ = ["MaskFormerInstanceDatasetMapper"]


@register_dataset_mapper("mask_former_instance")
class MaskFormerInstanceDatasetMapper:
    """Instance segmentation training mapper (registered as ``mask_former_instance``).

    Needs "annotations" (polygons or RLE in "segmentation", contiguous "category_id");
    outputs "image" and "instances"; crowd instances and those the augmentations leave
    empty are dropped.
    """

    @configurable
    def __init__(
        self, *, augmentations: list[Augmentation], image_format: str, size_divisibility: int
    ):
        self.augmentations = augmentations
        self.image_format = image_format
        self.size_divisibility = size_divisibility

    @classmethod
    def from_config(cls, cfg) -> dict:
        return {
            "augmentations": mask_former_augmentations(cfg, area_constraint=False),
            "image_format": cfg.INPUT.FORMAT,
            "size_divisibility": cfg.INPUT.SIZE_DIVISIBILITY,
        }

    def __call__(self, dataset_dict: dict) -> dict:
        dataset_dict = copy.deepcopy(dataset_dict)
        file_name = dataset_dict["file_name"]
        if "annotations" not in dataset_dict:
            raise BadSampleError(file_name, "no 'annotations' for instance segmentation")
        image = read_checked_image(dataset_dict, self.image_format)
        aug_input = AugInput(image)
        transforms = apply_augmentations(self.augmentations, aug_input)
        padding = divisibility_padding(aug_input.image.shape[:2], self.size_divisibility, 0)
        aug_input.transform(padding)

        dataset_dict["image"] = image_to_tensor(aug_input.image)
        dataset_dict["instances"] = instances_from_annotations(
            dataset_dict.pop("annotations"),
            TransformList([transforms, padding]),
            image.shape[:2],
            aug_input.image.shape[:2],
            file_name,
        )
        return dataset_dict
