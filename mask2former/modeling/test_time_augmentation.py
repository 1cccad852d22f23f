"""Semantic test-time augmentation: multi-scale and flipped inputs, averaged probabilities."""

from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from mask2former.config import configurable


def shortest_edge_size(height: int, width: int, short: int, max_size: int) -> tuple[int, int]:
    """(h, w) with the shorter side ``short`` and the longer at most ``max_size``, as
    detectron2's ``ResizeShortestEdge`` computes it."""
    scale = short / min(height, width)
    new_h, new_w = height * scale, width * scale
    if max(new_h, new_w) > max_size:
        rescale = max_size / max(new_h, new_w)
        new_h, new_w = new_h * rescale, new_w * rescale
    return int(new_h + 0.5), int(new_w + 0.5)


def resize_image(image: Tensor, size: tuple[int, int]) -> Tensor:
    """(C, H, W) image (any dtype, 0-255) resized bilinearly to ``size`` as float."""
    resized = F.interpolate(image[None].float(), size=size, mode="bilinear", align_corners=False)
    return resized[0]


class SemanticSegmentorWithTTA(nn.Module):
    """Wraps a model returning ``"sem_seg"`` (K, H, W) probabilities at the original size.

    Each input image is resized so its shorter side is each of ``min_sizes`` (longer side
    at most ``max_size``), optionally also flipped horizontally; the model's ``"sem_seg"``
    outputs (flipped back) are averaged. ``forward(batched_inputs)`` returns
    ``[{"sem_seg": (K, height, width)}]`` like the wrapped model.
    """

    @configurable
    def __init__(self, model: nn.Module, *, min_sizes: Sequence[int], max_size: int, flip: bool):
        super().__init__()
        if len(min_sizes) == 0:
            raise ValueError(
                "SemanticSegmentorWithTTA needs at least one size in TEST.AUG.MIN_SIZES"
            )
        self.model = model
        self.min_sizes = [int(s) for s in min_sizes]
        self.max_size = max_size
        self.flip = flip

    @classmethod
    def from_config(cls, cfg, model: nn.Module) -> dict:
        return {
            "model": model,
            "min_sizes": cfg.TEST.AUG.MIN_SIZES,
            "max_size": cfg.TEST.AUG.MAX_SIZE,
            "flip": cfg.TEST.AUG.FLIP,
        }

    def augmented_inputs(self, x: dict) -> list[tuple[dict, bool]]:
        """(input dict, flipped) for every size and flip; each keeps the original height/width."""
        image = x["image"]
        height = x.get("height", image.shape[-2])
        width = x.get("width", image.shape[-1])
        inputs = []
        for short in self.min_sizes:
            resized = resize_image(
                image, shortest_edge_size(*image.shape[-2:], short, self.max_size)
            )
            for flipped in (False, True) if self.flip else (False,):
                img = resized.flip(-1) if flipped else resized
                inputs.append(({"image": img, "height": height, "width": width}, flipped))
        return inputs

    @torch.no_grad()
    def forward(self, batched_inputs: list[dict]) -> list[dict]:
        return [self._inference_one(x) for x in batched_inputs]

    def _inference_one(self, x: dict) -> dict:
        total, count = None, 0
        for aug_input, flipped in self.augmented_inputs(x):
            sem_seg = self.model([aug_input])[0]["sem_seg"]
            sem_seg = sem_seg.flip(-1) if flipped else sem_seg
            total = sem_seg if total is None else total + sem_seg
            count += 1
        return {"sem_seg": total / count}
