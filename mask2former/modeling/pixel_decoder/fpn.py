"""FPN pixel decoders of MaskFormer: ``BasePixelDecoder`` and ``TransformerEncoderPixelDecoder``."""

import logging
from collections.abc import Sequence

from torch import Tensor, nn
from torch.nn import functional as F

from mask2former.config import ConfigError, configurable
from mask2former.layers import Conv2d, ShapeSpec, c2_xavier_fill, get_norm

from ..position_encoding import PositionEmbeddingSine
from ..transformer_blocks import TransformerEncoderOnly
from .build import PIXEL_DECODER_REGISTRY

logger = logging.getLogger(__name__)

#: Feature levels handed to the transformer decoder (1/32, 1/16, 1/8).
NUM_MULTI_SCALE_LEVELS = 3


def sorted_features(input_shape: dict[str, ShapeSpec], in_features: list[str]) -> list[str]:
    """The names of ``in_features`` ordered from the finest stride to the coarsest."""
    missing = [f for f in in_features if f not in input_shape]
    if missing:
        raise KeyError(f"features {missing} are not among the inputs {sorted(input_shape)}")
    return sorted(in_features, key=lambda f: input_shape[f].stride)


def select_features(
    input_shape: dict[str, ShapeSpec], names: Sequence[str], key: str
) -> dict[str, ShapeSpec]:
    """The entries of ``input_shape`` named in ``names`` (the config key ``key``).

    As in the official ``from_config``, a name that is not among the inputs is left out (with
    a warning here); none left raises :class:`ConfigError`.
    """
    unknown = [name for name in names if name not in input_shape]
    if unknown:
        logger.warning(
            "%s names %s, not among the inputs %s: left out, as the official code does",
            key,
            unknown,
            sorted(input_shape),
        )
    selected = {k: v for k, v in input_shape.items() if k in names}
    if not selected:
        raise ConfigError(f"{key} = {list(names)} names none of the inputs {sorted(input_shape)}")
    return selected


def fpn_conv(
    in_channels: int, out_channels: int, kernel_size: int, norm: str, relu: bool
) -> Conv2d:
    """A Conv2d with ``norm`` (no bias when normalised) and optional ReLU, Xavier-filled."""
    conv = Conv2d(
        in_channels,
        out_channels,
        kernel_size=kernel_size,
        padding=kernel_size // 2,
        bias=norm == "",
        norm=get_norm(norm, out_channels),
        activation=F.relu if relu else None,
    )
    c2_xavier_fill(conv)
    return conv


@PIXEL_DECODER_REGISTRY.register()
class BasePixelDecoder(nn.Module):
    """Top-down FPN over the backbone features, with a 3x3 conv to the mask features.

    Per level, coarsest first: ``y = layer_i(adapter_i(x) + upsample(y))`` (the coarsest
    level has no adapter). ``forward_features(features)`` returns ``(mask_features
    (N, mask_dim, H/4, W/4), None, [3 maps (N, conv_dim, h, w), 1/32 first])``.
    """

    @configurable
    def __init__(
        self,
        input_shape: dict[str, ShapeSpec],
        *,
        conv_dim: int,
        mask_dim: int,
        norm: str = "",
    ):
        super().__init__()
        self.in_features = sorted_features(input_shape, list(input_shape))
        self.feature_channels = [input_shape[f].channels for f in self.in_features]
        self.mask_dim = mask_dim
        self.maskformer_num_feature_levels = NUM_MULTI_SCALE_LEVELS
        lateral_convs: list[nn.Module | None] = []
        output_convs: list[nn.Module] = []
        coarsest = len(self.in_features) - 1
        for idx, channels in enumerate(self.feature_channels):
            if idx == coarsest:
                lateral_convs.append(None)
                output_convs.append(fpn_conv(channels, conv_dim, 3, norm, relu=True))
            else:
                lateral_convs.append(fpn_conv(channels, conv_dim, 1, norm, relu=False))
                output_convs.append(fpn_conv(conv_dim, conv_dim, 3, norm, relu=True))
                self.add_module(f"adapter_{idx + 1}", lateral_convs[-1])
            self.add_module(f"layer_{idx + 1}", output_convs[-1])
        # Top-down order: coarsest level first.
        self.lateral_convs = lateral_convs[::-1]
        self.output_convs = output_convs[::-1]
        self.mask_features = Conv2d(conv_dim, mask_dim, kernel_size=3, stride=1, padding=1)
        c2_xavier_fill(self.mask_features)

    @classmethod
    def from_config(cls, cfg, input_shape: dict[str, ShapeSpec]) -> dict:
        in_features = cfg.MODEL.SEM_SEG_HEAD.IN_FEATURES
        return {
            "input_shape": select_features(
                input_shape, in_features, "MODEL.SEM_SEG_HEAD.IN_FEATURES"
            ),
            "conv_dim": cfg.MODEL.SEM_SEG_HEAD.CONVS_DIM,
            "mask_dim": cfg.MODEL.SEM_SEG_HEAD.MASK_DIM,
            "norm": cfg.MODEL.SEM_SEG_HEAD.NORM,
        }

    def _coarsest_level(self, x: Tensor) -> tuple[Tensor, Tensor | None]:
        """The top of the pyramid: (y, transformer encoder features or None)."""
        return self.output_convs[0](x), None

    def forward_features(
        self, features: dict[str, Tensor]
    ) -> tuple[Tensor, Tensor | None, list[Tensor]]:
        multi_scale_features = []
        encoder_features = None
        y = None
        for idx, name in enumerate(self.in_features[::-1]):
            x = features[name]
            if idx == 0:
                y, encoder_features = self._coarsest_level(x)
            else:
                lateral = self.lateral_convs[idx](x)
                y = lateral + F.interpolate(y, size=lateral.shape[-2:], mode="nearest")
                y = self.output_convs[idx](y)
            if len(multi_scale_features) < self.maskformer_num_feature_levels:
                multi_scale_features.append(y)
        return self.mask_features(y), encoder_features, multi_scale_features

    def forward(self, features: dict[str, Tensor]):
        raise RuntimeError("pixel decoders are called through forward_features(features)")


@PIXEL_DECODER_REGISTRY.register()
class TransformerEncoderPixelDecoder(BasePixelDecoder):
    """``BasePixelDecoder`` whose coarsest level first passes a DETR transformer encoder.

    The 1/32 map is projected to ``conv_dim`` (``input_proj``), encoded with sine positions
    (``transformer``), and the encoder output is also returned as the transformer features.
    """

    @configurable
    def __init__(
        self,
        input_shape: dict[str, ShapeSpec],
        *,
        transformer_dropout: float,
        transformer_nheads: int,
        transformer_dim_feedforward: int,
        transformer_enc_layers: int,
        transformer_pre_norm: bool,
        conv_dim: int,
        mask_dim: int,
        norm: str = "",
    ):
        super().__init__(input_shape, conv_dim=conv_dim, mask_dim=mask_dim, norm=norm)
        coarsest = self.in_features[-1]
        self.input_proj = Conv2d(input_shape[coarsest].channels, conv_dim, kernel_size=1)
        c2_xavier_fill(self.input_proj)
        self.transformer = TransformerEncoderOnly(
            d_model=conv_dim,
            nhead=transformer_nheads,
            num_encoder_layers=transformer_enc_layers,
            dim_feedforward=transformer_dim_feedforward,
            dropout=transformer_dropout,
            normalize_before=transformer_pre_norm,
        )
        self.pe_layer = PositionEmbeddingSine(conv_dim // 2, normalize=True)
        # The coarsest output conv now takes the encoder's conv_dim channels. It replaces the
        # one BasePixelDecoder built for the backbone's channels, as the official decoder does:
        # building the same modules in the same order gives the official initial weights under
        # a seed, which building the right conv at once would change.
        name = f"layer_{len(self.in_features)}"
        delattr(self, name)
        output_conv = fpn_conv(conv_dim, conv_dim, 3, norm, relu=True)
        self.add_module(name, output_conv)
        self.output_convs[0] = output_conv

    @classmethod
    def from_config(cls, cfg, input_shape: dict[str, ShapeSpec]) -> dict:
        ret = BasePixelDecoder.from_config(cfg, input_shape)
        ret.update(
            transformer_dropout=cfg.MODEL.MASK_FORMER.DROPOUT,
            transformer_nheads=cfg.MODEL.MASK_FORMER.NHEADS,
            transformer_dim_feedforward=cfg.MODEL.MASK_FORMER.DIM_FEEDFORWARD,
            transformer_enc_layers=cfg.MODEL.SEM_SEG_HEAD.TRANSFORMER_ENC_LAYERS,
            transformer_pre_norm=cfg.MODEL.MASK_FORMER.PRE_NORM,
        )
        return ret

    def _coarsest_level(self, x: Tensor) -> tuple[Tensor, Tensor | None]:
        encoded = self.transformer(self.input_proj(x), None, self.pe_layer(x))
        return self.output_convs[0](encoded), encoded
