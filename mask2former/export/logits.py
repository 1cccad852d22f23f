"""The MaskFormer inference graph up to class and mask logits, as a tensor-in/tensor-out module.

Tracing, ``torch.export``, ONNX and FLOP counting need a module that takes a tensor and
returns tensors; the meta-architecture takes and returns ``list[dict]`` and post-processes
with data-dependent shapes. :class:`LogitsModel` is the part before post-processing.
"""

from __future__ import annotations

import torch
from torch import nn


class LogitsModel(nn.Module):
    """Normalisation, backbone and MaskFormer head of a ``MaskFormer`` model.

    ``forward(images)``: images (N, 3, H, W) float, 0-255, in ``INPUT.FORMAT`` channel order,
    H and W multiples of the model's size divisibility. Returns
    ``(pred_logits (N, Q, K + 1), pred_masks (N, Q, H / 4, W / 4))``.
    """

    #: The attributes of the meta-architecture the module uses.
    REQUIRED: tuple[str, ...] = ("backbone", "sem_seg_head", "pixel_mean", "pixel_std")

    def __init__(self, model: nn.Module):
        super().__init__()
        for name in self.REQUIRED:
            if not hasattr(model, name):
                raise TypeError(
                    f"{type(self).__name__} needs a MaskFormer meta-architecture; "
                    f"{type(model).__name__} has no {name!r}"
                )
        self.model = model

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = (images - self.model.pixel_mean) / self.model.pixel_std
        outputs = self.model.sem_seg_head(self.model.backbone(x))
        return outputs["pred_logits"], outputs["pred_masks"]
