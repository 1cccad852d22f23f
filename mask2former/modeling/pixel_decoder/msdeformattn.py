"""Mask2Former's pixel decoder: a multi-scale deformable-attention encoder plus an FPN level."""

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from mask2former.config import configurable
from mask2former.layers import Conv2d, ShapeSpec, c2_xavier_fill
from mask2former.layers.linear import Linear
from mask2former.ops import MSDeformAttn, deterministic

from ..position_encoding import PositionEmbeddingSine
from ..transformer_blocks import feed_forward, residual, with_pos
from .build import PIXEL_DECODER_REGISTRY
from .fpn import NUM_MULTI_SCALE_LEVELS, fpn_conv, select_features, sorted_features


class MSDeformAttnEncoderLayer(nn.Module):
    """Deformable self-attention then FFN, post-norm (``norm1``, ``norm2``).

    ``forward(src (N, S, C), pos (N, S, C), reference_points (N, S, L, 2), spatial_shapes
    (L, 2) tensor or (h, w) Python ints, level_start_index (L,), padding_mask (N, S) or None,
    level_sizes: with a tensor spatial_shapes, the same (h, w) as Python ints) -> (N, S, C)``.
    """

    def __init__(
        self, d_model: int, d_ffn: int, dropout: float, n_levels: int, n_heads: int, n_points: int
    ):
        super().__init__()
        self.self_attn = MSDeformAttn(d_model, n_levels, n_heads, n_points)
        self.dropout1 = nn.Dropout(dropout)
        self.norm1 = nn.LayerNorm(d_model)
        self.linear1 = Linear(d_model, d_ffn)
        self.dropout2 = nn.Dropout(dropout)
        self.linear2 = Linear(d_ffn, d_model)
        self.dropout3 = nn.Dropout(dropout)
        self.norm2 = nn.LayerNorm(d_model)

    def forward(
        self,
        src: Tensor,
        pos: Tensor,
        reference_points: Tensor,
        spatial_shapes: Tensor | Sequence[tuple[int, int]],
        level_start_index: Tensor,
        padding_mask: Tensor | None = None,
        *,
        level_sizes: Sequence[tuple[int, int]] | None = None,
    ) -> Tensor:
        def attend(y: Tensor) -> Tensor:
            return self.self_attn(
                with_pos(y, pos),
                reference_points,
                y,
                spatial_shapes,
                level_start_index,
                padding_mask,
                input_level_sizes=level_sizes,
            )

        def ffn(y: Tensor) -> Tensor:
            return feed_forward(self.linear1, self.linear2, self.dropout2, y)

        src = residual(src, attend, self.norm1, self.dropout1, normalize_before=False)
        return residual(src, ffn, self.norm2, self.dropout3, normalize_before=False)


def encoder_reference_points(shapes: Sequence[tuple[int, int]], device: torch.device) -> Tensor:
    """Centres of every pixel of every level, in normalised (x, y) coordinates.

    shapes: (h, w) of each level as Python ints (so tracing and export see constants).
    Returns (1, S, L, 2) with S = sum(h * w): for each query pixel its position, the same in
    every level. Deformable DETR divides by each level's unpadded share of the image; the
    published encoder has no padding mask, so every share is 1 and is left out.
    """
    points = []
    for h, w in shapes:
        ref_y, ref_x = torch.meshgrid(
            torch.linspace(0.5, h - 0.5, h, dtype=torch.float32, device=device),
            torch.linspace(0.5, w - 0.5, w, dtype=torch.float32, device=device),
            indexing="ij",
        )
        points.append(torch.stack((ref_x.reshape(-1) / w, ref_y.reshape(-1) / h), -1))
    # (S, 2) -> (1, S, L, 2): the same position seen from every level
    return torch.cat(points)[None, :, None].expand(1, -1, len(shapes), 2)


class MSDeformAttnTransformerEncoderOnly(nn.Module):
    """Deformable DETR's encoder over several levels (keys ``level_embed``, ``encoder.layers.i``).

    ``forward(srcs: list of (N, C, h_l, w_l), pos_embeds: same shapes) -> (memory (N, S, C),
    spatial_shapes (L, 2), level_start_index (L,))``; S = sum over levels of h_l * w_l.
    """

    def __init__(
        self,
        d_model: int,
        nhead: int,
        num_encoder_layers: int,
        dim_feedforward: int,
        dropout: float,
        num_feature_levels: int,
        enc_n_points: int,
    ):
        super().__init__()
        self.d_model = d_model
        self.level_embed = nn.Parameter(torch.empty(num_feature_levels, d_model))
        layers = [
            MSDeformAttnEncoderLayer(
                d_model, dim_feedforward, dropout, num_feature_levels, nhead, enc_n_points
            )
            for _ in range(num_encoder_layers)
        ]
        self.encoder = nn.Module()
        self.encoder.layers = nn.ModuleList(layers)
        self._reset_parameters()

    def _reset_parameters(self) -> None:
        for p in self.parameters():
            if p.dim() > 1:
                nn.init.xavier_uniform_(p)
        for m in self.modules():
            if isinstance(m, MSDeformAttn):
                m._reset_parameters()
        nn.init.normal_(self.level_embed)

    def forward(
        self, srcs: list[Tensor], pos_embeds: list[Tensor]
    ) -> tuple[Tensor, Tensor, Tensor]:
        # Published Mask2Former runs this encoder without a padding mask: every pixel is valid.
        shapes = [tuple(x.shape[-2:]) for x in srcs]
        # (N, C, h, w) -> (N, hw, C) per level, then concatenated over levels
        src_flat = torch.cat([x.flatten(2).transpose(1, 2) for x in srcs], 1)
        pos_flat = torch.cat(
            [
                p.flatten(2).transpose(1, 2) + self.level_embed[lvl].view(1, 1, -1)
                for lvl, p in enumerate(pos_embeds)
            ],
            1,
        )
        spatial_shapes = torch.as_tensor(shapes, dtype=torch.long, device=src_flat.device)
        level_start_index = torch.cat(
            (spatial_shapes.new_zeros((1,)), spatial_shapes.prod(1).cumsum(0)[:-1])
        )
        # (1, S, L, 2) -> (N, S, L, 2)
        reference_points = encoder_reference_points(shapes, src_flat.device).expand(
            src_flat.shape[0], -1, -1, -1
        )
        out = src_flat
        for layer in self.encoder.layers:
            # the level sizes both as tensors (for the kernels) and as Python ints: no layer
            # reads a tensor on the host (a GPU stall), and tracing and export see constants
            out = layer(
                out,
                pos_flat,
                reference_points,
                spatial_shapes,
                level_start_index,
                None,
                level_sizes=shapes,
            )
        return out, spatial_shapes, level_start_index


@PIXEL_DECODER_REGISTRY.register()
class MSDeformAttnPixelDecoder(nn.Module):
    """Deformable encoder on res3-res5, then FPN levels down to the mask-feature stride.

    Keys follow the published model: ``input_proj.i`` (1x1 conv + GroupNorm, coarsest
    level first), ``transformer.*``, ``adapter_i`` / ``layer_i`` for the FPN levels, and a
    1x1 ``mask_features`` conv. ``forward_features(features)`` returns ``(mask_features
    (N, mask_dim, H/4, W/4), encoder output at 1/32 (N, C, H/32, W/32), [3 maps (N, C, h, w),
    1/32 first])``.
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
        conv_dim: int,
        mask_dim: int,
        norm: str,
        transformer_in_features: list[str],
        common_stride: int,
        transformer_n_points: int = 4,
    ):
        super().__init__()
        self.in_features = sorted_features(input_shape, list(input_shape))
        self.transformer_in_features = sorted_features(input_shape, transformer_in_features)
        # Coarsest level first, as the encoder and the transformer decoder see them.
        encoder_channels = [input_shape[f].channels for f in self.transformer_in_features][::-1]
        self.transformer_num_feature_levels = len(encoder_channels)
        self.input_proj = nn.ModuleList(
            self._input_projection(channels, conv_dim) for channels in encoder_channels
        )
        self.transformer = MSDeformAttnTransformerEncoderOnly(
            d_model=conv_dim,
            nhead=transformer_nheads,
            num_encoder_layers=transformer_enc_layers,
            dim_feedforward=transformer_dim_feedforward,
            dropout=transformer_dropout,
            num_feature_levels=self.transformer_num_feature_levels,
            enc_n_points=transformer_n_points,
        )
        self.pe_layer = PositionEmbeddingSine(conv_dim // 2, normalize=True)
        self.mask_dim = mask_dim
        self.mask_features = Conv2d(conv_dim, mask_dim, kernel_size=1, stride=1, padding=0)
        c2_xavier_fill(self.mask_features)
        self.maskformer_num_feature_levels = NUM_MULTI_SCALE_LEVELS
        self.common_stride = common_stride
        self._build_fpn_levels(input_shape, conv_dim, norm)

    @staticmethod
    def _input_projection(in_channels: int, conv_dim: int) -> nn.Sequential:
        proj = nn.Sequential(
            Conv2d(in_channels, conv_dim, kernel_size=1), nn.GroupNorm(32, conv_dim)
        )
        nn.init.xavier_uniform_(proj[0].weight, gain=1)
        nn.init.constant_(proj[0].bias, 0)
        return proj

    def _build_fpn_levels(
        self, input_shape: dict[str, ShapeSpec], conv_dim: int, norm: str
    ) -> None:
        """FPN levels from the finest encoder stride down to ``common_stride`` (res2 for 8 -> 4)."""
        finest_encoder_stride = input_shape[self.transformer_in_features[0]].stride
        self.num_fpn_levels = int(math.log2(finest_encoder_stride) - math.log2(self.common_stride))
        self.lateral_convs = []
        self.output_convs = []
        for idx, name in enumerate(self.in_features[: self.num_fpn_levels]):
            lateral = fpn_conv(input_shape[name].channels, conv_dim, 1, norm, relu=False)
            output = fpn_conv(conv_dim, conv_dim, 3, norm, relu=True)
            self.add_module(f"adapter_{idx + 1}", lateral)
            self.add_module(f"layer_{idx + 1}", output)
            self.lateral_convs.append(lateral)
            self.output_convs.append(output)
        # Top-down order: coarsest FPN level first.
        self.lateral_convs = self.lateral_convs[::-1]
        self.output_convs = self.output_convs[::-1]

    @classmethod
    def from_config(cls, cfg, input_shape: dict[str, ShapeSpec]) -> dict:
        head = cfg.MODEL.SEM_SEG_HEAD
        input_shape = select_features(
            input_shape, head.IN_FEATURES, "MODEL.SEM_SEG_HEAD.IN_FEATURES"
        )
        encoder_in_features = select_features(
            input_shape,
            head.DEFORMABLE_TRANSFORMER_ENCODER_IN_FEATURES,
            "MODEL.SEM_SEG_HEAD.DEFORMABLE_TRANSFORMER_ENCODER_IN_FEATURES",
        )
        # As the official from_config: the encoder's heads are MODEL.MASK_FORMER.NHEADS, its
        # FFN width 1024 and its sampling points 4; the SEM_SEG_HEAD.DEFORMABLE_TRANSFORMER_
        # ENCODER_N_HEADS / _N_POINTS keys are not read (see mask2former.config.supported).
        return {
            "input_shape": input_shape,
            "conv_dim": head.CONVS_DIM,
            "mask_dim": head.MASK_DIM,
            "norm": head.NORM,
            "transformer_dropout": cfg.MODEL.MASK_FORMER.DROPOUT,
            "transformer_nheads": cfg.MODEL.MASK_FORMER.NHEADS,
            "transformer_dim_feedforward": 1024,
            "transformer_enc_layers": head.TRANSFORMER_ENC_LAYERS,
            "transformer_in_features": list(encoder_in_features),
            "common_stride": head.COMMON_STRIDE,
        }

    def forward_features(self, features: dict[str, Tensor]) -> tuple[Tensor, Tensor, list[Tensor]]:
        """As published, training runs the pixel decoder in float32 even under mixed precision;
        inference runs it in the caller's precision (``TEST.PRECISION`` bfloat16 autocasts it)."""
        if not self.training:
            return self._forward_features(features)
        device_type = next(iter(features.values())).device.type
        with torch.autocast(device_type=device_type, enabled=False):
            return self._forward_features({k: v.float() for k, v in features.items()})

    def _forward_features(self, features: dict[str, Tensor]) -> tuple[Tensor, Tensor, list[Tensor]]:
        srcs, pos = [], []
        for idx, name in enumerate(self.transformer_in_features[::-1]):
            x = features[name]
            srcs.append(self.input_proj[idx](x))
            pos.append(self.pe_layer(x))
        memory, _, _ = self.transformer(srcs, pos)
        n = memory.shape[0]
        # (N, S, C) -> one (N, C, h, w) map per level, coarsest first; sizes from the
        # feature maps' shapes, not from a tensor, so tracing and export see constants
        shapes = [tuple(x.shape[-2:]) for x in srcs]
        out = [
            z.transpose(1, 2).reshape(n, -1, h, w)
            for z, (h, w) in zip(torch.split(memory, [h * w for h, w in shapes], dim=1), shapes)
        ]
        for idx, name in enumerate(self.in_features[: self.num_fpn_levels][::-1]):
            lateral = self.lateral_convs[idx](features[name])
            # F.interpolate, or where torch refuses its backward an equal deterministic form.
            # The coarser map is a channels-last view of the encoder's (N, S, C) memory, but
            # with the batch stride of that memory, which sends torch's CPU kernel down a
            # slow path (contiguous() keeps the view when N is 1): copied into a channels-last
            # tensor first, the same numbers come 10x faster (R50 1/8 -> 1/4: 50 -> 5 ms).
            coarser = out[-1].clone(memory_format=torch.channels_last)
            y = lateral + deterministic.interpolate(
                coarser, size=lateral.shape[-2:], mode="bilinear", align_corners=False
            )
            out.append(self.output_convs[idx](y))
        multi_scale_features = out[: self.maskformer_num_feature_levels]
        return self.mask_features(out[-1]), out[0], multi_scale_features

    def forward(self, features: dict[str, Tensor]):
        raise RuntimeError("pixel decoders are called through forward_features(features)")
