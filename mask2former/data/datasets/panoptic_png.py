"""Panoptic PNG encoding of COCO: segment id = R + 256 * G + 256^2 * B."""

from __future__ import annotations

import numpy as np

__all__ = ["id_to_rgb", "rgb_to_id"]


def rgb_to_id(rgb: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 panoptic PNG -> (H, W) int64 segment ids."""
    if rgb.ndim != 3 or rgb.shape[-1] != 3:
        raise ValueError(f"a panoptic PNG has shape (H, W, 3), got {rgb.shape}")
    rgb = rgb.astype(np.int64)
    return rgb[..., 0] + 256 * rgb[..., 1] + 256 * 256 * rgb[..., 2]


def id_to_rgb(ids: np.ndarray) -> np.ndarray:
    """(H, W) integer segment ids (< 256^3) -> (H, W, 3) uint8 panoptic PNG."""
    ids = np.asarray(ids, dtype=np.int64)
    if ids.size and (ids.min() < 0 or ids.max() >= 256**3):
        raise ValueError(f"segment ids must lie in [0, 256^3), got {ids.min()}..{ids.max()}")
    return np.stack([ids % 256, ids // 256 % 256, ids // 256**2], axis=-1).astype(np.uint8)
