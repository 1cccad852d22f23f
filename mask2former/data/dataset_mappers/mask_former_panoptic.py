"""``mask_former_panoptic``: image + COCO panoptic PNG -> one mask per non-crowd segment."""

from __future__ import annotations

import copy

import numpy as np
import torch

from ...structures import Instances
from ...utils.panoptic_png import rgb2id
from ..detection_utils import (
    BadSampleError,
    check_label_size,
    image_to_tensor,
    read_image,
    semantic_from_panoptic,
)
from ..transforms import AugInput, RandomCrop_CategoryAreaConstraint, apply_transform_gens
from .build import register_dataset_mapper
from .mapper_utils import IMAGE_PAD_VALUE, check_is_train, read_checked_image, refuse_unread_inputs
from .mask_former_semantic import MaskFormerSemanticDatasetMapper

__all__ = ["MaskFormerPanopticDatasetMapper", "instances_from_panoptic"]


def instances_from_panoptic(segment_ids: np.ndarray, segments_info: list[dict]) -> Instances:
    """Panoptic id map (H, W) -> ``Instances`` with one entry per non-crowd segment, in the
    order of ``segments_info``: gt_classes its "category_id", gt_masks (n, H, W) bool (empty
    where the augmentations cropped the segment away, as published)."""
    segments = [s for s in segments_info if not s.get("iscrowd", 0)]
    instances = Instances(tuple(segment_ids.shape))
    instances.gt_classes = torch.tensor([s["category_id"] for s in segments], dtype=torch.int64)
    ids = torch.tensor([s["id"] for s in segments], dtype=torch.int64)
    instances.gt_masks = torch.from_numpy(segment_ids)[None] == ids[:, None, None]
    return instances


def read_panoptic_png(dataset_dict: dict, image: np.ndarray) -> np.ndarray:
    """The sample's panoptic PNG as (H, W, 3) uint8 RGB, checked against the image."""
    file_name = dataset_dict["file_name"]
    if "pan_seg_file_name" not in dataset_dict or "segments_info" not in dataset_dict:
        raise BadSampleError(file_name, "no 'pan_seg_file_name' / 'segments_info' for panoptic")
    pan_file = dataset_dict.pop("pan_seg_file_name")
    pan_colors = read_image(pan_file, "RGB")
    check_label_size(pan_file, pan_colors, file_name, image)
    return pan_colors


@register_dataset_mapper("mask_former_panoptic")
class MaskFormerPanopticDatasetMapper(MaskFormerSemanticDatasetMapper):
    """Panoptic training mapper (``INPUT.DATASET_MAPPER_NAME: mask_former_panoptic``).

    ``MaskFormerPanopticDatasetMapper(cfg, is_train=True)``, with the semantic mapper's
    augmentations. Needs "pan_seg_file_name" and "segments_info" (contiguous "category_id",
    "iscrowd"); the panoptic PNG moves as a segmentation (PIL nearest on its colours) and
    pads with id 0. Returns "image", "instances" (one mask per non-crowd segment) and, when
    the sample has "sem_seg_file_name", "sem_seg". Without one, a crop with the
    single-category area rule is decided on the labels the segments give.
    """

    @classmethod
    def from_config(cls, cfg, is_train: bool = True) -> dict:
        refuse_unread_inputs(cfg, "mask_former_panoptic", {"INPUT.RANDOM_FLIP": "horizontal"})
        return {**super().from_config(cfg, is_train), "is_train": is_train}

    def _crop_needs_labels(self) -> bool:
        return any(
            isinstance(a, RandomCrop_CategoryAreaConstraint) and a.single_category_max_area < 1.0
            for a in self.augmentations
        )

    def __call__(self, dataset_dict: dict) -> dict:
        check_is_train(self, self.is_train)
        dataset_dict = copy.deepcopy(dataset_dict)
        if "annotations" in dataset_dict:
            raise BadSampleError(dataset_dict["file_name"], "a panoptic sample has 'annotations'")
        image = read_checked_image(dataset_dict, self.image_format)
        sem_seg = (
            self.read_labels(dataset_dict, image) if "sem_seg_file_name" in dataset_dict else None
        )
        pan_colors = read_panoptic_png(dataset_dict, image)
        segments_info = dataset_dict["segments_info"]
        crop_labels = sem_seg
        if sem_seg is None and self._crop_needs_labels():
            crop_labels = semantic_from_panoptic(
                rgb2id(pan_colors), segments_info, self.ignore_label
            ).astype(np.float64)

        aug_input, transforms = apply_transform_gens(
            self.augmentations, AugInput(image, sem_seg=crop_labels)
        )
        segment_ids = torch.as_tensor(rgb2id(transforms.apply_segmentation(pan_colors)))
        dataset_dict["image"] = self.pad(image_to_tensor(aug_input.image), IMAGE_PAD_VALUE)
        if sem_seg is not None:
            labels = torch.as_tensor(aug_input.sem_seg.astype(np.int64))
            dataset_dict["sem_seg"] = self.pad(labels, self.ignore_label)
        segment_ids = self.pad(segment_ids.long(), 0).numpy()  # 0: no segment
        dataset_dict["instances"] = instances_from_panoptic(segment_ids, segments_info)
        return dataset_dict
