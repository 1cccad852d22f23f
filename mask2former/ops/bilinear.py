"""Bilinear sampling by explicit corner gathers, and its backward, deterministic on every device.

The sampling is that of ``F.grid_sample(mode="bilinear", padding_mode="zeros",
align_corners=False)`` and of the kernels in ``ops/``: pixel centres at ``(i + 0.5) / size``,
zero outside. It is written with ``gather`` and ``index_add_``, which have deterministic CUDA
implementations under ``torch.use_deterministic_algorithms(True)``; grid_sample's CUDA backward
has none and raises there. The deformable-attention reference uses these functions in
deterministic mode only: grid_sample is faster.

Shapes::

    value:  (B, D, H, W)
    loc:    (B, K, 2)    (x, y) in [0, 1] of the image (may leave it)
    output: (B, D, K)
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

__all__ = ["Corners", "bilinear_corners", "sample", "sample_backward"]


class Corners(NamedTuple):
    """The four corners (y0, x0), (y0, x1), (y1, x0), (y1, x1) of each location."""

    index: Tensor  # (B, 4, K) int64 y * W + x, 0 for a corner outside the image
    weight: Tensor  # (B, 4, K) bilinear weight, 0 for a corner outside the image
    inside: Tensor  # (B, 4, K) bool
    fx: Tensor  # (B, K) fractional offsets from (x0, y0)
    fy: Tensor  # (B, K)


def bilinear_corners(loc: Tensor, height: int, width: int) -> Corners:
    """Corners of ``loc`` (B, K, 2) on a ``height`` x ``width`` image; differentiable in the
    weights (``floor`` has zero gradient). A NaN location has no corner inside."""
    x = loc[..., 0] * width - 0.5
    y = loc[..., 1] * height - 0.5
    x0, y0 = x.floor(), y.floor()
    fx, fy = x - x0, y - y0
    xs = torch.stack([x0, x0 + 1, x0, x0 + 1], dim=1)
    ys = torch.stack([y0, y0, y0 + 1, y0 + 1], dim=1)
    inside = (xs >= 0) & (xs < width) & (ys >= 0) & (ys < height)
    weight = torch.stack([(1 - fx) * (1 - fy), fx * (1 - fy), (1 - fx) * fy, fx * fy], dim=1)
    weight = torch.where(inside, weight, torch.zeros_like(weight))
    index = torch.where(inside, ys * width + xs, torch.zeros_like(xs)).long()
    return Corners(index, weight, inside, fx, fy)


def _gather_corners(value: Tensor, corners: Corners) -> list[Tensor]:
    """The four corner values, (B, D, K) each, zero outside the image."""
    b, d, h, w = value.shape
    flat = value.reshape(b, d, h * w)
    gathered = []
    for k in range(4):
        index = corners.index[:, k].unsqueeze(1).expand(b, d, -1)
        inside = corners.inside[:, k].unsqueeze(1)
        gathered.append(flat.gather(2, index) * inside)
    return gathered


def sample(value: Tensor, loc: Tensor) -> Tensor:
    """Bilinear samples (B, D, K) of ``value`` (B, D, H, W) at ``loc`` (B, K, 2); autograd
    gives the same gradients as grid_sample's, deterministically."""
    corners = bilinear_corners(loc, value.shape[2], value.shape[3])
    v = _gather_corners(value, corners)
    return sum(v[k] * corners.weight[:, k].unsqueeze(1) for k in range(4))


def sample_backward(grad: Tensor, value: Tensor, loc: Tensor) -> tuple[Tensor, Tensor]:
    """Gradients of :func:`sample` for ``grad`` (B, D, K) of its output, without autograd:
    ``(grad_value (B, D, H, W), grad_loc (B, K, 2))``. grad_value is summed with
    ``index_add_``, in a fixed order."""
    b, d, h, w = value.shape
    corners = bilinear_corners(loc, h, w)
    v0, v1, v2, v3 = _gather_corners(value, corners)
    fx, fy = corners.fx.unsqueeze(1), corners.fy.unsqueeze(1)
    # d sample / d fx and d fy, then d fx / d loc_x = W, d fy / d loc_y = H
    d_fx = (1 - fy) * (v1 - v0) + fy * (v3 - v2)
    d_fy = (1 - fx) * (v2 - v0) + fx * (v3 - v1)
    grad_loc = torch.stack([(grad * d_fx).sum(1) * w, (grad * d_fy).sum(1) * h], dim=-1)
    # a location with no corner inside (or NaN) has zero gradient, as in the kernels
    grad_loc = torch.where(corners.inside.any(1, keepdim=True).mT, grad_loc, 0)
    # rows b * H * W + y * W + x of (B * H * W, D) receive weight * grad of each inside corner
    grad_value = value.new_zeros(b * h * w, d)
    rows = corners.index + torch.arange(b, device=value.device).view(b, 1, 1) * (h * w)
    for k in range(4):
        # (B, D, K) -> (B * K, D); zero for a corner outside, even where grad is not finite
        source = torch.where(
            corners.inside[:, k].unsqueeze(1), grad * corners.weight[:, k, None], 0
        )
        grad_value.index_add_(0, rows[:, k].reshape(-1), source.transpose(1, 2).reshape(-1, d))
    return grad_value.view(b, h, w, d).permute(0, 3, 1, 2), grad_loc
