"""detectron2's default mapper, the one evaluation uses: read, resize, keep the original size."""

from __future__ import annotations

import copy

from ...config import configurable
from ..detection_utils import build_augmentation, image_to_tensor
from ..transforms import AugInput, Augmentation, AugmentationList, Transform
from .mapper_utils import ImageMapperBase, read_checked_image

__all__ = ["DatasetMapper"]


class DatasetMapper(ImageMapperBase):
    """``DatasetMapper(cfg, is_train=False)``: the test-time mapper of every published config.

    Reads the image in INPUT.FORMAT and applies ``augmentations`` (from the config: the
    shortest-edge resize to INPUT.MIN_SIZE_TEST, long side at most INPUT.MAX_SIZE_TEST; 0
    keeps the size). Returns the dict with "image" (3, H', W') uint8 and the original
    "height" / "width", which the model resizes its outputs back to; annotations and label
    files are left out (evaluators read them from the catalog).

    Training goes through the mapper named by INPUT.DATASET_MAPPER_NAME: the MaskFormer
    models need its instance masks, so ``is_train=True`` is refused here.
    """

    @configurable
    def __init__(
        self,
        is_train: bool = False,
        *,
        augmentations: list[Augmentation | Transform],
        image_format: str,
    ):
        if is_train:
            raise ValueError(
                "DatasetMapper(cfg, True): MaskFormer models train on the instance masks of the "
                "mapper named by INPUT.DATASET_MAPPER_NAME (mask_former_semantic, "
                "mask_former_panoptic, mask_former_instance, coco_instance_lsj, "
                "coco_panoptic_lsj, detr_panoptic); build it with build_dataset_mapper(cfg, True)"
            )
        super().__init__(is_train, AugmentationList(augmentations), image_format)

    @classmethod
    def from_config(cls, cfg, is_train: bool = False) -> dict:
        return {
            "is_train": is_train,
            "augmentations": build_augmentation(cfg, is_train),
            "image_format": cfg.INPUT.FORMAT,
        }

    def __call__(self, dataset_dict: dict) -> dict:
        dataset_dict = copy.deepcopy(dataset_dict)
        aug_input = AugInput(read_checked_image(dataset_dict, self.image_format))
        self.augmentations(aug_input)
        dataset_dict["image"] = image_to_tensor(aug_input.image)
        for key in ("annotations", "sem_seg_file_name", "pan_seg_file_name", "segments_info"):
            dataset_dict.pop(key, None)
        return dataset_dict
