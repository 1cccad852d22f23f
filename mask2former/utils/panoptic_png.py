"""COCO panoptic PNG encoding: segment id = R + 256 * G + 256^2 * B.

One codec for everything that reads or writes these files: dataset loading and mappers,
dataset preparation, the synthetic dataset and the panoptic evaluator.
"""

from __future__ import annotations

import numpy as np

__all__ = ["id2rgb", "rgb2id"]

_MAX_ID = 256**3


def rgb2id(color: np.ndarray) -> np.ndarray:
    """(H, W, 3) panoptic PNG colours -> (H, W) int64 segment ids."""
    if color.ndim != 3 or color.shape[-1] != 3:
        raise ValueError(f"a panoptic PNG has shape (H, W, 3), got {color.shape}")
    color = color.astype(np.int64)
    return color[..., 0] + 256 * color[..., 1] + 256 * 256 * color[..., 2]


def id2rgb(ids: np.ndarray) -> np.ndarray:
    """(H, W) integer segment ids in [0, 256^3) -> (H, W, 3) uint8 panoptic PNG colours."""
    ids = np.asarray(ids)
    if ids.size and (ids.min() < 0 or ids.max() >= _MAX_ID):
        raise ValueError(f"segment ids must lie in [0, 256^3), got {ids.min()}..{ids.max()}")
    # little-endian uint32 bytes are R, G, B, 0
    return np.ascontiguousarray(ids.astype("<u4")[..., None].view(np.uint8)[..., :3])
