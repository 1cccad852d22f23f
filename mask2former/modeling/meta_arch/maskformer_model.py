"""``MaskFormer``: the meta-architecture of MaskFormer and Mask2Former."""

from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from mask2former.config import ConfigError, configurable
from mask2former.structures import ImageList

from ..backbone.build import build_backbone
from ..criterion import build_criterion
from ..heads.build import build_sem_seg_head
from ..postprocessing import (
    instance_inference,
    panoptic_inference,
    panoptic_queries,
    sem_seg_postprocess,
    semantic_inference,
)
from ..postprocessing_low_memory import (
    FullSizeMaskLogits,
    instance_inference_low_memory,
    panoptic_inference_low_memory,
    semantic_inference_low_memory,
)
from ..sliding_window import SlidingWindow, build_sliding_window, sliding_window_inference
from ..video_clips import clip_options_from_config
from .build import META_ARCH_REGISTRY
from .images import normalize_and_pad

#: TEST.PRECISION values: the dtype the forward runs in at inference.
INFERENCE_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def _check_autocast_supported(device: torch.device, dtype: torch.dtype) -> None:
    """Raise where bfloat16 inference would run emulated: a CPU without bfloat16 instructions."""
    if device.type == "cpu" and not torch.ops.mkldnn._is_mkldnn_bf16_supported():
        raise RuntimeError(
            f"TEST.PRECISION {str(dtype).removeprefix('torch.')} on this CPU: it has no bfloat16 "
            "instructions (AVX512-BF16 or AMX), so it would be slower than float32; use float32"
        )


@META_ARCH_REGISTRY.register()
class MaskFormer(nn.Module):
    """Backbone + ``MaskFormerHead`` + set criterion, with semantic/panoptic/instance inference.

    Takes detectron2-format inputs (see ``meta_arch/build.py``). Training returns the
    criterion's weighted losses; inference (in ``inference_precision``, ``TEST.PRECISION``:
    float32, or bfloat16 autocast with float32 post-processing) returns per image, at its
    original size
    ("height", "width" or the input size), the outputs switched on: ``"sem_seg"`` (K, H, W),
    ``"panoptic_seg"`` (id map (H, W) int32, segments_info), ``"instances"``.

    Panoptic inference (and instance inference of a panoptic model) needs ``thing_ids``,
    the contiguous class ids that are things. Modeling knows no dataset, so whoever has the
    metadata passes them: ``build_model(cfg, thing_ids=...)`` or ``MaskFormer(cfg,
    thing_ids=...)``; without them those outputs raise instead of guessing.

    Like the published model, the head sees no padding mask: for a batch whose images
    are padded to different sizes the padding reaches the features (see the tests).
    ``batch_independent`` (``TEST.BATCH_INDEPENDENT``) runs inference on each image alone
    instead, so each result is what the image gives in a batch of one.

    With ``sliding_window`` (``TEST.SLIDING_WINDOW``) inference runs each image tile by tile
    and merges the tiles' ``"sem_seg"`` and ``"panoptic_seg"`` (``modeling/sliding_window.py``);
    each image is run alone then, whatever ``batch_independent`` says, and instances are not
    available.

    ``low_memory_inference`` (False by default; ``DefaultPredictor(cfg, low_memory=True)``
    sets it): the outputs are computed from the full-size mask logits a band of columns (or
    one query) at a time (``postprocessing_low_memory``) instead of from every query's
    full-size logits at once, and instance ``pred_masks`` come back as bool. The numbers are
    the same (see ``FullSizeMaskLogits`` and ``_sigmoid_`` there for the last-bit details);
    the memory drops from several float32 copies of every query's and every (query, class)
    pair's full-size mask to little more than the outputs. Outputs narrower than 128 pixels
    are computed the usual way.
    """

    @configurable
    def __init__(
        self,
        *,
        backbone: nn.Module,
        sem_seg_head: nn.Module,
        criterion: nn.Module | None,
        object_mask_threshold: float,
        overlap_threshold: float,
        size_divisibility: int,
        sem_seg_postprocess_before_inference: bool,
        pixel_mean: Sequence[float],
        pixel_std: Sequence[float],
        semantic_on: bool,
        panoptic_on: bool,
        instance_on: bool,
        test_topk_per_image: int,
        batch_independent: bool = False,
        sliding_window: SlidingWindow | None = None,
        thing_ids: Sequence[int] | None = None,
        low_memory_inference: bool = False,
        inference_precision: str = "float32",
    ):
        super().__init__()
        if inference_precision not in INFERENCE_DTYPES:
            raise ValueError(
                f"TEST.PRECISION must be one of {sorted(INFERENCE_DTYPES)}, "
                f"got {inference_precision!r}"
            )
        self.inference_dtype = INFERENCE_DTYPES[inference_precision]
        self.backbone = backbone
        self.sem_seg_head = sem_seg_head
        self.criterion = criterion
        self.object_mask_threshold = object_mask_threshold
        self.overlap_threshold = overlap_threshold
        # Negative: the backbone's own divisibility; 0: no padding beyond the batch's max size.
        self.size_divisibility = (
            backbone.size_divisibility if size_divisibility < 0 else size_divisibility
        )
        self.sem_seg_postprocess_before_inference = sem_seg_postprocess_before_inference
        self.register_buffer("pixel_mean", torch.tensor(pixel_mean).view(-1, 1, 1), False)
        self.register_buffer("pixel_std", torch.tensor(pixel_std).view(-1, 1, 1), False)
        self.semantic_on = semantic_on
        self.panoptic_on = panoptic_on
        self.instance_on = instance_on
        self.test_topk_per_image = test_topk_per_image
        self.batch_independent = batch_independent
        self.sliding_window = sliding_window
        self.thing_ids = None if thing_ids is None else [int(t) for t in thing_ids]
        self.low_memory_inference = low_memory_inference
        if not (semantic_on or panoptic_on or instance_on):
            raise ValueError(
                "MaskFormer: switch on at least one of SEMANTIC_ON, INSTANCE_ON, PANOPTIC_ON"
            )
        if sliding_window is not None and instance_on:
            raise ValueError(
                "TEST.SLIDING_WINDOW.ENABLED gives sem_seg and panoptic_seg only: set "
                "MODEL.MASK_FORMER.TEST.INSTANCE_ON False (tiles' instances are not merged)"
            )

    @classmethod
    def from_config(cls, cfg) -> dict:
        _refuse_clip_inference(cfg)
        backbone = build_backbone(cfg)
        sem_seg_head = build_sem_seg_head(cfg, backbone.output_shape())
        test = cfg.MODEL.MASK_FORMER.TEST
        return {
            "backbone": backbone,
            "sem_seg_head": sem_seg_head,
            "criterion": build_criterion(cfg),
            "object_mask_threshold": test.OBJECT_MASK_THRESHOLD,
            "overlap_threshold": test.OVERLAP_THRESHOLD,
            "size_divisibility": cfg.MODEL.MASK_FORMER.SIZE_DIVISIBILITY,
            # Panoptic and instance outputs are computed from masks at the original size.
            "sem_seg_postprocess_before_inference": (
                test.SEM_SEG_POSTPROCESSING_BEFORE_INFERENCE or test.PANOPTIC_ON or test.INSTANCE_ON
            ),
            "pixel_mean": cfg.MODEL.PIXEL_MEAN,
            "pixel_std": cfg.MODEL.PIXEL_STD,
            "semantic_on": test.SEMANTIC_ON,
            "instance_on": test.INSTANCE_ON,
            "panoptic_on": test.PANOPTIC_ON,
            "test_topk_per_image": cfg.TEST.DETECTIONS_PER_IMAGE,
            "batch_independent": cfg.TEST.BATCH_INDEPENDENT,
            "sliding_window": build_sliding_window(cfg),
            "inference_precision": cfg.TEST.PRECISION,
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
        images = normalize_and_pad(
            batched_inputs, self.pixel_mean, self.pixel_std, self.size_divisibility
        )
        if self.training:
            outputs = self.sem_seg_head(self.backbone(images.tensor))
            if self.criterion is None:
                raise RuntimeError("MaskFormer was built without a criterion and cannot train")
            targets = self.prepare_targets(batched_inputs, images)
            return self.criterion(outputs, targets)
        return self.inference(self.predict(images.tensor), batched_inputs, images)

    def predict(self, images: Tensor) -> dict:
        """The head's predictions at inference, in ``TEST.PRECISION``; class and mask logits
        come back in float32 for post-processing."""
        if self.inference_dtype == torch.float32:
            return self.sem_seg_head(self.backbone(images))
        _check_autocast_supported(images.device, self.inference_dtype)
        with torch.autocast(images.device.type, dtype=self.inference_dtype):
            outputs = self.sem_seg_head(self.backbone(images))
        return {k: outputs[k].float() for k in ("pred_logits", "pred_masks")}

    def whole_image_inference(self, x: dict) -> dict:
        """One image's outputs, computed on the whole image (padded to its own size)."""
        images = normalize_and_pad([x], self.pixel_mean, self.pixel_std, self.size_divisibility)
        return self.inference(self.predict(images.tensor), [x], images)[0]

    def prepare_targets(self, batched_inputs: list[dict], images: ImageList) -> list[dict]:
        """Per image ``{"labels": (n,), "masks": (n, H_pad, W_pad)}``, masks zero-padded."""
        h_pad, w_pad = images.tensor.shape[-2:]
        targets = []
        for x in batched_inputs:
            if "instances" not in x:
                raise KeyError("MaskFormer training needs 'instances' in every input dict")
            inst = x["instances"].to(self.device)
            masks = inst.gt_masks
            masks = masks.tensor if hasattr(masks, "tensor") else masks
            padded = masks.new_zeros((masks.shape[0], h_pad, w_pad))
            padded[:, : masks.shape[1], : masks.shape[2]] = masks
            targets.append({"labels": inst.gt_classes, "masks": padded})
        return targets

    def inference(self, outputs: dict, batched_inputs: list[dict], images: ImageList) -> list[dict]:
        """Per-image results at the original size (padding cropped before resizing)."""
        padded_size = tuple(images.tensor.shape[-2:])
        results = []
        for mask_cls, mask_pred, x, image_size in zip(
            outputs["pred_logits"], outputs["pred_masks"], batched_inputs, images.image_sizes
        ):
            height = x.get("height", image_size[0])
            width = x.get("width", image_size[1])
            results.append(
                self.inference_single(mask_cls, mask_pred, image_size, height, width, padded_size)
            )
        return results

    def inference_single(
        self,
        mask_cls: Tensor,
        mask_pred: Tensor,
        image_size: tuple[int, int],
        height: int,
        width: int,
        padded_size: tuple[int, int],
    ) -> dict:
        """mask_cls (Q, K+1), mask_pred (Q, h, w) logits of the padded image at the masks'
        stride -> one image's outputs.

        Masks are resized bilinearly to ``padded_size``, then (before inference) cropped and
        resized to (height, width); panoptic inference alone resizes only the queries it
        keeps (each mask is resized on its own, so the results are the same).
        """

        def resize(masks: Tensor, queries_innermost: bool = False) -> Tensor:
            # (q, h, w) -> (q, H_pad, W_pad) -> (q, height, width) before inference
            if len(masks) == 0:  # interpolate refuses an empty batch
                size = (height, width) if self.sem_seg_postprocess_before_inference else padded_size
                return masks.new_zeros((0, *size))
            # the memory layout its readers read fastest (semantic_inference alone: queries
            # innermost); resizing keeps the input's
            layout = torch.channels_last if queries_innermost else torch.contiguous_format
            masks = F.interpolate(
                masks[None].contiguous(memory_format=layout),
                size=padded_size,
                mode="bilinear",
                align_corners=False,
            )[0]
            if self.sem_seg_postprocess_before_inference:
                masks = sem_seg_postprocess(masks, image_size, height, width)
            return masks

        low_memory = self.low_memory_inference and self.sem_seg_postprocess_before_inference
        if low_memory and FullSizeMaskLogits.supports(mask_pred.shape[0], height, width):
            padded = F.interpolate(
                mask_pred[None], size=padded_size, mode="bilinear", align_corners=False
            )[0]
            masks = FullSizeMaskLogits(padded, image_size, height, width)
            return self._postprocess_low_memory(mask_cls.to(padded), masks)

        result = {}
        semantic_only = not (self.panoptic_on or self.instance_on)
        full = resize(mask_pred, semantic_only) if self.semantic_on or self.instance_on else None
        if full is not None and self.sem_seg_postprocess_before_inference:
            mask_cls = mask_cls.to(full)
        if self.semantic_on:
            sem_seg = semantic_inference(mask_cls, full)
            if not self.sem_seg_postprocess_before_inference:
                sem_seg = sem_seg_postprocess(sem_seg, image_size, height, width)
            result["sem_seg"] = sem_seg
        if self.panoptic_on:
            kept = panoptic_queries(mask_cls, self.object_mask_threshold)
            result["panoptic_seg"] = panoptic_inference(
                mask_cls,
                resize(mask_pred[kept]) if full is None else full[kept],
                thing_ids=self._require_thing_ids("panoptic"),
                object_mask_threshold=self.object_mask_threshold,
                overlap_threshold=self.overlap_threshold,
                kept=kept,
            )
        if self.instance_on:
            result["instances"] = instance_inference(
                mask_cls,
                full,
                topk=self.test_topk_per_image,
                thing_ids=self._instance_thing_ids(),
            )
        return result

    def _postprocess_low_memory(self, mask_cls: Tensor, masks: FullSizeMaskLogits) -> dict:
        """The outputs switched on, from the full-size logits computed a few at a time.

        The largest output (instances) is computed first, so that the others' working memory
        comes on top of fewer outputs.
        """
        result = {}
        if self.instance_on:
            result["instances"] = instance_inference_low_memory(
                mask_cls,
                masks,
                topk=self.test_topk_per_image,
                thing_ids=self._instance_thing_ids(),
            )
        if self.panoptic_on:
            result["panoptic_seg"] = panoptic_inference_low_memory(
                mask_cls,
                masks,
                thing_ids=self._require_thing_ids("panoptic"),
                object_mask_threshold=self.object_mask_threshold,
                overlap_threshold=self.overlap_threshold,
            )
        if self.semantic_on:
            result["sem_seg"] = semantic_inference_low_memory(mask_cls, masks)
        order = ("sem_seg", "panoptic_seg", "instances")  # detectron2's order of the keys
        return {key: result[key] for key in order if key in result}

    def _instance_thing_ids(self) -> list[int] | None:
        """The classes instance inference may report: a panoptic model reports only things."""
        return self._require_thing_ids("instance") if self.panoptic_on else None

    def _require_thing_ids(self, task: str) -> list[int]:
        if self.thing_ids is None:
            raise ValueError(
                f"MaskFormer {task} inference needs thing_ids (contiguous ids of thing classes); "
                "build the model with build_model(cfg, thing_ids=...) from the dataset metadata"
            )
        return self.thing_ids


def _refuse_clip_inference(cfg) -> None:
    """Clip-by-clip inference (``MODEL.MASK_FORMER.TEST.CLIP_LENGTH``) is for videos: an image
    model refuses it rather than ignore it (the clip options are checked as for any model)."""
    clip_length, _ = clip_options_from_config(cfg)
    if clip_length != 0:
        raise ConfigError(
            f"MODEL.MASK_FORMER.TEST.CLIP_LENGTH = {clip_length} is not supported by MaskFormer: "
            "clip-by-clip inference is for video models (VideoMaskFormer); it must be 0"
        )
