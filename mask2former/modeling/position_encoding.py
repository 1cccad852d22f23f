"""Sine position embeddings (DETR's, as Mask2Former uses them): of a 2-D feature map, and of a
clip of frames over time and space (Mask2Former's video decoder)."""

import math

import torch
from torch import nn


class PositionEmbeddingSine(nn.Module):
    """Fixed sine/cosine embedding of (y, x) pixel positions.

    ``forward(x: (N, C, H, W), mask: (N, H, W) bool or None) -> (N, 2 * num_pos_feats, H, W)``;
    the first ``num_pos_feats`` channels encode y, the rest x. ``mask`` is True on padding;
    with ``normalize`` the cumulative positions are scaled to ``[0, scale]`` over the
    unpadded extent. The module has no parameters.
    """

    def __init__(
        self,
        num_pos_feats: int = 64,
        temperature: float = 10000.0,
        normalize: bool = False,
        scale: float | None = None,
    ):
        super().__init__()
        if scale is not None and not normalize:
            raise ValueError(f"{type(self).__name__}: scale is only used with normalize=True")
        self.num_pos_feats = num_pos_feats
        self.temperature = temperature
        self.normalize = normalize
        self.scale = 2 * math.pi if scale is None else scale

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        if mask is None:
            mask = torch.zeros(
                (x.shape[0], x.shape[2], x.shape[3]), device=x.device, dtype=torch.bool
            )
        not_mask = ~mask
        y_embed = not_mask.cumsum(1, dtype=torch.float32)
        x_embed = not_mask.cumsum(2, dtype=torch.float32)
        if self.normalize:
            eps = 1e-6
            y_embed = y_embed / (y_embed[:, -1:, :] + eps) * self.scale
            x_embed = x_embed / (x_embed[:, :, -1:] + eps) * self.scale
        dim_t = _frequencies(self.num_pos_feats, self.temperature, x.device)
        pos_x = _interleave_sin_cos(x_embed[:, :, :, None] / dim_t)
        pos_y = _interleave_sin_cos(y_embed[:, :, :, None] / dim_t)
        # (N, H, W, 2F) -> (N, 2F, H, W)
        return torch.cat((pos_y, pos_x), dim=3).permute(0, 3, 1, 2)


class PositionEmbeddingSine3D(PositionEmbeddingSine):
    """Fixed sine/cosine embedding of (t, y, x) positions in clips of frames.

    ``forward(x: (N, T, C, H, W), mask: (N, T, H, W) bool or None) -> (N, T, 2 * num_pos_feats,
    H, W)``: each frame's (y, x) embedding (:class:`PositionEmbeddingSine`, channels y then x)
    plus an embedding of the frame index t over all ``2 * num_pos_feats`` channels (sine/cosine
    pairs, frequencies spread over twice as many channels). With ``normalize`` t is scaled to
    ``[0, scale]`` over the unpadded frames, as y and x over the unpadded extent.
    """

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        if x.dim() != 5:
            raise ValueError(f"{type(self).__name__} takes (N, T, C, H, W), got {tuple(x.shape)}")
        n, t, _, h, w = x.shape
        if mask is None:
            mask = torch.zeros((n, t, h, w), device=x.device, dtype=torch.bool)
        # every frame on its own: (N, T, ...) -> (N*T, ...) -> (N, T, 2F, H, W)
        spatial = super().forward(x.flatten(0, 1), mask.flatten(0, 1)).unflatten(0, (n, t))
        t_embed = (~mask).cumsum(1, dtype=torch.float32)
        if self.normalize:
            t_embed = t_embed / (t_embed[:, -1:, :, :] + 1e-6) * self.scale
        dim_t = _frequencies(2 * self.num_pos_feats, self.temperature, x.device)
        # (N, T, H, W, 2F) -> (N, T, 2F, H, W)
        temporal = _interleave_sin_cos(t_embed[..., None] / dim_t).permute(0, 1, 4, 2, 3)
        return spatial + temporal


def _frequencies(num_feats: int, temperature: float, device: torch.device) -> torch.Tensor:
    """(num_feats,) divisors ``temperature ** (2 * (i // 2) / num_feats)``: one per sin/cos pair."""
    dim_t = torch.arange(num_feats, dtype=torch.float32, device=device)
    return temperature ** (2 * torch.div(dim_t, 2, rounding_mode="floor") / num_feats)


def _interleave_sin_cos(angles: torch.Tensor) -> torch.Tensor:
    """(..., F) angles -> (..., F): sin of the even channels, cos of the odd, paired."""
    return torch.stack((angles[..., 0::2].sin(), angles[..., 1::2].cos()), dim=-1).flatten(-2)
