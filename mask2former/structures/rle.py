"""COCO run-length encoding of many binary masks at once, without full-image passes.

With ``mask2former._codec`` built, the encoding is its C loop (rows compared with the row
above, differences bucketed by column: one pass over the masks in memory order). Without
it, the same strings come from the numpy path below. pycocotools encodes column-major
(Fortran) masks; packing (n, H, W) row-major masks into that order and encoding every
pixel costs more than the model's own prediction for 100 masks of a large image. Here each
mask is reduced to the columns it occupies first (one vectorised max over the rows of all
masks), those columns are transposed with OpenCV (they are a contiguous stretch of the
image's column-major sequence), the run boundaries found there are shifted to full-image
positions, and pycocotools only compresses the counts. The output is byte-identical to
``pycocotools.mask.encode``.

:class:`RLEMasks` keeps one instance's masks through a video in that encoding.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Union

import cv2
import numpy as np
import pycocotools.mask as mask_util
import torch

from ..utils.native import codec

__all__ = ["RLEMasks", "encode_label_map", "encode_masks"]


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


def _mask_counts(mask: np.ndarray, x0: int, x1: int) -> np.ndarray:
    """Column-major run lengths (starting with a run of zeros) of one (H, W) uint8 mask
    whose pixels all lie in columns x0..x1-1."""
    height, width = mask.shape
    # Those columns transposed and flattened are the image's column-major sequence from
    # x0 * H to x1 * H; it is 0 everywhere else.
    flat = cv2.transpose(np.ascontiguousarray(mask[:, x0:x1])).ravel()
    changes = [np.flatnonzero(flat[1:] != flat[:-1]) + 1]
    if flat[0]:  # a run of ones starts at the first column's top
        changes.insert(0, [0])
    if flat[-1] and x1 < width:  # a run of ones ends at the last column's bottom
        changes.append([len(flat)])
    bounds = np.concatenate([[0], x0 * height + np.concatenate(changes), [height * width]])
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
    native = codec()
    if native is not None:
        strings = native.encode_rle(np.ascontiguousarray(masks).view(np.uint8), n, height, width)
        return [{"size": [height, width], "counts": s} for s in strings]
    return _encode_masks_numpy(masks)


def _encode_masks_numpy(masks: np.ndarray) -> list[dict]:
    """``encode_masks`` of (n, H, W) bool masks without the codec."""
    n, height, width = masks.shape
    masks_u8 = masks.view(np.uint8)
    # Occupied columns of every mask: a max over rows, vectorised along the rows in memory.
    columns = masks_u8.max(axis=1)  # (n, W)
    occupied = columns.any(axis=1).tolist()
    first = columns.argmax(axis=1).tolist()
    end = (width - columns[:, ::-1].argmax(axis=1)).tolist()
    uncompressed = []
    for k in range(n):
        if occupied[k]:
            counts = _mask_counts(masks_u8[k], first[k], end[k])
        else:
            counts = np.array([height * width], dtype=np.uint32)
        uncompressed.append({"size": [height, width], "counts": counts})
    rles = mask_util.frPyObjects(uncompressed, height, width)
    for rle in rles:
        rle["counts"] = rle["counts"].decode("ascii")
    return rles


def encode_label_map(label_map: np.ndarray) -> tuple[list[int], list[dict]]:
    """COCO RLE of each label's mask in an (H, W) integer label map, labels ascending.

    Returns (labels, rles) equal to ``encode_masks(label_map[None] == labels[:, None, None])``
    with ``labels = np.unique(label_map)``, from one pass over the map: its column-major
    sequence is cut where the label changes, and each label's runs are its pieces.
    """
    if label_map.ndim != 2:
        raise ValueError(f"expected an (H, W) label map, got shape {label_map.shape}")
    height, width = label_map.shape
    if label_map.size == 0:
        return [], []
    native = codec()
    if native is not None and label_map.dtype == np.uint8:
        labels, strings = native.encode_label_rle(np.ascontiguousarray(label_map), height, width)
        return labels, [{"size": [height, width], "counts": s} for s in strings]
    return _encode_label_map_numpy(label_map)


def _encode_label_map_numpy(label_map: np.ndarray) -> tuple[list[int], list[dict]]:
    """``encode_label_map`` without the codec (or of labels wider than 8 bits)."""
    height, width = label_map.shape
    flat = np.ascontiguousarray(label_map.T).ravel()  # column-major order
    starts = np.concatenate([[0], np.flatnonzero(flat[1:] != flat[:-1]) + 1])
    ends = np.append(starts[1:], flat.size)
    piece_labels = flat[starts]
    order = np.argsort(piece_labels, kind="stable")  # each label's pieces, in image order
    labels, first = np.unique(piece_labels[order], return_index=True)
    uncompressed = []
    for piece_order in np.split(order, first[1:]):
        # Alternating zeros / ones: [0, start, end, start, end, ..., H * W], no empty last run.
        bounds = np.stack([starts[piece_order], ends[piece_order]], axis=1).ravel()
        bounds = np.concatenate([[0], bounds, [] if bounds[-1] == flat.size else [flat.size]])
        counts = np.diff(bounds).astype(np.uint32)
        uncompressed.append({"size": [height, width], "counts": counts})
    rles = mask_util.frPyObjects(uncompressed, height, width)
    for rle in rles:
        rle["counts"] = rle["counts"].decode("ascii")
    return labels.tolist(), rles


class RLEMasks(Sequence):
    """One instance's binary masks through the T frames of a video, kept as COCO RLEs.

    A (T, H, W) bool tensor costs T*H*W bytes whatever the masks hold; a frame's RLE costs
    a few bytes per run, so a long video's masks fit in memory. Indexing decodes one frame:
    ``masks[t]`` is an (H, W) bool tensor; :meth:`tensor` decodes them all, (T, H, W);
    :attr:`rles` are the encodings (``{"size": [H, W], "counts": str}``, JSON-ready).
    """

    def __init__(self, rles: list[dict], height: int, width: int):
        for t, rle in enumerate(rles):
            if list(rle["size"]) != [height, width]:
                raise ValueError(
                    f"RLE of frame {t} has size {rle['size']}, not [{height}, {width}]"
                )
        self.rles = rles
        self.height, self.width = height, width

    @property
    def shape(self) -> tuple[int, int, int]:
        return (len(self.rles), self.height, self.width)

    def __len__(self) -> int:
        return len(self.rles)

    def __getitem__(self, t):
        if isinstance(t, slice):
            return RLEMasks(self.rles[t], self.height, self.width)
        return torch.from_numpy(mask_util.decode(_coco_rle(self.rles[t])).astype(bool))

    def tensor(self) -> torch.Tensor:
        """All frames' masks, (T, H, W) bool."""
        if not self.rles:
            return torch.zeros((0, self.height, self.width), dtype=torch.bool)
        decoded = mask_util.decode([_coco_rle(r) for r in self.rles])  # (H, W, T)
        return torch.from_numpy(np.ascontiguousarray(decoded.transpose(2, 0, 1)).astype(bool))

    def __repr__(self) -> str:
        return f"RLEMasks(num_frames={len(self)}, height={self.height}, width={self.width})"


def _coco_rle(rle: dict) -> dict:
    """An RLE with str counts (JSON) -> the bytes counts pycocotools decodes."""
    counts = rle["counts"]
    return {
        "size": rle["size"],
        "counts": counts.encode("ascii") if isinstance(counts, str) else counts,
    }
