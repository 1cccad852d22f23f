"""The test-time mapper: resize the shortest edge, keep the original "height" / "width"."""

from __future__ import annotations

import copy

import numpy as np

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

    def map_image(self, image: np.ndarray) -> dict:
        """The model's input for an (H, W, 3) array already in INPUT.FORMAT: the resized
        "image" (3, H', W') and the original "height" / "width"."""
        aug_input = AugInput(image)
        apply_augmentations([self.resize], aug_input)
        height, width = image.shape[:2]
        return {"image": image_to_tensor(aug_input.image), "height": height, "width": width}

    def __call__(self, dataset_dict: dict) -> dict:
        dataset_dict = copy.deepcopy(dataset_dict)
        mapped = self.map_image(read_checked_image(dataset_dict, self.image_format))
        dataset_dict.setdefault("height", mapped["height"])
        dataset_dict.setdefault("width", mapped["width"])
        dataset_dict["image"] = mapped["image"]
        for key in ("annotations", "sem_seg_file_name", "pan_seg_file_name", "segments_info"):
            dataset_dict.pop(key, None)
        return dataset_dict
