"""``mask_former_semantic``: image + label map -> one mask per category present."""

from __future__ import annotations

import copy

import numpy as np
import torch

from ...config import configurable
from ...structures import Instances
from ..detection_utils import (
    BadSampleError,
    check_label_size,
    check_label_values,
    image_to_tensor,
    read_label_map,
)
from ..transforms import AugInput, Augmentation, Transform, apply_transform_gens
from .build import register_dataset_mapper
from .mapper_utils import (
    IMAGE_PAD_VALUE,
    ImageMapperBase,
    check_is_train,
    ignore_label_from_config,
    mask_former_augmentations,
    pad_to_square,
    read_checked_image,
    refuse_unread_inputs,
)

__all__ = ["MaskFormerSemanticDatasetMapper", "instances_from_semantic"]


def instances_from_semantic(sem_seg: np.ndarray, ignore_label: int) -> Instances:
    """(H, W) label map -> gt_classes (n,) int64 of the categories present (ascending, the
    ignore label left out), gt_masks (n, H, W) bool."""
    classes = np.unique(sem_seg)
    classes = classes[classes != ignore_label]
    labels = torch.from_numpy(np.ascontiguousarray(sem_seg))
    instances = Instances(tuple(sem_seg.shape))
    instances.gt_classes = torch.tensor(classes, dtype=torch.int64)
    instances.gt_masks = labels[None] == instances.gt_classes[:, None, None]
    return instances


@register_dataset_mapper("mask_former_semantic")
class MaskFormerSemanticDatasetMapper(ImageMapperBase):
    """Semantic segmentation training mapper (``INPUT.DATASET_MAPPER_NAME: mask_former_semantic``).

    ``MaskFormerSemanticDatasetMapper(cfg, is_train=True)``. Reads "file_name" and
    "sem_seg_file_name" (its values as stored), applies the augmentations to both (the
    label map moves by nearest neighbour on float64 values, as published), pads image (128)
    and labels (the ignore label) to ``size_divisibility`` square when it is positive, and
    returns "image" (3, H, W) uint8, "sem_seg" (H, W) int64 and "instances" with one binary
    mask per category present.
    """

    @configurable
    def __init__(
        self,
        is_train: bool = True,
        *,
        augmentations: list[Augmentation | Transform],
        image_format: str,
        ignore_label: int,
        size_divisibility: int,
        num_classes: int | None = None,
    ):
        super().__init__(is_train, augmentations, image_format)
        self.ignore_label = ignore_label
        self.size_divisibility = size_divisibility
        self.num_classes = num_classes

    @classmethod
    def from_config(cls, cfg, is_train: bool = True) -> dict:
        refuse_unread_inputs(cfg, "mask_former_semantic", {"INPUT.RANDOM_FLIP": "horizontal"})
        return {
            "is_train": is_train,
            "augmentations": mask_former_augmentations(cfg, area_constraint=True),
            "image_format": cfg.INPUT.FORMAT,
            "ignore_label": ignore_label_from_config(cfg),
            "size_divisibility": cfg.INPUT.SIZE_DIVISIBILITY,
            "num_classes": cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES,
        }

    def read_labels(self, dataset_dict: dict, image: np.ndarray) -> np.ndarray:
        """The sample's label map (H, W) float64, checked against the image and the classes."""
        file_name = dataset_dict["file_name"]
        if "sem_seg_file_name" not in dataset_dict:
            raise BadSampleError(file_name, "no 'sem_seg_file_name' for semantic segmentation")
        label_file = dataset_dict.pop("sem_seg_file_name")
        sem_seg = read_label_map(label_file)
        check_label_size(label_file, sem_seg, file_name, image)
        check_label_values(label_file, sem_seg, self.num_classes, self.ignore_label)
        return sem_seg

    def pad(self, tensor: torch.Tensor, value: float) -> torch.Tensor:
        """``tensor`` padded to ``size_divisibility`` square (unchanged when it is <= 0)."""
        if self.size_divisibility <= 0:
            return tensor
        return pad_to_square(tensor, self.size_divisibility, value)

    def __call__(self, dataset_dict: dict) -> dict:
        check_is_train(self, self.is_train)
        dataset_dict = copy.deepcopy(dataset_dict)
        if "annotations" in dataset_dict:
            raise BadSampleError(
                dataset_dict["file_name"], "a semantic segmentation sample has 'annotations'"
            )
        image = read_checked_image(dataset_dict, self.image_format)
        sem_seg = self.read_labels(dataset_dict, image)
        aug_input, _ = apply_transform_gens(self.augmentations, AugInput(image, sem_seg=sem_seg))

        image = self.pad(image_to_tensor(aug_input.image), IMAGE_PAD_VALUE)
        sem_seg = self.pad(torch.as_tensor(aug_input.sem_seg.astype(np.int64)), self.ignore_label)
        dataset_dict["image"] = image
        dataset_dict["sem_seg"] = sem_seg
        dataset_dict["instances"] = instances_from_semantic(sem_seg.numpy(), self.ignore_label)
        return dataset_dict
