"""The test-time mapper: resize the shortest edge, keep the original "height" / "width"."""

from __future__ import annotations

import copy

from ...config import configurable
from ..detection_utils import image_to_tensor
from ..transforms import AugInput, ResizeShortestEdge, apply_augmentations
from .mapper_utils import read_checked_image

__all__ = ["TestDatasetMapper"]


class TestDatasetMapper:
    """Reads and resizes the image (INPUT.MIN_SIZE_TEST, 0: no resize; INPUT.MAX_SIZE_TEST).

    Returns the dict with "image" (3, H', W') uint8 in INPUT.FORMAT and "height" / "width"
    of the original image, which the model resizes its output back to; annotations and
    label files are left out (evaluators read them from the catalog).
    """

    __test__ = False  # not a pytest class

    @configurable
    def __init__(self, *, min_size: int, max_size: int, image_format: str):
        self.resize = ResizeShortestEdge(min_size, max_size, sample_style="choice")
        self.image_format = image_format

    @classmethod
    def from_config(cls, cfg) -> dict:
        return {
            "min_size": cfg.INPUT.MIN_SIZE_TEST,
            "max_size": cfg.INPUT.MAX_SIZE_TEST,
            "image_format": cfg.INPUT.FORMAT,
        }

    def __call__(self, dataset_dict: dict) -> dict:
        dataset_dict = copy.deepcopy(dataset_dict)
        image = read_checked_image(dataset_dict, self.image_format)
        dataset_dict.setdefault("height", image.shape[0])
        dataset_dict.setdefault("width", image.shape[1])
        aug_input = AugInput(image)
        apply_augmentations([self.resize], aug_input)
        dataset_dict["image"] = image_to_tensor(aug_input.image)
        for key in ("annotations", "sem_seg_file_name", "pan_seg_file_name", "segments_info"):
            dataset_dict.pop(key, None)
        return dataset_dict
