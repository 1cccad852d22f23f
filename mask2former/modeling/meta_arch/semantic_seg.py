"""``SemanticSegmentor``: backbone + per-pixel head (the MaskFormer per-pixel baselines)."""

from collections.abc import Sequence

import torch
from torch import nn

from mask2former.config import configurable
from mask2former.structures import ImageList

from ..backbone.build import build_backbone
from ..heads.build import build_sem_seg_head
from ..postprocessing import sem_seg_postprocess
from ..sliding_window import SlidingWindow, build_sliding_window, sliding_window_inference
from .build import META_ARCH_REGISTRY
from .images import normalize_and_pad


@META_ARCH_REGISTRY.register()
class SemanticSegmentor(nn.Module):
    """detectron2's semantic segmentor: the head returns per-pixel logits or losses.

    Training needs ``"sem_seg"`` (H, W) long labels per input, padded with the head's
    ``ignore_value``. Inference returns ``{"sem_seg": (K, height, width) logits}`` per image,
    padding cropped before resizing. With ``batch_independent`` (``TEST.BATCH_INDEPENDENT``)
    inference runs on each image alone, padded to its own size, so a result does not depend
    on the other images of the batch. With ``sliding_window`` (``TEST.SLIDING_WINDOW``) each
    image's logits are the mean of its overlapping tiles' (``modeling/sliding_window.py``).
    """

    @configurable
    def __init__(
        self,
        *,
        backbone: nn.Module,
        sem_seg_head: nn.Module,
        pixel_mean: Sequence[float],
        pixel_std: Sequence[float],
        batch_independent: bool = False,
        sliding_window: SlidingWindow | None = None,
    ):
        super().__init__()
        self.backbone = backbone
        self.sem_seg_head = sem_seg_head
        self.register_buffer("pixel_mean", torch.tensor(pixel_mean).view(-1, 1, 1), False)
        self.register_buffer("pixel_std", torch.tensor(pixel_std).view(-1, 1, 1), False)
        self.batch_independent = batch_independent
        self.sliding_window = sliding_window

    @classmethod
    def from_config(cls, cfg) -> dict:
        backbone = build_backbone(cfg)
        return {
            "backbone": backbone,
            "sem_seg_head": build_sem_seg_head(cfg, backbone.output_shape()),
            "pixel_mean": cfg.MODEL.PIXEL_MEAN,
            "pixel_std": cfg.MODEL.PIXEL_STD,
            "batch_independent": cfg.TEST.BATCH_INDEPENDENT,
            "sliding_window": build_sliding_window(cfg),
        }

    @property
    def device(self) -> torch.device:
        return self.pixel_mean.device

    def forward(self, batched_inputs: list[dict]):
        if self.sliding_window is not None and not self.training:
            # each image alone, tile by tile, each tile padded to its own size
            return [
                sliding_window_inference(x, self.sliding_window, self.whole_image_inference)
                for x in batched_inputs
            ]
        if self.batch_independent and not self.training and len(batched_inputs) > 1:
            # each image alone, padded to its own size: no other image's padding reaches it
            return [self.forward([x])[0] for x in batched_inputs]
        divisibility = self.backbone.size_divisibility
        images = normalize_and_pad(batched_inputs, self.pixel_mean, self.pixel_std, divisibility)
        features = self.backbone(images.tensor)
        if self.training:
            if any("sem_seg" not in x for x in batched_inputs):
                raise KeyError("SemanticSegmentor training needs 'sem_seg' in every input dict")
            targets = ImageList.from_tensors(
                [x["sem_seg"].to(self.device) for x in batched_inputs],
                divisibility,
                pad_value=self.sem_seg_head.ignore_value,
            ).tensor
            # The target batch is padded like the images, so both share one size.
            targets = targets[..., : images.tensor.shape[-2], : images.tensor.shape[-1]]
            _, losses = self.sem_seg_head(features, targets.long())
            return losses
        return self.inference(features, batched_inputs, images)

    def whole_image_inference(self, x: dict) -> dict:
        """One image's outputs, computed on the whole image (padded to its own size)."""
        divisibility = self.backbone.size_divisibility
        images = normalize_and_pad([x], self.pixel_mean, self.pixel_std, divisibility)
        return self.inference(self.backbone(images.tensor), [x], images)[0]

    def inference(self, features: dict, batched_inputs: list[dict], images: ImageList) -> list:
        """Per image ``{"sem_seg": (K, height, width) logits}``, padding cropped first."""
        logits, _ = self.sem_seg_head(features)
        return [
            {
                "sem_seg": sem_seg_postprocess(
                    r, size, x.get("height", size[0]), x.get("width", size[1])
                )
            }
            for r, x, size in zip(logits, batched_inputs, images.image_sizes)
        ]
