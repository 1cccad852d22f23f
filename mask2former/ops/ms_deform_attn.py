"""The multi-scale deformable attention module (Deformable DETR), as used by the pixel decoder."""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mask2former.layers.linear import Linear

from .ms_deform_attn_func import ms_deform_attn

__all__ = ["MSDeformAttn"]


class MSDeformAttn(nn.Module):
    """Each query attends to ``n_points`` sampled points per head and level around its reference
    point. Parameter names and initialisation follow the published implementation, so its
    checkpoints load unchanged: ``sampling_offsets``, ``attention_weights``, ``value_proj``,
    ``output_proj`` (all ``nn.Linear``; :class:`~mask2former.layers.linear.Linear` computes them).
    """

    def __init__(
        self, d_model: int = 256, n_levels: int = 4, n_heads: int = 8, n_points: int = 4
    ) -> None:
        super().__init__()
        if d_model % n_heads != 0:
            raise ValueError(f"d_model ({d_model}) must be divisible by n_heads ({n_heads})")
        head_dim = d_model // n_heads
        if head_dim & (head_dim - 1) != 0:
            warnings.warn(
                f"MSDeformAttn: channels per head ({head_dim}) is not a power of 2; the CUDA "
                "kernel is most efficient when it is"
            )
        self.d_model = d_model
        self.n_levels = n_levels
        self.n_heads = n_heads
        self.n_points = n_points
        self.sampling_offsets = Linear(d_model, n_heads * n_levels * n_points * 2)
        self.attention_weights = Linear(d_model, n_heads * n_levels * n_points)
        self.value_proj = Linear(d_model, d_model)
        self.output_proj = Linear(d_model, d_model)
        self._reset_parameters()

    def _reset_parameters(self) -> None:
        nn.init.constant_(self.sampling_offsets.weight, 0.0)
        # head h starts its points on a ray at angle 2*pi*h/M, point k at distance k+1 (in
        # units of the level's pixel after normalising the direction's larger component to 1)
        thetas = torch.arange(self.n_heads, dtype=torch.float32) * (2.0 * math.pi / self.n_heads)
        grid = torch.stack([thetas.cos(), thetas.sin()], -1)
        grid = grid / grid.abs().max(-1, keepdim=True)[0]
        grid = grid.view(self.n_heads, 1, 1, 2).repeat(1, self.n_levels, self.n_points, 1)
        grid = grid * torch.arange(1, self.n_points + 1, dtype=torch.float32).view(1, 1, -1, 1)
        with torch.no_grad():
            self.sampling_offsets.bias.copy_(grid.flatten())
        nn.init.constant_(self.attention_weights.weight, 0.0)
        nn.init.constant_(self.attention_weights.bias, 0.0)
        nn.init.xavier_uniform_(self.value_proj.weight)
        nn.init.constant_(self.value_proj.bias, 0.0)
        nn.init.xavier_uniform_(self.output_proj.weight)
        nn.init.constant_(self.output_proj.bias, 0.0)

    def forward(
        self,
        query: Tensor,
        reference_points: Tensor,
        input_flatten: Tensor,
        input_spatial_shapes: Tensor | Sequence[Sequence[int]],
        input_level_start_index: Tensor,
        input_padding_mask: Tensor | None = None,
        *,
        input_level_sizes: Sequence[tuple[int, int]] | None = None,
    ) -> Tensor:
        """
        Args:
            query: (N, Lq, C)
            reference_points: (N, Lq, L, 2) as (x, y) in [0, 1], or (N, Lq, L, 4) as boxes
                (cx, cy, w, h) whose size scales the offsets
            input_flatten: (N, S, C), the levels flattened and concatenated
            input_spatial_shapes: (L, 2) int64, (H_l, W_l); or those sizes as Python ints,
                which keeps the graph free of data-dependent reads (export)
            input_level_start_index: (L,) int64
            input_padding_mask: (N, S) bool, True at padding (its values are zeroed)
            input_level_sizes: with ``input_spatial_shapes`` a tensor, the same (H_l, W_l) as
                Python ints: then no tensor is read on the host (see :func:`ms_deform_attn`)
        Returns:
            (N, Lq, C)
        """
        n, lq, _ = query.shape
        _, s, _ = input_flatten.shape
        value = self.value_proj(input_flatten)
        if input_padding_mask is not None:
            value = value.masked_fill(input_padding_mask[..., None], 0.0)
        value = value.view(n, s, self.n_heads, self.d_model // self.n_heads)
        offsets = self.sampling_offsets(query).view(
            n, lq, self.n_heads, self.n_levels, self.n_points, 2
        )
        # softmax over the L*P samples of each head
        weights = self.attention_weights(query).view(n, lq, self.n_heads, -1)
        weights = F.softmax(weights, -1).view(n, lq, self.n_heads, self.n_levels, self.n_points)
        locations = self._sampling_locations(reference_points, offsets, input_spatial_shapes)
        output = ms_deform_attn(
            value,
            input_spatial_shapes,
            input_level_start_index,
            locations,
            weights,
            level_sizes=input_level_sizes,
        )
        return self.output_proj(output)

    def _sampling_locations(
        self,
        reference_points: Tensor,
        offsets: Tensor,
        spatial_shapes: Tensor | Sequence[Sequence[int]],
    ) -> Tensor:
        """(N, Lq, M, L, P, 2) locations from reference points (N, Lq, L, 2|4) and offsets."""
        if not isinstance(spatial_shapes, Tensor):
            spatial_shapes = torch.as_tensor(spatial_shapes, device=offsets.device)
        if reference_points.shape[-1] == 2:
            # offsets are in pixels of each level: divide by (W_l, H_l). Computed as
            # (N * Lq, M, L, P * 2) / (L, P * 2) + (N * Lq, 1, L, P * 2): the same numbers as
            # broadcasting over the 6-d shape, whose inner dims of 1 and 2 make it 20x slower.
            n, lq, m, levels, points, _ = offsets.shape
            normalizer = torch.stack([spatial_shapes[..., 1], spatial_shapes[..., 0]], -1)
            scale = normalizer[:, None, :].expand(levels, points, 2).reshape(levels, points * 2)
            reference = reference_points[:, :, None, :, None, :].expand(n, lq, 1, levels, points, 2)
            locations = offsets.reshape(n * lq, m, levels, points * 2) / scale
            locations += reference.reshape(n * lq, 1, levels, points * 2)
            return locations.view(n, lq, m, levels, points, 2)
        if reference_points.shape[-1] == 4:
            # offsets are in units of half the box size divided by the number of points
            return (
                reference_points[:, :, None, :, None, :2]
                + offsets / self.n_points * reference_points[:, :, None, :, None, 2:] * 0.5
            )
        raise ValueError(
            "MSDeformAttn: reference_points must end in 2 or 4 coordinates, got shape "
            f"{tuple(reference_points.shape)}"
        )
