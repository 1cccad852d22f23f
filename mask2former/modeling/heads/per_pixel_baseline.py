"""MaskFormer's per-pixel classification baselines (``SemanticSegmentor`` heads)."""

from torch import Tensor, nn
from torch.nn import functional as F

from mask2former.config import ConfigError, configurable
from mask2former.layers import Conv2d, ShapeSpec, c2_msra_fill
from mask2former.ops import deterministic

from ..checkpoint_compat import PixelDecoderHeadLayout
from ..pixel_decoder.build import build_pixel_decoder
from ..transformer_decoder import StandardTransformerDecoder
from .build import SEM_SEG_HEADS_REGISTRY
from .mask_former_head import decode_pixels, predictor_in_channels


def per_pixel_cross_entropy(logits: Tensor, targets: Tensor, ignore_value: int) -> Tensor:
    """Mean cross-entropy of (N, K, h, w) logits upsampled bilinearly to (N, H, W) labels.

    Returns 0 (with a gradient path) when every pixel is ignored. Deterministic mode on CUDA
    takes the deterministic forms of :mod:`mask2former.ops.deterministic`.
    """
    logits = deterministic.interpolate(
        logits, size=targets.shape[-2:], mode="bilinear", align_corners=False
    )
    if bool((targets == ignore_value).all()):
        return logits.sum() * 0.0
    return deterministic.cross_entropy(logits, targets, ignore_index=ignore_value)


@SEM_SEG_HEADS_REGISTRY.register()
class PerPixelBaselineHead(PixelDecoderHeadLayout, nn.Module):
    """Pixel decoder, then a 1x1 conv (``predictor``) to per-pixel class logits.

    ``forward(features, targets (N, H, W) long or None)`` returns ``(logits (N, K, H/4*4,
    W/4*4) upsampled by the common stride, {})`` at inference and ``(None, {"loss_sem_seg":
    weighted cross-entropy})`` in training.
    """

    @configurable
    def __init__(
        self,
        *,
        num_classes: int,
        pixel_decoder: nn.Module,
        loss_weight: float = 1.0,
        ignore_value: int = -1,
        common_stride: int = 4,
    ):
        super().__init__()
        self.ignore_value = ignore_value
        self.common_stride = common_stride
        self.loss_weight = loss_weight
        self.pixel_decoder = pixel_decoder
        self.predictor = Conv2d(pixel_decoder.mask_dim, num_classes, kernel_size=1)
        c2_msra_fill(self.predictor)

    @classmethod
    def from_config(cls, cfg, input_shape: dict[str, ShapeSpec]) -> dict:
        head = cfg.MODEL.SEM_SEG_HEAD
        return {
            "num_classes": head.NUM_CLASSES,
            "pixel_decoder": build_pixel_decoder(cfg, input_shape),
            "loss_weight": head.LOSS_WEIGHT,
            "ignore_value": head.IGNORE_VALUE,
            # Published MaskFormer fixes the baselines' output stride at 4.
            "common_stride": 4,
        }

    def layers(self, features: dict[str, Tensor]) -> tuple[Tensor, list[dict]]:
        """Per-pixel logits (N, K, H/4, W/4) and auxiliary predictions (none here)."""
        mask_features, _, _ = self.pixel_decoder.forward_features(features)
        return self.predictor(mask_features), []

    def forward(self, features: dict[str, Tensor], targets: Tensor | None = None):
        x, aux = self.layers(features)
        if not self.training:
            upsampled = F.interpolate(
                x, scale_factor=self.common_stride, mode="bilinear", align_corners=False
            )
            return upsampled, {}
        if targets is None:
            raise ValueError(f"{type(self).__name__} needs targets in training mode")
        losses = {"loss_sem_seg": per_pixel_cross_entropy(x, targets, self.ignore_value)}
        for i, aux_output in enumerate(aux):
            losses[f"loss_sem_seg_{i}"] = per_pixel_cross_entropy(
                aux_output["pred_masks"], targets, self.ignore_value
            )
        return None, {k: v * self.loss_weight for k, v in losses.items()}


@SEM_SEG_HEADS_REGISTRY.register()
class PerPixelBaselinePlusHead(PerPixelBaselineHead):
    """Per-pixel baseline whose classifier is a transformer decoder without class heads.

    The decoder (always a ``StandardTransformerDecoder``, as published) has
    ``NUM_OBJECT_QUERIES`` (= number of classes) queries; its mask logits (N, K, H/4, W/4) are
    the per-pixel class logits, and with deep supervision every earlier layer's masks get a
    loss too (``loss_sem_seg_i``).
    """

    @configurable
    def __init__(
        self,
        *,
        num_classes: int,
        pixel_decoder: nn.Module,
        transformer_predictor: nn.Module,
        transformer_in_feature: str,
        deep_supervision: bool,
        loss_weight: float = 1.0,
        ignore_value: int = -1,
        common_stride: int = 4,
    ):
        super().__init__(
            num_classes=num_classes,
            pixel_decoder=pixel_decoder,
            loss_weight=loss_weight,
            ignore_value=ignore_value,
            common_stride=common_stride,
        )
        if transformer_predictor.num_queries != num_classes:
            raise ValueError(
                f"PerPixelBaselinePlusHead: MODEL.MASK_FORMER.NUM_OBJECT_QUERIES "
                f"({transformer_predictor.num_queries}) must equal NUM_CLASSES ({num_classes})"
            )
        # Replaces the conv the base built, as the official head does: building and initialising
        # the same modules in the same order keeps the random stream, and with it everything a
        # seed decides after the model is built (dropout, data-loader seeds), as officially.
        self.predictor = transformer_predictor
        self.transformer_in_feature = transformer_in_feature
        self.deep_supervision = deep_supervision

    @classmethod
    def from_config(cls, cfg, input_shape: dict[str, ShapeSpec]) -> dict:
        ret = PerPixelBaselineHead.from_config(cfg, input_shape)
        in_feature = cfg.MODEL.MASK_FORMER.TRANSFORMER_IN_FEATURE
        if in_feature in ("multi_scale_pixel_decoder", "pixel_embedding"):
            # the official head looks these up among the backbone features and fails too
            raise ConfigError(
                f"MODEL.MASK_FORMER.TRANSFORMER_IN_FEATURE = {in_feature!r} is not supported by "
                "PerPixelBaselinePlusHead: use 'transformer_encoder' or a backbone feature"
            )
        # As officially, always MaskFormer's decoder: MODEL.MASK_FORMER.TRANSFORMER_DECODER_NAME
        # is not read by this head.
        ret["transformer_predictor"] = StandardTransformerDecoder(
            cfg, predictor_in_channels(cfg, input_shape), mask_classification=False
        )
        ret["transformer_in_feature"] = cfg.MODEL.MASK_FORMER.TRANSFORMER_IN_FEATURE
        ret["deep_supervision"] = cfg.MODEL.MASK_FORMER.DEEP_SUPERVISION
        return ret

    def layers(self, features: dict[str, Tensor]) -> tuple[Tensor, list[dict]]:
        x, mask_features = decode_pixels(self.pixel_decoder, self.transformer_in_feature, features)
        predictions = self.predictor(x, mask_features)
        aux = predictions.get("aux_outputs", []) if self.deep_supervision else []
        return predictions["pred_masks"], aux
