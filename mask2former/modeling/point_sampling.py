"""Sampling mask logits at continuous points (PointRend style), used by the Mask2Former losses.

Point coordinates are normalised to [0, 1] x [0, 1] over the (padded) image, (x, y) order, so
the same points address a prediction at 1/4 resolution and a target at full resolution.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from ..ops import bilinear, deterministic

__all__ = ["point_sample", "uncertain_point_coords_with_randomness", "uncertainty"]


def point_sample(features: torch.Tensor, point_coords: torch.Tensor) -> torch.Tensor:
    """Bilinearly sample ``features`` at ``point_coords`` (``align_corners=False``, zero padding).

    Args:
        features: (N, C, H, W).
        point_coords: (N, P, 2) in [0, 1], (x, y).
    Returns:
        (N, C, P), in ``features``' dtype.

    Where torch would refuse grid_sample's backward (deterministic mode, CUDA, a gradient) the
    same sampling by corner gathers (:func:`mask2former.ops.bilinear.sample`), with the
    coordinates in float32 or better: equal to grid_sample within 1e-6 of the largest value in
    float32. grid_sample's CPU backward is deterministic (each thread writes its own images).
    """
    if deterministic.backward_refused(features, point_coords):
        dtype = torch.promote_types(features.dtype, point_coords.dtype)
        return bilinear.sample(features.to(dtype), point_coords.to(dtype)).to(features.dtype)
    # (N, P, 2) -> (N, P, 1, 2) grid in [-1, 1]; the sampled (N, C, P, 1) drops its last dim.
    grid = 2.0 * point_coords.unsqueeze(2) - 1.0
    return F.grid_sample(features, grid.to(features.dtype), align_corners=False).squeeze(3)


def uncertainty(logits: torch.Tensor) -> torch.Tensor:
    """Uncertainty of binary mask logits: ``-|logit|`` (highest at the decision boundary)."""
    return -logits.abs()


def uncertain_point_coords_with_randomness(
    coarse_logits: torch.Tensor,
    num_points: int,
    oversample_ratio: float,
    importance_sample_ratio: float,
    uncertainty_func: Callable[[torch.Tensor], torch.Tensor] = uncertainty,
) -> torch.Tensor:
    """Points for a loss: the most uncertain of ``oversample_ratio * num_points`` random
    candidates, plus uniform random points.

    ``int(importance_sample_ratio * num_points)`` points are the most uncertain candidates;
    the rest are drawn uniformly.

    Args:
        coarse_logits: (N, 1, H, W) mask logits.
    Returns:
        (N, num_points, 2) coordinates in [0, 1].
    """
    if oversample_ratio < 1 or not 0 <= importance_sample_ratio <= 1:
        raise ValueError(
            f"need oversample_ratio >= 1 and 0 <= importance_sample_ratio <= 1, got "
            f"{oversample_ratio} and {importance_sample_ratio}"
        )
    num_masks, device = coarse_logits.shape[0], coarse_logits.device
    num_candidates = int(num_points * oversample_ratio)
    candidates = torch.rand(num_masks, num_candidates, 2, device=device)
    # (N, 1, num_candidates) -> (N, num_candidates) uncertainty of each candidate.
    candidate_uncertainty = uncertainty_func(point_sample(coarse_logits, candidates))[:, 0]
    num_uncertain = int(importance_sample_ratio * num_points)
    top = candidate_uncertainty.topk(num_uncertain, dim=1).indices
    chosen = torch.gather(candidates, 1, top.unsqueeze(-1).expand(-1, -1, 2))
    num_random = num_points - num_uncertain
    if num_random == 0:
        return chosen
    return torch.cat([chosen, torch.rand(num_masks, num_random, 2, device=device)], dim=1)
