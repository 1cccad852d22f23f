"""Semantic segmentation with test-time augmentation, as the published Mask2Former does it."""

from __future__ import annotations

import copy
from collections.abc import Callable

import numpy as np
import torch
from fvcore.transforms.transform import HFlipTransform
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from ..data.dataset_mappers import DatasetMapperTTA
from ..data.detection_utils import read_image

__all__ = ["SemanticSegmentorWithTTA"]


class SemanticSegmentorWithTTA(nn.Module):
    """``SemanticSegmentorWithTTA(cfg, model, tta_mapper=None, batch_size=1)``.

    Wraps a model that returns "sem_seg" (K, height, width) at the original size. For each
    input, ``tta_mapper`` (default ``DatasetMapperTTA(cfg)``: TEST.AUG.MIN_SIZES, MAX_SIZE,
    FLIP) makes resized and flipped copies of the (already test-resized) image; the model's
    "sem_seg" of each, flipped back where the copy was flipped, is averaged. Inputs without
    "image" are read from "file_name" in INPUT.FORMAT. Returns ``[{"sem_seg": (K, H, W)}]``.
    """

    def __init__(
        self,
        cfg,
        model: nn.Module,
        tta_mapper: Callable[[dict], list[dict]] | None = None,
        batch_size: int = 1,
    ):
        super().__init__()
        if batch_size != 1:
            raise ValueError(
                f"SemanticSegmentorWithTTA: batch_size={batch_size}; the augmented copies run "
                "one at a time, as published (a batch would pad them to one size and change "
                "the result)"
            )
        if isinstance(model, DistributedDataParallel):
            model = model.module
        self.cfg = cfg.clone()
        self.model = model
        self.tta_mapper = DatasetMapperTTA(cfg) if tta_mapper is None else tta_mapper
        self.batch_size = batch_size

    def _with_image(self, dataset_dict: dict) -> dict:
        """A shallow copy with "image" (read if missing) and "height" / "width"."""
        result = copy.copy(dataset_dict)
        if "image" not in result:
            image = read_image(result.pop("file_name"), self.cfg.INPUT.FORMAT)
            result["image"] = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))
        result.setdefault("height", result["image"].shape[1])
        result.setdefault("width", result["image"].shape[2])
        return result

    def forward(self, batched_inputs: list[dict]) -> list[dict]:
        return [self._inference_one_image(self._with_image(x)) for x in batched_inputs]

    def _inference_one_image(self, dataset_dict: dict) -> dict:
        total = None
        augmented = self.tta_mapper(dataset_dict)
        for aug_input in augmented:
            transforms = aug_input.pop("transforms")
            with torch.no_grad():
                sem_seg = self.model([aug_input])[0].pop("sem_seg")
            if any(isinstance(t, HFlipTransform) for t in transforms.transforms):
                sem_seg = sem_seg.flip(dims=[2])
            if total is None:
                total = sem_seg
            else:
                total += sem_seg
        return {"sem_seg": total / len(augmented)}
