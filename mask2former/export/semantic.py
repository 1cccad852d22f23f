"""The MaskFormer semantic inference graph, from images to label maps, as one module.

Unlike panoptic and instance inference, semantic inference has no data-dependent shapes,
so the whole of it can be exported: :class:`SemanticLabelsModel` is :class:`LogitsModel`
followed by the semantic post-processing of ``MaskFormer`` and an argmax over classes.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from mask2former.modeling.meta_arch.images import normalize_and_pad
from mask2former.modeling.postprocessing import sem_seg_postprocess, semantic_inference

from .logits import LogitsModel


class SemanticLabelsModel(LogitsModel):
    """Images to semantic label maps, with the post-processing inside the module.

    ``forward(images)``: images (N, 3, h, w) float, 0-255, in ``INPUT.FORMAT`` channel order,
    of any size (the module pads them). Returns labels (N, height, width) int64, where
    ``(height, width)`` is ``output_size`` (default: (h, w)).

    Each image goes the way ``MaskFormer`` inference takes it: normalised and zero-padded to
    the model's size divisibility, backbone and head, masks upsampled to the padded size,
    then per image softmax(class)[..., :-1] x sigmoid(mask) summed over queries, cropped to
    (h, w) and resized bilinearly to (height, width) (the masks before the product when the
    model post-processes before inference, as panoptic and instance models do), and argmax
    over classes. The labels are ``model([{"image": x, "height": height, "width": width}])
    [0]["sem_seg"].argmax(0)`` for each image ``x``.
    """

    REQUIRED = LogitsModel.REQUIRED + ("size_divisibility", "sem_seg_postprocess_before_inference")

    def __init__(self, model: nn.Module, output_size: tuple[int, int] | None = None):
        super().__init__(model)
        if output_size is not None and (len(output_size) != 2 or min(output_size) < 1):
            raise ValueError(f"output_size must be (height, width) >= 1, got {output_size!r}")
        self.output_size = (
            None if output_size is None else (int(output_size[0]), int(output_size[1]))
        )

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        model = self.model
        padded = normalize_and_pad(
            [{"image": x} for x in images],
            model.pixel_mean,
            model.pixel_std,
            model.size_divisibility,
        )
        outputs = model.sem_seg_head(model.backbone(padded.tensor))
        # (N, Q, H_pad / 4, W_pad / 4) -> (N, Q, H_pad, W_pad), as MaskFormer.inference does
        mask_preds = F.interpolate(
            outputs["pred_masks"],
            size=padded.tensor.shape[-2:],
            mode="bilinear",
            align_corners=False,
        )
        labels = [
            self._semantic_scores(mask_cls, mask_pred, image_size).argmax(0)
            for mask_cls, mask_pred, image_size in zip(
                outputs["pred_logits"], mask_preds, padded.image_sizes
            )
        ]
        return torch.stack(labels)

    def _semantic_scores(
        self, mask_cls: Tensor, mask_pred: Tensor, image_size: tuple[int, int]
    ) -> Tensor:
        """mask_cls (Q, K+1), mask_pred (Q, H_pad, W_pad) -> (K, height, width) scores, in the
        order of ``MaskFormer.inference_single``."""
        height, width = self.output_size or image_size
        if not self.model.sem_seg_postprocess_before_inference:
            return sem_seg_postprocess(
                semantic_inference(mask_cls, mask_pred), image_size, height, width
            )
        mask_pred = sem_seg_postprocess(mask_pred, image_size, height, width)
        return semantic_inference(mask_cls, mask_pred)
