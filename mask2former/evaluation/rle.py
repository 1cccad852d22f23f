"""COCO run-length encoding of many binary masks at once, without full-image passes.

pycocotools encodes column-major (Fortran) masks; packing (n, H, W) row-major masks into
that order and encoding every pixel costs more than the model's own prediction for 100
masks of a large image. Here each mask is reduced to its bounding box first (one
vectorised ``any`` over all masks gives rows and columns), its run boundaries are found in
the small box (transposed with OpenCV) and mapped back to full-image positions, and
pycocotools only compresses the counts. The output is byte-identical to
``pycocotools.mask.encode``.
"""

from __future__ import annotations

from typing import Union

import cv2
import numpy as np
import pycocotools.mask as mask_util
import torch

from mask2former.structures import masks_to_boxes


def _as_bool_masks(masks: Union[np.ndarray, torch.Tensor]) -> np.ndarray:
    """(n, H, W) bool/uint8/float masks (tensor or array) -> (n, H, W) bool array.

    Float masks are binarised at 0.5.
    """
    if isinstance(masks, torch.Tensor):
        if masks.is_floating_point():
            masks = masks >= 0.5
        masks = masks.to(torch.bool).cpu().numpy()
    masks = np.asarray(masks)
    if masks.ndim != 3:
        raise ValueError(f"expected (n, H, W) masks, got shape {masks.shape}")
    if np.issubdtype(masks.dtype, np.floating):
        return masks >= 0.5
    return masks.astype(bool, copy=False)


def _mask_counts(mask: np.ndarray, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
    """Column-major run lengths (starting with a run of zeros) of one (H, W) uint8 mask.

    (y0, y1, x0, x1) is the mask's bounding box. It is padded by one empty row above and
    below where the image allows, so every change of the image's column-major sequence
    shows in the box's own column-major sequence.
    """
    height, width = mask.shape
    ya, yb = max(y0 - 1, 0), min(y1 + 1, height)
    # The box transposed and flattened is its column-major sequence.
    flat = cv2.transpose(np.ascontiguousarray(mask[ya:yb, x0:x1])).ravel()
    p = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    if flat[0]:
        p = np.concatenate([[0], p])
    col, row = np.divmod(p, yb - ya)
    # A change at a box column's first row that turns a pixel off comes from a run that
    # reached the bottom of the previous column: in the image it ends at this column's top.
    row_offset = np.where((row == 0) & (flat[p] == 0), 0, ya)
    changes = (x0 + col) * height + row + row_offset
    end = [x1 * height] if flat[-1] and x1 < width else []
    bounds = np.concatenate([[0], changes, end, [height * width]])
    return np.diff(bounds).astype(np.uint32)


def encode_masks(masks: Union[np.ndarray, torch.Tensor]) -> list[dict]:
    """COCO RLE of each of (n, H, W) masks: [{"size": [H, W], "counts": str}].

    Equal to ``pycocotools.mask.encode`` of the masks in Fortran order (with counts decoded
    to str for JSON).
    """
    masks = _as_bool_masks(masks)
    n, height, width = masks.shape
    if n == 0:
        return []
    boxes = masks_to_boxes(torch.from_numpy(np.ascontiguousarray(masks))).long().tolist()
    masks_u8 = masks.view(np.uint8)
    uncompressed = []
    for k, (x0, y0, x1, y1) in enumerate(boxes):
        if x1 > 0:  # not empty
            counts = _mask_counts(masks_u8[k], y0, y1, x0, x1)
        else:
            counts = np.array([height * width], dtype=np.uint32)
        uncompressed.append({"size": [height, width], "counts": counts})
    rles = mask_util.frPyObjects(uncompressed, height, width)
    for rle in rles:
        rle["counts"] = rle["counts"].decode("ascii")
    return rles
