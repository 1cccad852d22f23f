"""``MaskFormerHead``: a pixel decoder followed by a transformer decoder ("predictor")."""

from torch import Tensor, nn

from mask2former.config import configurable
from mask2former.layers import ShapeSpec

from ..checkpoint_compat import PixelDecoderHeadLayout
from ..pixel_decoder.build import build_pixel_decoder
from ..transformer_decoder.build import build_transformer_decoder
from .build import SEM_SEG_HEADS_REGISTRY

#: TRANSFORMER_IN_FEATURE values that name a pixel-decoder output, not a backbone feature.
PIXEL_DECODER_OUTPUTS = ("multi_scale_pixel_decoder", "transformer_encoder", "pixel_embedding")


def predictor_in_channels(cfg, input_shape: dict[str, ShapeSpec]) -> int:
    """Channels of the map named by ``MODEL.MASK_FORMER.TRANSFORMER_IN_FEATURE``.

    ``input_shape`` is every backbone output, not only ``SEM_SEG_HEAD.IN_FEATURES``: as in the
    official head, the decoder may read a backbone feature the pixel decoder does not use.
    """
    in_feature = cfg.MODEL.MASK_FORMER.TRANSFORMER_IN_FEATURE
    if in_feature in ("multi_scale_pixel_decoder", "transformer_encoder"):
        return cfg.MODEL.SEM_SEG_HEAD.CONVS_DIM
    if in_feature == "pixel_embedding":
        return cfg.MODEL.SEM_SEG_HEAD.MASK_DIM
    if in_feature not in input_shape:
        raise KeyError(
            f"MODEL.MASK_FORMER.TRANSFORMER_IN_FEATURE = {in_feature!r} is neither a backbone "
            f"feature {sorted(input_shape)} nor one of {PIXEL_DECODER_OUTPUTS}"
        )
    return input_shape[in_feature].channels


def decode_pixels(
    pixel_decoder: nn.Module, in_feature: str, features: dict[str, Tensor]
) -> tuple[Tensor | list[Tensor], Tensor]:
    """Run the pixel decoder: (the transformer decoder's input named by ``in_feature``, the
    mask features (N, mask_dim, H/4, W/4))."""
    mask_features, encoder_features, multi_scale = pixel_decoder.forward_features(features)
    x = predictor_input(in_feature, features, mask_features, encoder_features, multi_scale)
    return x, mask_features


def predictor_input(
    in_feature: str,
    features: dict[str, Tensor],
    mask_features: Tensor,
    encoder_features: Tensor | None,
    multi_scale_features: list[Tensor],
):
    """The transformer decoder's input named by ``in_feature``."""
    if in_feature == "multi_scale_pixel_decoder":
        return multi_scale_features
    if in_feature == "transformer_encoder":
        if encoder_features is None:
            raise ValueError(
                "TRANSFORMER_IN_FEATURE 'transformer_encoder' needs a pixel decoder with a "
                "transformer encoder (TransformerEncoderPixelDecoder or MSDeformAttnPixelDecoder)"
            )
        return encoder_features
    if in_feature == "pixel_embedding":
        return mask_features
    return features[in_feature]


@SEM_SEG_HEADS_REGISTRY.register()
class MaskFormerHead(PixelDecoderHeadLayout, nn.Module):
    """Pixel decoder (``pixel_decoder``) + transformer decoder (``predictor``).

    ``forward(features: {name: (N, C, h, w)}, mask=None, **predictor_kwargs)`` returns the
    predictor's dict: ``{"pred_logits": (N, Q, K+1), "pred_masks": (N, Q, H/4, W/4),
    "aux_outputs": [...]}``. ``predictor_kwargs`` go to the transformer decoder as they are
    (a video decoder takes ``num_frames``; the image decoders take none).
    """

    @configurable
    def __init__(
        self,
        *,
        pixel_decoder: nn.Module,
        transformer_predictor: nn.Module,
        transformer_in_feature: str,
    ):
        super().__init__()
        self.pixel_decoder = pixel_decoder
        self.predictor = transformer_predictor
        self.transformer_in_feature = transformer_in_feature

    @classmethod
    def from_config(cls, cfg, input_shape: dict[str, ShapeSpec]) -> dict:
        return {
            # the pixel decoder keeps the SEM_SEG_HEAD.IN_FEATURES of these
            "pixel_decoder": build_pixel_decoder(cfg, input_shape),
            "transformer_predictor": build_transformer_decoder(
                cfg, predictor_in_channels(cfg, input_shape), mask_classification=True
            ),
            "transformer_in_feature": cfg.MODEL.MASK_FORMER.TRANSFORMER_IN_FEATURE,
        }

    def forward(
        self, features: dict[str, Tensor], mask: Tensor | None = None, **predictor_kwargs: int
    ) -> dict:
        x, mask_features = decode_pixels(self.pixel_decoder, self.transformer_in_feature, features)
        return self.predictor(x, mask_features, mask, **predictor_kwargs)
