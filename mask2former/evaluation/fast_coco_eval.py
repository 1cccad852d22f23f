"""pycocotools' COCOeval with ``evaluate`` and ``accumulate`` rewritten over arrays.

detectron2 scores COCO with a C++ ``COCOeval_opt`` because pycocotools' pure-Python
``evaluateImg`` (a loop over IoU thresholds x detections x ground truths for every image,
category and area range) and ``accumulate`` (a loop over categories x area ranges x maxDets,
each concatenating per-image dicts) cost more than the model's inference. ``FastCOCOeval``
computes the same numbers in Python + numpy, with no loop over (image, category) pairs:

* detections and ground truths become arrays once; one ``mask_util.iou`` call per (image,
  category) with both gives their IoUs;
* greedy matching runs only on the detections and ground truths that have an IoU of at
  least the lowest threshold with something of their category (the others can neither
  match nor block a match), for all (image, category) pairs, area ranges and thresholds at
  once, one step per detection rank;
* ``accumulate`` handles all categories at once per (area range, maxDets): it evaluates
  precision only at true positives (where the precision envelope has its maxima and recall
  reaches each recall point), finds the recall points from integer counts, and takes
  the envelope as one ``maximum.accumulate`` over integer keys.

Same rules, same floating-point operations, same stable orders: ``eval["precision"]``,
``eval["recall"]``, ``eval["scores"]`` and ``stats`` are bit-identical to pycocotools'
(tests/evaluation/test_fast_coco_eval.py compares them). ``summarize`` is pycocotools' own.
Like pycocotools' ``_prepare``, ``evaluate`` sets each ground truth's "ignore" and turns
polygon / uncompressed segmentations into RLEs in place. Not filled: ``evalImgs``,
``ious``, ``_gts`` and ``_dts`` (per-image dicts nothing here reads). Supported: ``iouType``
"segm" or "bbox" with ``useCats`` 1, COCOeval's default for both.
"""

from __future__ import annotations

import copy
import datetime
from dataclasses import dataclass
from typing import Optional

import numpy as np
from pycocotools import mask as mask_util
from pycocotools.cocoeval import COCOeval

__all__ = ["FastCOCOeval"]

# Pairs matched together at most (bounds the padded (pairs, area ranges, thresholds,
# ground truths) arrays of the matching).
_PAIRS_PER_CHUNK = 2048


@dataclass
class _Annotations:
    """The annotations of one COCO object that pycocotools evaluates, as arrays, in its
    order: by image (``params.imgIds``), then in each image's annotation order."""

    anns: list  # (N,) the annotation dicts
    image: np.ndarray  # (N,) index into params.imgIds
    category: np.ndarray  # (N,) index into params.catIds
    area: np.ndarray  # (N,) float64
    ids: np.ndarray  # (N,)
    scores: Optional[np.ndarray] = None  # (N,) float64, detections only


@dataclass
class _Detections:
    """The detections that count (the first maxDets[-1] of each image and category by
    score), sorted by (image, category, descending score) with pycocotools' stable ties."""

    category: np.ndarray  # (N,) index into params.catIds
    scores: np.ndarray  # (N,) float64
    ranks: np.ndarray  # (N,) position within its (image, category)
    matched: np.ndarray  # (A, T, N) bool: pycocotools' dtMatches != 0
    ignored: np.ndarray  # (A, T, N) bool: pycocotools' dtIgnore


class FastCOCOeval(COCOeval):
    """``COCOeval`` whose ``evaluate()`` and ``accumulate()`` are fast; same results."""

    def evaluate(self) -> None:
        p = self.params
        if p.useSegm is not None:
            p.iouType = "segm" if p.useSegm == 1 else "bbox"
        if p.iouType not in ("segm", "bbox") or not p.useCats:
            raise ValueError(
                f"FastCOCOeval supports iouType 'segm' or 'bbox' with useCats=1; got "
                f"iouType={p.iouType!r}, useCats={p.useCats!r} (use pycocotools' COCOeval)"
            )
        p.imgIds = list(np.unique(p.imgIds))
        p.catIds = list(np.unique(p.catIds))
        p.maxDets = sorted(p.maxDets)
        self.params = p
        self.evalImgs, self.eval = [], {}
        gts, dts = self._collect(self.cocoGt, with_scores=False), self._collect(self.cocoDt)
        for gt in gts.anns:
            gt["ignore"] = "iscrowd" in gt and gt["iscrowd"]  # pycocotools' _prepare
        gt_ignored = np.array([bool(g["ignore"]) for g in gts.anns], dtype=bool)
        gt_ignored = gt_ignored[None, :] | _outside(gts.area, p.areaRng)  # (A, G)
        self._num_gt = np.stack(
            [np.bincount(gts.category[~ig], minlength=len(p.catIds)) for ig in gt_ignored], 1
        )  # (K, A)
        keep, ranks = _kept_detections(dts, len(p.catIds), p.maxDets[-1])
        candidates = self._candidates(gts, dts, keep)
        outside = _outside(dts.area[keep], p.areaRng)  # (A, N)
        matched, ignored = _match_all(
            candidates, gts, dts.ids[keep] > 0, gt_ignored, outside, _capped(p.iouThrs)
        )
        self._detections = _Detections(
            dts.category[keep], dts.scores[keep], ranks, matched, ignored
        )
        self._paramsEval = copy.deepcopy(self.params)

    def _collect(self, coco, with_scores: bool = True) -> _Annotations:
        """``coco``'s annotations of params.imgIds and params.catIds (pycocotools'
        getAnnIds order), segmentations as RLE for "segm"."""
        p = self.params
        cat_index = {cat_id: k for k, cat_id in enumerate(p.catIds)}
        anns, images = [], []
        for i, img_id in enumerate(p.imgIds):
            for ann in coco.imgToAnns.get(img_id, ()):
                if ann["category_id"] in cat_index:
                    anns.append(ann)
                    images.append(i)
        if p.iouType == "segm":
            for ann in anns:
                segm = ann["segmentation"]
                if isinstance(segm, list) or isinstance(segm["counts"], list):
                    ann["segmentation"] = coco.annToRLE(ann)
        result = _Annotations(
            anns,
            np.array(images, dtype=np.int64),
            np.array([cat_index[a["category_id"]] for a in anns], dtype=np.int64),
            np.array([a["area"] for a in anns], dtype=np.float64),
            np.array([a["id"] for a in anns]),
        )
        if with_scores:
            result.scores = np.array([a["score"] for a in anns], dtype=np.float64)
        return result

    def _candidates(self, gts: _Annotations, dts: _Annotations, keep: np.ndarray):
        """(detections (C,), ground truths (C,), IoUs (C,)) of every detection / ground
        truth of one image and category with an IoU of at least the lowest threshold.

        Detections index ``keep`` (the kept ones, sorted); ground truths index ``gts``.
        IoUs are pycocotools' (crowd ground truths: intersection over the detection), one
        ``mask_util.iou`` call per (image, category) with both.
        """
        p = self.params
        field_name = "segmentation" if p.iouType == "segm" else "bbox"
        num_cats = len(p.catIds)
        gt_order = np.lexsort((gts.category, gts.image))  # stable: annotation order kept
        dt_pair = dts.image[keep] * num_cats + dts.category[keep]
        gt_pair = (gts.image * num_cats + gts.category)[gt_order]
        pairs = np.intersect1d(dt_pair, gt_pair)
        d_lo, d_hi = np.searchsorted(dt_pair, pairs), np.searchsorted(dt_pair, pairs, "right")
        g_lo, g_hi = np.searchsorted(gt_pair, pairs), np.searchsorted(gt_pair, pairs, "right")
        dt_objects = [dts.anns[j][field_name] for j in keep]
        gt_objects = [gts.anns[j][field_name] for j in gt_order]
        crowd = np.array([int(gts.anns[j]["iscrowd"]) for j in gt_order], dtype=np.uint8)
        blocks = [
            mask_util.iou(dt_objects[d0:d1], gt_objects[g0:g1], crowd[g0:g1]).ravel()
            for d0, d1, g0, g1 in zip(d_lo.tolist(), d_hi.tolist(), g_lo.tolist(), g_hi.tolist())
        ]
        if not blocks:
            return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0)
        # Block b is (d_hi - d_lo, g_hi - g_lo), row-major: entry e is row e // width.
        ious = np.concatenate(blocks)
        width = g_hi - g_lo
        sizes = (d_hi - d_lo) * width
        block = np.repeat(np.arange(len(pairs)), sizes)
        entry = _positions_in_groups(np.cumsum(sizes) - sizes, len(ious))
        hit = np.flatnonzero(ious >= _capped(p.iouThrs).min())
        block, entry = block[hit], entry[hit]
        dt = d_lo[block] + entry // width[block]
        gt = gt_order[g_lo[block] + entry % width[block]]
        return dt, gt, ious[hit]

    def accumulate(self, p=None) -> None:
        if p is not None and p is not self.params:
            raise ValueError("FastCOCOeval.accumulate takes no parameters; set self.params")
        p = self.params
        T, R, K = len(p.iouThrs), len(p.recThrs), len(p.catIds)
        A, M = len(p.areaRng), len(p.maxDets)
        precision = -np.ones((T, R, K, A, M))
        recall = -np.ones((T, K, A, M))
        scores = -np.ones((T, R, K, A, M))
        dets = self._detections
        # pycocotools concatenates a category's detections image by image and sorts them
        # by descending score (stable): one stable sort by (category, -score).
        order = np.lexsort((-dets.scores, dets.category))
        ranked = _Ranked(
            dets.category[order],
            dets.scores[order],
            dets.matched[:, :, order],
            dets.ignored[:, :, order],
        )
        kept_before = None
        for m, max_det in enumerate(p.maxDets):
            kept = dets.ranks[order] < max_det
            if kept_before is not None and np.array_equal(kept, kept_before):  # nothing cut
                precision[..., m], scores[..., m] = precision[..., m - 1], scores[..., m - 1]
                recall[..., m] = recall[..., m - 1]
                continue
            kept_before = kept
            for a in range(A):
                num_gt = self._num_gt[:, a]  # (K,)
                result = _precision_recall(ranked, a, kept, num_gt, p.recThrs)
                with_gt = num_gt > 0  # the others stay -1
                precision[:, :, with_gt, a, m] = result[0][:, :, with_gt]
                scores[:, :, with_gt, a, m] = result[1][:, :, with_gt]
                recall[:, with_gt, a, m] = result[2][:, with_gt]
        self.eval = {
            "params": p,
            "counts": [T, R, K, A, M],
            "date": datetime.datetime.now().strftime("%Y-%m-%d %H:%M:%S"),
            "precision": precision,
            "recall": recall,
            "scores": scores,
        }


def _capped(thresholds) -> np.ndarray:
    """IoU thresholds as pycocotools applies them: min(t, 1 - 1e-10)."""
    return np.minimum(np.asarray(thresholds, dtype=np.float64), 1 - 1e-10)


def _outside(areas: np.ndarray, area_ranges) -> np.ndarray:
    """(A, N) bool: area < lo or area > hi for each area range."""
    return np.stack([(areas < lo) | (areas > hi) for lo, hi in area_ranges])


def _kept_detections(dts: _Annotations, num_cats: int, max_det: int):
    """(indices into ``dts`` (N,), ranks (N,)) of the detections pycocotools keeps: sorted by
    (image, category, descending score; ties in annotation order), the first ``max_det``
    of each (image, category)."""
    order = np.lexsort((-dts.scores, dts.category, dts.image))
    pair = (dts.image * num_cats + dts.category)[order]
    starts = np.flatnonzero(np.r_[True, pair[1:] != pair[:-1]])
    ranks = _positions_in_groups(starts, len(order))
    keep = ranks < max_det
    return order[keep], ranks[keep]


def _match_all(candidates, gts: _Annotations, dt_takes, gt_ignored, outside, thresholds):
    """pycocotools' dtMatches != 0 and dtIgnore of all kept detections: (A, T, N) each.

    candidates: (detections, ground truths, IoUs) from ``FastCOCOeval._candidates`` (the
    kept detections' order puts those of a pair in rank order); dt_takes: (N,) detection ids > 0
    (pycocotools marks a ground truth taken with the detection's id); gt_ignored: (A, G);
    outside: (A, N) detections outside each area range (ignored when unmatched).
    """
    num_a, num_t = outside.shape[0], len(thresholds)
    matched = np.zeros((num_a, num_t, outside.shape[1]), dtype=bool)
    ignored = np.repeat(outside[:, None, :], num_t, axis=1)
    dt, gt, ious = candidates
    if not len(dt):
        return matched, ignored
    # Pairs: candidate detections share a pair key with their ground truths.
    pair_of = gts.image[gt] * (gts.category.max() + 1) + gts.category[gt]
    _, pair = np.unique(pair_of, return_inverse=True)
    dt_slot, dt_local = _local_index(pair, dt)
    gt_slot, gt_local = _local_index(pair, gt)
    num_dt, num_gt = np.bincount(dt_slot), np.bincount(gt_slot)
    # Chunks of pairs with similar ground-truth counts, each by descending detection count.
    by_size = np.lexsort((-num_dt, num_gt))
    crowd = np.array([bool(g["iscrowd"]) for g in gts.anns], dtype=bool)
    for start in range(0, len(by_size), _PAIRS_PER_CHUNK):
        chunk = by_size[start : start + _PAIRS_PER_CHUNK]
        chunk = chunk[np.argsort(-num_dt[chunk], kind="stable")]
        slot = np.full(len(num_dt), -1)
        slot[chunk] = np.arange(len(chunk))
        d_max, g_max = num_dt[chunk].max(), num_gt[chunk].max()
        # Dense per-pair tables, padded (IoU -inf never reaches a threshold).
        dense = np.full((len(chunk), d_max, g_max), -np.inf)
        dt_at = np.full((len(chunk), d_max), -1)
        gt_at = np.zeros((len(chunk), g_max), dtype=np.int64)
        inside = slot[pair] >= 0
        dense[slot[pair[inside]], dt_local[inside], gt_local[inside]] = ious[inside]
        dt_at[slot[pair[inside]], dt_local[inside]] = dt[inside]
        gt_at[slot[pair[inside]], gt_local[inside]] = gt[inside]
        choice = _greedy_match(
            dense,
            gt_ignored[:, gt_at].transpose(1, 0, 2),
            crowd[gt_at],
            dt_takes[np.maximum(dt_at, 0)] & (dt_at >= 0),
            num_dt[chunk],
            thresholds,
        )  # (P, D, A, T)
        p_idx, d_idx = np.nonzero(dt_at >= 0)
        rows, m = dt_at[p_idx, d_idx], choice[p_idx, d_idx]  # (C,), (C, A, T)
        g = gt_at[p_idx[:, None, None], np.maximum(m, 0)]  # (C, A, T)
        hit = (m >= 0) & (gts.ids[g] != 0)  # pycocotools: dtMatches holds the gt id
        on_ignored = (m >= 0) & gt_ignored[np.arange(num_a)[None, :, None], g]
        matched[:, :, rows] = hit.transpose(1, 2, 0)
        unmatched_outside = ~hit & outside[:, rows].T[:, :, None]
        ignored[:, :, rows] = (on_ignored | unmatched_outside).transpose(1, 2, 0)
    return matched, ignored


def _local_index(pair: np.ndarray, items: np.ndarray):
    """(the pair of each distinct (pair, item) (U,), each entry's position among its pair's
    distinct items in ascending order (C,)); pair, items: (C,).

    >>> _local_index(np.array([0, 0, 1, 0]), np.array([7, 3, 5, 7]))
    (array([0, 0, 1]), array([1, 0, 0, 1]))
    """
    unique, inverse = np.unique(np.stack([pair, items]), axis=1, return_inverse=True)
    inverse = inverse.reshape(-1)
    starts = np.flatnonzero(np.r_[True, unique[0, 1:] != unique[0, :-1]])
    return unique[0], _positions_in_groups(starts, unique.shape[1])[inverse]


def _positions_in_groups(starts: np.ndarray, n: int) -> np.ndarray:
    """(n,) each element's position within its group, groups being the contiguous runs of
    0..n-1 that begin at ``starts`` (ascending, starting with 0, none empty).

    >>> _positions_in_groups(np.array([0, 2, 3]), 6)
    array([0, 1, 0, 0, 1, 2])
    """
    return np.arange(n) - np.repeat(starts, np.diff(np.r_[starts, n]))


def _greedy_match(ious, ignore, crowd, takes, num_dt, thresholds) -> np.ndarray:
    """pycocotools' greedy matching of many pairs at once: (P, D, A, T) chosen ground truth
    index, or -1.

    ious: (P, D, G), detections by descending score, -inf padding; ignore: (P, A, G);
    crowd: (P, G); takes: (P, D) whether a match marks the ground truth taken; num_dt: (P,)
    descending. Each detection in turn takes, among ground truths with IoU >= threshold that
    are free (not yet taken, or crowd), the one with the highest IoU (the later one on a
    tie), any non-ignored one before ignored ones.
    """
    num_p, num_d, num_g = ious.shape
    taken = np.zeros((num_p, ignore.shape[1], len(thresholds), num_g), dtype=bool)
    choice = np.full((num_p, num_d, ignore.shape[1], len(thresholds)), -1)
    for d in range(num_d):
        n = int(np.count_nonzero(num_dt > d))  # the pairs with a d-th detection
        row = ious[:n, d, None, None, :]  # (n, 1, 1, G)
        free = ~taken[:n] | crowd[:n, None, None, :]
        reach = free & (row >= thresholds[:, None])  # (n, A, T, G)
        plain = reach & ~ignore[:n, :, None, :]
        m = np.where(
            plain.any(-1),
            _last_argmax(row, plain),
            np.where(reach.any(-1), _last_argmax(row, reach), -1),
        )
        choice[:n, d] = m
        p, a, t = np.nonzero((m >= 0) & takes[:n, d, None, None])
        taken[p, a, t, m[p, a, t]] = True
    return choice


def _last_argmax(values: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Index of the last maximum of ``values`` over the last axis where ``mask``."""
    masked = np.where(mask, values, -np.inf)[..., ::-1]
    return masked.shape[-1] - 1 - np.argmax(masked, axis=-1)


@dataclass
class _Ranked:
    """All kept detections in pycocotools' accumulate order: by category, then by
    descending score (ties by image, then rank)."""

    category: np.ndarray  # (N,) non-decreasing
    scores: np.ndarray  # (N,)
    matched: np.ndarray  # (A, T, N)
    ignored: np.ndarray  # (A, T, N)


def _precision_recall(ranked: _Ranked, a: int, kept, num_gt, rec_thresholds):
    """(precision (T, R, K), scores (T, R, K), recall (T, K)) of one area range and maxDets,
    all categories at once; meaningful where num_gt (K,) > 0.

    a: the area range; kept: (N,) within maxDets. pycocotools' formulas in
    its order of operations, evaluated only where they matter: at true positives (a
    precision envelope's maxima, and where recall reaches each recall point) and at the
    first detection (recall point 0).
    """
    counted = ~ranked.ignored[a] & kept  # (T, N)
    num_t, num_n, num_k = counted.shape[0], counted.shape[1], len(num_gt)
    bounds = np.searchsorted(ranked.category, np.arange(num_k + 1))
    # counted_before[t, i]: counted detections in row t before position i.
    counted_before = np.zeros((num_t, num_n + 1), dtype=np.int64)
    np.cumsum(counted, axis=1, out=counted_before[:, 1:])
    t, pos = np.nonzero(counted & ranked.matched[a])  # true positives, by (t, position)
    category = ranked.category[pos]
    segment = t * num_k + category  # non-decreasing: one segment per (t, category)
    length = np.bincount(segment, minlength=num_t * num_k)  # true positives per segment
    start = np.cumsum(length) - length
    tp_sum = (np.arange(len(pos)) - start[segment] + 1).astype(dtype=float)
    # fp_sum + tp_sum: counted detections of the category up to and including pos.
    total = counted_before[t, pos + 1] - counted_before[t, bounds[category]]
    pr = tp_sum / (total.astype(dtype=float) + np.spacing(1))
    envelope = np.append(_segment_reverse_max(pr, segment, num_t * num_k), 0.0)
    tp_scores = np.append(ranked.scores[pos], 0.0)
    # Recall point r is first reached at the c-th true positive (c: least count with
    # c / num_gt >= r); c = 0 (r = 0) at the category's first kept detection, ignored or not.
    need = _counts_needed(np.maximum(num_gt, 1), rec_thresholds)[None]  # (1, K, R)
    length, start = length.reshape(num_t, num_k, 1), start.reshape(num_t, num_k, 1)
    reached = (need >= 1) & (need <= length)
    empty = len(pos)  # index of the appended 0.0
    entry = np.where(reached, start + need - 1, np.where((need == 0) & (length > 0), start, empty))
    first_scores = np.append(ranked.scores, 0.0)[_first_kept(kept, bounds)]
    precision = envelope[entry].transpose(0, 2, 1)  # (T, K, R) -> (T, R, K)
    scores = np.where(reached, tp_scores[np.where(reached, entry, empty)], 0.0)
    scores = np.where(need == 0, first_scores[None, :, None], scores).transpose(0, 2, 1)
    recall = length[..., 0] / np.maximum(num_gt, 1)
    return precision, scores, recall


def _first_kept(kept: np.ndarray, bounds: np.ndarray) -> np.ndarray:
    """(K,) position of each category's first kept detection, N if none.

    kept: (N,); bounds: (K + 1,) start of each category's detections.
    """
    positions = np.append(np.flatnonzero(kept), len(kept))
    first = positions[np.searchsorted(positions, bounds[:-1])]
    return np.where(first < bounds[1:], first, len(kept))


def _segment_reverse_max(values, segment, num_segments) -> np.ndarray:
    """values[i] = max(values[j] for j >= i in i's segment), segments contiguous.

    Exact: a maximum.accumulate over integer keys, each value's rank among all values
    raised by an offset that grows from segment to segment in the reversed order.
    """
    distinct, rank = np.unique(values, return_inverse=True)
    offset = (num_segments - 1 - segment) * len(distinct)
    keys = np.maximum.accumulate((offset + rank.reshape(-1))[::-1])[::-1]
    return distinct[keys - offset]


def _counts_needed(num_gt: np.ndarray, rec_thresholds) -> np.ndarray:
    """(K, R) the least true-positive count c with c / num_gt >= r, in pycocotools' float
    division (ceil(r * num_gt), corrected where its rounding is off by one); num_gt + 1 if
    none."""
    n, r = num_gt[:, None], np.asarray(rec_thresholds, dtype=np.float64)[None, :]
    c = np.ceil(r * n)
    for _ in range(2):
        c = np.where((c >= 1) & ((c - 1) / n >= r), c - 1, c)
        c = np.where(c / n < r, c + 1, c)
    return np.minimum(c, n + 1).astype(np.int64)
