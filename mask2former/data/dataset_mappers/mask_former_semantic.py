"""``mask_former_semantic``: image + label map -> one mask per category present."""

from __future__ import annotations

import copy

import numpy as np
import torch

from ...structures import Instances
from ..detection_utils import (
    BadSampleError,
    check_label_size,
    check_label_values,
    image_to_tensor,
    read_label_map,
)
from ..transforms import AugInput, apply_augmentations
from .build import register_dataset_mapper
from .mapper_utils import (
    LabelMapMapperBase,
    divisibility_padding,
    read_checked_image,
)

__all__ = ["MaskFormerSemanticDatasetMapper", "instances_from_semantic"]


def instances_from_semantic(sem_seg: np.ndarray, ignore_label: int) -> Instances:
    """(H, W) label map -> gt_classes (n,) int64 of the categories present, gt_masks (n, H, W)."""
    classes = np.unique(sem_seg)
    classes = classes[classes != ignore_label]
    labels = torch.from_numpy(np.ascontiguousarray(sem_seg))
    instances = Instances(tuple(sem_seg.shape))
    instances.gt_classes = torch.tensor(classes, dtype=torch.int64)
    instances.gt_masks = labels[None] == instances.gt_classes[:, None, None]
    return instances


@register_dataset_mapper("mask_former_semantic")
class MaskFormerSemanticDatasetMapper(LabelMapMapperBase):
    """Semantic segmentation training mapper (registered as ``mask_former_semantic``).

    Needs "sem_seg_file_name"; outputs "image", "sem_seg" (ignore_label in padding) and
    "instances" with one binary mask per category present.
    """

    def __call__(self, dataset_dict: dict) -> dict:
        dataset_dict = copy.deepcopy(dataset_dict)
        file_name = dataset_dict["file_name"]
        if "annotations" in dataset_dict:
            raise BadSampleError(file_name, "a semantic segmentation sample has 'annotations'")
        if "sem_seg_file_name" not in dataset_dict:
            raise BadSampleError(file_name, "no 'sem_seg_file_name' for semantic segmentation")
        image = read_checked_image(dataset_dict, self.image_format)
        label_file = dataset_dict.pop("sem_seg_file_name")
        sem_seg = read_label_map(label_file)
        check_label_size(label_file, sem_seg, file_name, image)
        check_label_values(label_file, sem_seg, self.num_classes, self.ignore_label)

        aug_input = AugInput(image, sem_seg=sem_seg)
        apply_augmentations(self.augmentations, aug_input)
        aug_input.transform(
            divisibility_padding(
                aug_input.image.shape[:2], self.size_divisibility, self.ignore_label
            )
        )
        dataset_dict["image"] = image_to_tensor(aug_input.image)
        dataset_dict["sem_seg"] = torch.from_numpy(aug_input.sem_seg.astype(np.int64))
        dataset_dict["instances"] = instances_from_semantic(aug_input.sem_seg, self.ignore_label)
        return dataset_dict
