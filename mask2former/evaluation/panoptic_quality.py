"""Panoptic quality (PQ, SQ, RQ) by the COCO panoptic algorithm, vectorised per image.

The algorithm is panopticapi's (Kirillov et al., "Panoptic Segmentation"):

* a predicted and a ground-truth segment of the same category match when their IoU > 0.5;
  the union leaves out the predicted segment's pixels on ground-truth VOID (id 0);
* crowd ground-truth segments never match and are not false negatives;
* an unmatched prediction is not a false positive when more than half of it lies on VOID
  or on the crowd region of its own category;
* PQ = sum(IoU of matches) / (TP + FP/2 + FN/2), SQ = sum(IoU) / TP, RQ = PQ / SQ, per
  category, then averaged over categories that occur (``n``).

Instead of looping over segment pairs in Python, one pass over the pixels counts every
(ground-truth segment, predicted segment) pair: ``mask2former._codec`` for uint32 id maps,
else dense indices (one gather from a table of 2^16 entries, see ``_dense_index``) and one
histogram of the joint index. Matching and counting are then array operations on that
intersection matrix.

COCO panoptic PNGs store a segment id per pixel as ``id = R + 256 * G + 256**2 * B``.
"""

from __future__ import annotations

import ctypes
import logging
import multiprocessing
import os
import time
from dataclasses import dataclass
from typing import Any, Optional, Sequence

import numpy as np
import pyspng

from ..utils.file_io import load_json, read_bytes
from ..utils.native import codec
from ..utils.png import decode_png, encode_png

logger = logging.getLogger(__name__)

VOID = 0
_MAX_ID = 256**3


# ----------------------------------------------------------------------------- PNG format
def read_panoptic_png(path: str) -> np.ndarray:
    """Read a COCO panoptic PNG (8-bit RGB, RGBA or palette) as (H, W) uint32 segment ids.

    Decoded by :func:`mask2former.utils.png.decode_png` into 4 bytes per pixel (RGB, RGBA),
    or else by libspng (pyspng) to RGB and widened to RGBA by OpenCV: the little-endian
    uint32 view is ``R + 256 G + 256^2 B + 256^3 A``, and masking off the alpha byte leaves
    the segment id.
    """
    data = read_bytes(path, "panoptic PNG")
    _check_png_header(data, path)
    rgba = decode_png(data, path, pad_to=4)
    if rgba is None:
        try:
            rgb = pyspng.load(data, format="RGB")
        except RuntimeError as err:  # pyspng reports libspng's decode errors as RuntimeError
            raise ValueError(f"cannot decode panoptic PNG {path!r}: {err}") from err
        rgba = _opencv().cvtColor(rgb, _opencv().COLOR_RGB2RGBA)
    ids = rgba.view("<u4")[..., 0]  # (H, W), contiguous, on the decoded buffer
    ids &= 0xFFFFFF
    return ids


def _opencv():
    """OpenCV, imported on first use: with mask2former._codec, ``tools/pq_compute.py`` never
    needs it, and it is a third of the tool's start-up (~60 ms)."""
    import cv2

    return cv2


_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# Bit depths allowed per IHDR colour type: RGB (2) and RGBA (6) 8-bit, palette (3) indices of
# 1 to 8 bits; grey (0, 4) is not a panoptic format.
_PNG_DEPTHS = {2: (8,), 3: (1, 2, 4, 8), 6: (8,)}


def _check_png_header(data: bytes, path: str) -> None:
    """An 8-bit colour PNG; bytes 24 and 25 of a PNG file are IHDR's bit depth and colour type."""
    if len(data) < 26 or data[:8] != _PNG_SIGNATURE or data[12:16] != b"IHDR":
        raise ValueError(f"panoptic PNG {path!r} is not a PNG file")
    depth, color_type = data[24], data[25]
    if depth not in _PNG_DEPTHS.get(color_type, ()):
        raise ValueError(
            f"panoptic PNG {path!r} must be 8-bit RGB, RGBA or palette; got bit depth {depth}, "
            f"colour type {color_type}"
        )


def encode_panoptic_png(ids: np.ndarray) -> bytes:
    """(H, W) integer segment ids as the bytes of a COCO panoptic PNG."""
    ids = np.asarray(ids)
    if ids.size and (ids.min() < 0 or ids.max() >= _MAX_ID):
        raise ValueError(f"segment ids must lie in [0, 256^3), got {ids.min()}..{ids.max()}")
    # Little-endian uint32 bytes are R, G, B, 0: the PNG is of the first three.
    rgba = np.ascontiguousarray(ids, dtype="<u4").view(np.uint8).reshape(*ids.shape, 4)
    return encode_png(rgba, channels=3)


def write_panoptic_png(path: str, ids: np.ndarray) -> None:
    """Write (H, W) integer segment ids as a COCO panoptic PNG."""
    with open(path, "wb") as f:
        f.write(encode_panoptic_png(ids))


# ----------------------------------------------------------------------------- statistics
@dataclass
class PQStat:
    """Per-category sums over images: IoU of matches, TP, FP, FN.

    Arrays are indexed like ``category_ids`` (sorted dataset category ids).
    """

    category_ids: np.ndarray
    iou: np.ndarray
    tp: np.ndarray
    fp: np.ndarray
    fn: np.ndarray

    @classmethod
    def zeros(cls, category_ids: Sequence[int]) -> "PQStat":
        ids = np.asarray(sorted(category_ids), dtype=np.int64)
        n = len(ids)
        zero = np.zeros(n, dtype=np.int64)
        return cls(ids, np.zeros(n), zero.copy(), zero.copy(), zero.copy())

    def __iadd__(self, other: "PQStat") -> "PQStat":
        if not np.array_equal(self.category_ids, other.category_ids):
            raise ValueError("cannot add PQStat over different category sets")
        self.iou += other.iou
        self.tp += other.tp
        self.fp += other.fp
        self.fn += other.fn
        return self

    def pq_average(
        self, isthing_by_id: dict[int, bool], isthing: Optional[bool] = None
    ) -> tuple[dict[str, float], dict[int, dict[str, float]]]:
        """Average PQ/SQ/RQ over categories (all, things or stuff) that have TP+FP+FN > 0.

        Returns ``({"pq", "sq", "rq", "n"}, {category_id: {"pq", "sq", "rq"}})``, in [0, 1];
        categories without any segment get zeros in the per-class dict and are not counted.
        """
        keep = np.array(
            [isthing is None or bool(isthing_by_id[int(c)]) == isthing for c in self.category_ids],
            dtype=bool,
        )
        denom = self.tp + 0.5 * self.fp + 0.5 * self.fn
        present = keep & (denom > 0)
        pq = np.where(present, self.iou / np.maximum(denom, 1e-12), 0.0)
        sq = np.where(present & (self.tp > 0), self.iou / np.maximum(self.tp, 1), 0.0)
        rq = np.where(present, self.tp / np.maximum(denom, 1e-12), 0.0)
        per_class = {
            int(c): {"pq": float(pq[i]), "sq": float(sq[i]), "rq": float(rq[i])}
            for i, c in enumerate(self.category_ids)
            if keep[i]
        }
        n = int(present.sum())
        if n == 0:
            return {"pq": 0.0, "sq": 0.0, "rq": 0.0, "n": 0}, per_class
        summary = {k: float(v[present].sum() / n) for k, v in (("pq", pq), ("sq", sq), ("rq", rq))}
        summary["n"] = n
        return summary, per_class


def pq_results(stat: PQStat, isthing_by_id: dict[int, bool]) -> dict[str, Any]:
    """panopticapi's result layout: {"All"|"Things"|"Stuff": {"pq","sq","rq","n"}, "per_class"}."""
    results: dict[str, Any] = {}
    for name, isthing in (("All", None), ("Things", True), ("Stuff", False)):
        results[name], per_class = stat.pq_average(isthing_by_id, isthing)
        if name == "All":
            results["per_class"] = per_class
    return results


# ----------------------------------------------------------------------------- one image
#: Every entry of a lookup table that no listed id uses; above every code (see _dense_index).
_UNUSED = np.uint32(0xFF000000)
#: Lookup tables by size, each allocated once per process (a fresh one per call costs more
#: than the lookup) and all ``_UNUSED`` between calls: 256 KB for the usual 2^16 entries.
_TABLES: dict[int, np.ndarray] = {}


def _dense_index(ids: np.ndarray, listed_ids: np.ndarray, scale: int = 1) -> np.ndarray:
    """Map each pixel's id to ``scale * (1 + its position in listed_ids)``; unlisted -> 0.

    ids: (H, W) integer ids (negative ones count as 0, those beyond 256^3 as unlisted);
    listed_ids: (S,) distinct ids in [0, 256^3). Returns (H, W) uint32.

    One gather from a small table instead of a sort: the table is indexed by an id's low
    ``bits`` bits (16, or as many as the largest code needs) and holds, for each listed id,
    the id XOR its code, so XOR-ing a pixel's id back gives the code exactly when the two ids
    are equal, and a number of at least ``2**bits`` (above every code) when they only share
    the low bits. Unused entries hold ``_UNUSED``, which any id <= 256^3 XORs to a number
    above every code. Listed ids that share their low bits are looked up in turns, combined
    by minimum. Memory: ``4 * 2**bits`` bytes, not a table of all 256^3 ids.
    """
    top = scale * len(listed_ids)  # the largest code
    if top >= 2**31:
        raise ValueError(f"too many segments in one image: {len(listed_ids)}")
    if len(listed_ids) and (listed_ids.min() < 0 or listed_ids.max() >= _MAX_ID):
        raise ValueError(f"segment ids must lie in [0, 256^3); got {listed_ids.tolist()[:10]}")
    if ids.dtype != np.uint32 or (ids.size and ids.max() > _MAX_ID):
        ids = np.clip(ids, 0, _MAX_ID).astype(np.uint32)
    bits = max(16, top.bit_length())
    if bits not in _TABLES:
        _TABLES[bits] = np.full(2**bits, _UNUSED, dtype=np.uint32)
    table = _TABLES[bits]
    low = np.bitwise_and(ids, 2**bits - 1, dtype=np.intp)  # intp: np.take converts no more
    keys = listed_ids & (2**bits - 1)
    codes = scale * np.arange(1, len(listed_ids) + 1)
    index = None
    for group in _groups_of_distinct_keys(keys):
        table[keys[group]] = listed_ids[group] ^ codes[group]
        try:
            found = np.take(table, low)
        finally:
            table[keys[group]] = _UNUSED
        found ^= ids
        index = found if index is None else np.minimum(index, found, out=index)
    if index.size and index.max() > top:  # some pixel's id is not listed
        index[index > top] = 0
    return index


def histogram(values: np.ndarray, size: int) -> np.ndarray:
    """(size,) int64 counts of each integer in ``values`` (all in [0, size)), as
    ``np.bincount(values.ravel(), minlength=size)``.

    Counted by OpenCV's ``calcHist`` (integer counts, returned as float32) when the values
    fit uint16 and fewer than 2^24 are counted, so that every count is exact in float32:
    about 6x faster than ``bincount`` for a 640x480 image.
    """
    if 0 < values.size < 2**24 and size <= 2**16:
        row = values.reshape(1, -1).astype(np.uint16, copy=False)  # OpenCV: one long row
        counts = _opencv().calcHist([row], [0], None, [size], [0, size])
        return counts.reshape(-1).astype(np.int64)
    return np.bincount(values.reshape(-1), minlength=size)


def _groups_of_distinct_keys(keys: np.ndarray) -> list[np.ndarray]:
    """Positions of ``keys`` split so that no group holds one key twice (usually one group)."""
    if len(np.unique(keys)) == len(keys):
        return [np.arange(len(keys))]
    groups: list[list[int]] = []
    seen: dict[int, int] = {}
    for position, key in enumerate(keys.tolist()):
        rank = seen[key] = seen.get(key, -1) + 1
        if rank == len(groups):
            groups.append([])
        groups[rank].append(position)
    return [np.asarray(g) for g in groups]


def image_pq_stat(
    gt_ids: np.ndarray,
    gt_segments: Sequence[dict],
    pred_ids: np.ndarray,
    pred_segments: Sequence[dict],
    category_ids: np.ndarray,
    image_id: Any = None,
) -> PQStat:
    """PQ statistics of one image.

    gt_ids, pred_ids: (H, W) non-negative integer segment-id maps, 0 is VOID.
    gt_segments: [{"id", "category_id", "iscrowd", "area"}]; ids in the map but not listed
    are ignored, as panopticapi does. pred_segments: [{"id", "category_id"}]; every non-zero
    id of ``pred_ids`` must be listed and every listed id must occur.
    category_ids: sorted (K,) dataset category ids.
    """
    if gt_ids.shape != pred_ids.shape:
        raise ValueError(
            f"image {image_id!r}: ground truth is {gt_ids.shape[0]}x{gt_ids.shape[1]} but the "
            f"prediction is {pred_ids.shape[0]}x{pred_ids.shape[1]}"
        )
    gt_seg_ids = _segment_ids(gt_segments, "ground-truth", image_id)
    pred_seg_ids = _segment_ids(pred_segments, "predicted", image_id)
    inter = _intersections(gt_ids, gt_seg_ids, pred_ids, pred_seg_ids)
    _check_prediction(inter, pred_ids, pred_seg_ids, image_id)
    gt_cat = _category_index([s["category_id"] for s in gt_segments], category_ids, image_id)
    pred_cat = _category_index([s["category_id"] for s in pred_segments], category_ids, image_id)
    gt_crowd = np.asarray([int(s.get("iscrowd", 0)) == 1 for s in gt_segments], dtype=bool)
    gt_area = _gt_areas(gt_segments, image_id)
    counts = _count(inter, gt_cat, gt_crowd, gt_area, pred_cat, len(category_ids))
    return PQStat(category_ids, *counts)


def _segment_ids(segments: Sequence[dict], what: str, image_id: Any) -> np.ndarray:
    ids = np.asarray([int(s["id"]) for s in segments], dtype=np.int64)
    if len(np.unique(ids)) != len(ids):
        raise ValueError(f"image {image_id!r}: duplicate segment ids in the {what} segments_info")
    if (ids == VOID).any():
        raise ValueError(f"image {image_id!r}: {what} segments_info lists id 0, which is VOID")
    return ids


def _intersections(
    gt_ids: np.ndarray, gt_seg_ids: np.ndarray, pred_ids: np.ndarray, pred_seg_ids: np.ndarray
) -> np.ndarray:
    """(2 + G, 2 + P) int64 pixel counts of (gt index, predicted index) pairs, an index being
    0 for an id not listed, 1 for VOID and 2 + k for the k-th listed segment.

    uint32 maps are counted in one pass by ``mask2former._codec``; others through dense
    indices (:func:`_dense_index`) and one histogram of the joint index.
    """
    for listed in (gt_seg_ids, pred_seg_ids):
        if len(listed) and (listed.min() < 0 or listed.max() >= _MAX_ID):
            raise ValueError(f"segment ids must lie in [0, 256^3); got {listed.tolist()[:10]}")
    n_gt, n_pred = len(gt_seg_ids) + 2, len(pred_seg_ids) + 2
    native = codec()
    if native is not None and gt_ids.dtype == pred_ids.dtype == np.uint32:
        inter = np.zeros((n_gt, n_pred), dtype=np.int64)
        native.segment_pair_counts(
            np.ascontiguousarray(gt_ids),
            np.ascontiguousarray(pred_ids),
            gt_seg_ids.astype(np.uint32),
            pred_seg_ids.astype(np.uint32),
            inter,
        )
        return inter
    gt_index = _dense_index(gt_ids, np.concatenate([[VOID], gt_seg_ids]), scale=n_pred)
    pred_index = _dense_index(pred_ids, np.concatenate([[VOID], pred_seg_ids]))
    joint = np.add(gt_index, pred_index, out=gt_index)
    return histogram(joint, n_gt * n_pred).reshape(n_gt, n_pred)


def _check_prediction(inter, pred_ids, pred_seg_ids, image_id) -> None:
    if inter[:, 0].sum() > 0:
        unlisted = ~np.isin(pred_ids, np.concatenate([[VOID], pred_seg_ids]))
        bad = np.unique(pred_ids[unlisted])[:10].tolist()
        raise KeyError(
            f"image {image_id!r}: segment ids {bad} are in the predicted id map but not in "
            f"segments_info (listed ids: {sorted(pred_seg_ids.tolist())[:20]})"
        )
    missing = pred_seg_ids[inter[:, 2:].sum(axis=0) == 0]
    if len(missing):
        raise KeyError(
            f"image {image_id!r}: segment ids {missing.tolist()} are in segments_info but "
            "not in the predicted id map"
        )


def _category_index(cats: list, category_ids: np.ndarray, image_id: Any) -> np.ndarray:
    cats = np.asarray(cats, dtype=np.int64)
    pos = np.searchsorted(category_ids, cats)
    ok = (pos < len(category_ids)) & (category_ids[np.minimum(pos, len(category_ids) - 1)] == cats)
    if not ok.all():
        raise KeyError(
            f"image {image_id!r}: unknown category_id {cats[~ok].tolist()}; "
            f"known ids: {category_ids.tolist()}"
        )
    return pos


def _gt_areas(gt_segments: Sequence[dict], image_id: Any) -> np.ndarray:
    try:
        return np.asarray([s["area"] for s in gt_segments], dtype=np.float64)
    except KeyError:
        raise KeyError(f"image {image_id!r}: a ground-truth segment has no 'area'") from None


def _count(inter, gt_cat, gt_crowd, gt_area, pred_cat, num_categories) -> tuple:
    """(iou, tp, fp, fn) per category from the (2 + G, 2 + P) intersection matrix.

    inter: rows and columns are unlisted id, VOID, then the segments; gt_cat, gt_crowd,
    gt_area: (G,); pred_cat: (P,) category indices.
    """
    seg = inter[2:, 2:]  # (G, P) gt segment x predicted segment
    pred_area = inter[:, 2:].sum(axis=0)  # (P,) all pixels of the prediction
    pred_on_void = inter[1, 2:]  # (P,)
    union = pred_area[None, :] + gt_area[:, None] - seg - pred_on_void[None, :]
    iou = np.where(seg > 0, seg / np.maximum(union, 1), 0.0)
    matched = (iou > 0.5) & (gt_cat[:, None] == pred_cat[None, :]) & ~gt_crowd[:, None]
    gi, pj = np.nonzero(matched)
    stat_iou = np.bincount(gt_cat[gi], weights=iou[gi, pj], minlength=num_categories)
    tp = np.bincount(gt_cat[gi], minlength=num_categories)
    fn = np.bincount(gt_cat[~matched.any(axis=1) & ~gt_crowd], minlength=num_categories)
    # Crowd region per category: the last crowd segment of that category (panopticapi's rule).
    crowd_of_cat = np.full(num_categories, -1)
    crowd_rows = np.nonzero(gt_crowd)[0]
    crowd_of_cat[gt_cat[crowd_rows]] = crowd_rows
    crowd_row = crowd_of_cat[pred_cat]
    on_crowd = np.where(crowd_row >= 0, seg[np.maximum(crowd_row, 0), np.arange(len(pred_cat))], 0)
    ignored = (pred_on_void + on_crowd) / pred_area > 0.5
    is_fp = ~matched.any(axis=0) & ~ignored
    fp = np.bincount(pred_cat[is_fp], minlength=num_categories)
    return stat_iou, tp, fp, fn


# ----------------------------------------------------------------------------- files
def _image_stat_from_files(gt_ann, pred_ann, gt_folder, pred_folder, category_ids) -> PQStat:
    gt_ids = read_panoptic_png(os.path.join(gt_folder, gt_ann["file_name"]))
    pred_ids = read_panoptic_png(os.path.join(pred_folder, pred_ann["file_name"]))
    return image_pq_stat(
        gt_ids,
        gt_ann["segments_info"],
        pred_ids,
        pred_ann["segments_info"],
        category_ids,
        gt_ann["image_id"],
    )


def _keep_freed_memory() -> None:
    """Pool worker set-up: glibc keeps freed memory for the next image.

    Each image decodes and frees some 10 MB of arrays; by default glibc hands memory above a
    few MB back to the system when it is freed and takes it again, zeroed page by page, for
    the next image: a third of a worker's time. A worker only scores images, so it raises the
    thresholds (mmap: 64 MB, trim: 256 MB). Elsewhere than glibc there is nothing to set.
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:  # not glibc
        return
    m_trim_threshold, m_mmap_threshold = -1, -3  # glibc's mallopt parameter numbers
    libc.mallopt(m_mmap_threshold, 64 << 20)
    libc.mallopt(m_trim_threshold, 256 << 20)


def _chunk_stat(args: tuple) -> tuple[np.ndarray, ...]:
    pairs, gt_folder, pred_folder, category_ids = args
    total = PQStat.zeros(category_ids)
    for gt_ann, pred_ann in pairs:
        total += _image_stat_from_files(gt_ann, pred_ann, gt_folder, pred_folder, category_ids)
    return total.iou, total.tp, total.fp, total.fn


def _pair_annotations(gt_json: dict, pred_json: dict) -> list[tuple[dict, dict]]:
    preds = {ann["image_id"]: ann for ann in pred_json["annotations"]}
    pairs = []
    for gt_ann in gt_json["annotations"]:
        if gt_ann["image_id"] not in preds:
            raise KeyError(f"no prediction for the image with id {gt_ann['image_id']!r}")
        pairs.append((gt_ann, preds[gt_ann["image_id"]]))
    return pairs


#: images per task of pq_stat_from_files' processes
_CHUNK = 8


def pq_stat_from_files(
    pairs: list[tuple[dict, dict]],
    gt_folder: str,
    pred_folder: str,
    category_ids: np.ndarray,
    num_workers: Optional[int] = None,
) -> PQStat:
    """Sum of per-image statistics over (gt annotation, predicted annotation) pairs.

    Images go to ``num_workers`` processes (default: one per CPU, fewer for small sets; 1
    runs in this process) in chunks of ``_CHUNK`` consecutive images, each taken by the
    next free process (so a process slowed by other jobs does less of the work); the
    chunks' sums are added in order, so the result does not depend on the processes.
    """
    if num_workers is None:  # a process per CPU, but no pool for a handful of images
        num_workers = min(os.cpu_count() or 1, len(pairs) // 16)
    num_workers = max(1, min(num_workers, len(pairs)))
    chunks = [pairs[i : i + _CHUNK] for i in range(0, len(pairs), _CHUNK)]
    tasks = [(c, gt_folder, pred_folder, category_ids) for c in chunks]
    if num_workers == 1:
        parts = [_chunk_stat(t) for t in tasks]
    else:
        # fork: workers inherit the imported modules, so starting them costs milliseconds.
        method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
        pool_context = multiprocessing.get_context(method)
        with pool_context.Pool(num_workers, initializer=_keep_freed_memory) as pool:
            parts = pool.map(_chunk_stat, tasks, chunksize=1)
    stat = PQStat.zeros(category_ids)
    for part in parts:
        stat += PQStat(stat.category_ids, *part)
    return stat


def pq_compute(
    gt_json_file: str,
    pred_json_file: str,
    gt_folder: Optional[str] = None,
    pred_folder: Optional[str] = None,
    num_workers: Optional[int] = None,
) -> dict[str, Any]:
    """Score COCO-panoptic-format predictions (panopticapi's ``pq_compute``).

    gt_folder / pred_folder default to the JSON path without ".json". Returns
    ``{"All"|"Things"|"Stuff": {"pq", "sq", "rq", "n"}, "per_class": {category_id: {...}}}``
    with values in [0, 1].
    """
    start = time.perf_counter()
    gt_json = load_json(gt_json_file, "ground-truth JSON")
    pred_json = load_json(pred_json_file, "prediction JSON")
    gt_folder = gt_folder or gt_json_file.replace(".json", "")
    pred_folder = pred_folder or pred_json_file.replace(".json", "")
    for folder in (gt_folder, pred_folder):
        if not os.path.isdir(folder):
            raise FileNotFoundError(f"panoptic PNG folder not found: {folder!r}")
    isthing_by_id = {int(c["id"]): bool(c["isthing"]) for c in gt_json["categories"]}
    category_ids = np.asarray(sorted(isthing_by_id), dtype=np.int64)
    pairs = _pair_annotations(gt_json, pred_json)
    stat = pq_stat_from_files(pairs, gt_folder, pred_folder, category_ids, num_workers)
    logger.info("PQ of %d images computed in %.2f s", len(pairs), time.perf_counter() - start)
    return pq_results(stat, isthing_by_id)
