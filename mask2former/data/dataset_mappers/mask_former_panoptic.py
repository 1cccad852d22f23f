"""``mask_former_panoptic``: image + COCO panoptic PNG -> one mask per non-crowd segment."""

from __future__ import annotations

import copy

import numpy as np
import torch

from ...utils.panoptic_png import rgb2id
from ..detection_utils import (
    BadSampleError,
    check_label_size,
    check_label_values,
    image_to_tensor,
    instances_from_panoptic,
    read_image,
    read_label_map,
    semantic_from_panoptic,
)
from ..transforms import AugInput, Augmentation, TransformList, apply_augmentations
from .build import register_dataset_mapper
from .mapper_utils import (
    LabelMapMapperBase,
    divisibility_padding,
    read_checked_image,
)

__all__ = ["MaskFormerPanopticDatasetMapper", "read_panoptic_sample"]


def read_panoptic_sample(
    dataset_dict: dict, image_format: str, ignore_label: int, num_classes: int | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(image (H, W, 3), panoptic PNG colours (H, W, 3), label map (H, W) int64) of a sample.

    The label map is "sem_seg_file_name" when the dict has one, otherwise each segment's
    category with ``ignore_label`` where no segment is.
    """
    file_name = dataset_dict["file_name"]
    if "pan_seg_file_name" not in dataset_dict or "segments_info" not in dataset_dict:
        raise BadSampleError(file_name, "no 'pan_seg_file_name' / 'segments_info' for panoptic")
    image = read_checked_image(dataset_dict, image_format)
    pan_file = dataset_dict.pop("pan_seg_file_name")
    pan_colors = read_image(pan_file, "RGB")
    check_label_size(pan_file, pan_colors, file_name, image)
    if "sem_seg_file_name" in dataset_dict:
        label_file = dataset_dict.pop("sem_seg_file_name")
        sem_seg = read_label_map(label_file)
        check_label_size(label_file, sem_seg, file_name, image)
        check_label_values(label_file, sem_seg, num_classes, ignore_label)
    else:
        segments = dataset_dict["segments_info"]
        sem_seg = semantic_from_panoptic(rgb2id(pan_colors), segments, ignore_label)
    return image, pan_colors, sem_seg


@register_dataset_mapper("mask_former_panoptic")
class MaskFormerPanopticDatasetMapper(LabelMapMapperBase):
    """Panoptic training mapper (registered as ``mask_former_panoptic``).

    Needs "pan_seg_file_name" and "segments_info" (contiguous "category_id", "iscrowd");
    outputs "image", "sem_seg" and "instances" (one mask per non-crowd segment left
    non-empty by the augmentations). Pixels of no segment and padding are ``ignore_label``
    in "sem_seg".
    """

    def sample_augmentations(self) -> list[Augmentation]:
        return self.augmentations

    def __call__(self, dataset_dict: dict) -> dict:
        dataset_dict = copy.deepcopy(dataset_dict)
        image, pan_colors, sem_seg = read_panoptic_sample(
            dataset_dict, self.image_format, self.ignore_label, self.num_classes
        )
        aug_input = AugInput(image, sem_seg=sem_seg)
        transforms = apply_augmentations(self.sample_augmentations(), aug_input)
        padding = divisibility_padding(
            aug_input.image.shape[:2], self.size_divisibility, self.ignore_label
        )
        aug_input.transform(padding)
        # Padding of the panoptic map is 0: an id no segment has.
        segment_ids = rgb2id(TransformList([transforms, padding]).apply_mask(pan_colors))

        dataset_dict["image"] = image_to_tensor(aug_input.image)
        dataset_dict["sem_seg"] = torch.from_numpy(aug_input.sem_seg.astype(np.int64))
        dataset_dict["instances"] = instances_from_panoptic(
            segment_ids, dataset_dict["segments_info"]
        )
        return dataset_dict
