"""pycocotools' COCOeval with ``evaluate`` and ``accumulate`` rewritten over arrays.

detectron2 scores COCO with a C++ ``COCOeval_opt`` because pycocotools' pure-Python
``evaluateImg`` (a loop over IoU thresholds x detections x ground truths for every image,
category and area range) and ``accumulate`` (a loop over categories x area ranges x maxDets,
each concatenating per-image dicts) cost more than the model's inference. ``FastCOCOeval``
computes the same numbers in Python + numpy:

* only (image, category) pairs that have a detection or a ground truth are visited, not
  every pair of the dataset;
* greedy matching runs only on the detections and ground truths that have an IoU of at
  least the lowest threshold with something (the others can neither match nor block a
  match), usually a handful per pair;
* ``accumulate`` works on one concatenated array per (category, area range) and does the
  precision envelope with ``maximum.accumulate`` instead of a Python loop.

Same rules, same order of floating-point operations, same stable sorts: ``eval["precision"]``,
``eval["recall"]``, ``eval["scores"]`` and ``stats`` are bit-identical to pycocotools'
(tests/evaluation/test_fast_coco_eval.py compares them). ``summarize`` is pycocotools' own.
Not filled: ``evalImgs`` and ``ious`` (per-image dicts nothing here reads). Supported:
``iouType`` "segm" or "bbox" with ``useCats`` 1, COCOeval's default for both.
"""

from __future__ import annotations

import copy
import datetime
from dataclasses import dataclass, field

import numpy as np
from pycocotools import mask as mask_util
from pycocotools.cocoeval import COCOeval

__all__ = ["FastCOCOeval"]


@dataclass
class _Category:
    """One category's detections over all images, in image order and, within an image, by
    descending score (stable), as pycocotools concatenates them; kept as Python lists while
    ``evaluate`` visits the images and turned into arrays once by ``accumulate``."""

    scores: list = field(default_factory=list)  # (N,)
    ranks: list = field(default_factory=list)  # (N,) position within its image
    areas: list = field(default_factory=list)  # (N,)
    num_gt: list = field(default_factory=list)  # (A,) ground truths not ignored (npig)
    # (indices (P,), matched (A, T, P), ignored (A, T, P)) of the detections whose IoU with
    # some ground truth reaches the lowest threshold; every other detection is unmatched.
    matches: list = field(default_factory=list)


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
        self._prepare()
        self._categories = [_Category(num_gt=[0] * len(p.areaRng)) for _ in p.catIds]
        img_index = {img_id: i for i, img_id in enumerate(p.imgIds)}
        cat_index = {cat_id: k for k, cat_id in enumerate(p.catIds)}
        keys = set(self._gts) | set(self._dts)
        for img_id, cat_id in sorted(keys, key=lambda key: (img_index[key[0]], key[1])):
            self._evaluate_pair(img_id, cat_id, self._categories[cat_index[cat_id]])
        self._paramsEval = copy.deepcopy(self.params)

    def _evaluate_pair(self, img_id, cat_id, category: _Category) -> None:
        """Add one image's detections and ground truths of one category."""
        p = self.params
        gts, dts = self._gts.get((img_id, cat_id), []), self._dts.get((img_id, cat_id), [])
        if len(dts) > 1:
            order = np.argsort([-d["score"] for d in dts], kind="mergesort")
            dts = [dts[i] for i in order[: p.maxDets[-1]]]
        first = len(category.scores)
        category.scores.extend(d["score"] for d in dts)
        category.ranks.extend(range(len(dts)))
        category.areas.extend(d["area"] for d in dts)
        gt_ignore = [
            [bool(g["ignore"]) or g["area"] < lo or g["area"] > hi for g in gts]
            for lo, hi in p.areaRng
        ]
        for a, ignore in enumerate(gt_ignore):
            category.num_gt[a] += ignore.count(False)
        if gts and dts:
            ious = _ious(gts, dts, p.iouType)
            if (ious >= _lowest(p.iouThrs)).any():
                rows, matched, ignored = self._match(gts, dts, ious, gt_ignore)
                category.matches.append((first + rows, matched, ignored))

    def _match(self, gts, dts, ious, gt_ignore) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """pycocotools' dtMatches != 0 and dtIgnore of the detections that can match.

        Only detections and ground truths with an IoU of at least the lowest threshold take
        part (the others can neither match nor block a match). Returns (rows (P,), matched
        (A, T, P), ignored (A, T, P)) with rows the detections' indices in ``dts``.
        """
        p = self.params
        rows, cols, sub, reached = _candidates(ious, p.iouThrs)
        crowd = [int(gts[g]["iscrowd"]) for g in cols]
        gt_ids = [gts[g]["id"] for g in cols]
        dt_ids = [dts[d]["id"] for d in rows]
        dt_areas = [dts[d]["area"] for d in rows]
        shape = (len(p.areaRng), len(p.iouThrs), len(rows))
        matched, ignored = np.zeros(shape, dtype=bool), np.zeros(shape, dtype=bool)
        done: dict[tuple, list[int]] = {}
        for a, (lo, hi) in enumerate(p.areaRng):
            ignore = [int(gt_ignore[a][g]) for g in cols]
            outside = [area < lo or area > hi for area in dt_areas]
            for t, count in enumerate(reached):
                # A threshold acts only through which IoUs reach it: thresholds that as many
                # IoUs reach give the same matching.
                key = (tuple(ignore), count)
                if key not in done:
                    threshold = min(float(p.iouThrs[t]), 1 - 1e-10)
                    done[key] = _greedy_match(sub, threshold, ignore, crowd, dt_ids)
                for i, g in enumerate(done[key]):
                    hit = g >= 0 and gt_ids[g] != 0  # pycocotools: dtMatches holds the gt id
                    matched[a, t, i] = hit
                    ignored[a, t, i] = (g >= 0 and ignore[g] == 1) or (not hit and outside[i])
        return rows, matched, ignored

    def accumulate(self, p=None) -> None:
        if p is not None and p is not self.params:
            raise ValueError("FastCOCOeval.accumulate takes no parameters; set self.params")
        p = self.params
        T, R, K = len(p.iouThrs), len(p.recThrs), len(p.catIds)
        A, M = len(p.areaRng), len(p.maxDets)
        precision = -np.ones((T, R, K, A, M))
        recall = -np.ones((T, K, A, M))
        scores = -np.ones((T, R, K, A, M))
        for k, category in enumerate(self._categories):
            all_scores = np.array(category.scores, dtype=np.float64)
            ranks = np.array(category.ranks, dtype=np.int64)
            areas = np.array(category.areas, dtype=np.float64)
            for a, (lo, hi) in enumerate(p.areaRng):
                if category.num_gt[a] == 0:
                    continue
                # Unmatched detections are ignored outside the area range.
                outside = (areas < lo) | (areas > hi)
                matched = np.zeros((T, len(areas)), dtype=bool)
                ignored = np.repeat(outside[None, :], T, axis=0)
                for positions, pair_matched, pair_ignored in category.matches:
                    matched[:, positions], ignored[:, positions] = pair_matched[a], pair_ignored[a]
                for m, max_det in enumerate(p.maxDets):
                    if m and len(ranks) and ranks.max() < p.maxDets[m - 1]:  # nothing cut
                        precision[:, :, k, a, m] = precision[:, :, k, a, m - 1]
                        scores[:, :, k, a, m] = scores[:, :, k, a, m - 1]
                        recall[:, k, a, m] = recall[:, k, a, m - 1]
                        continue
                    keep = ranks < max_det
                    dt_scores = all_scores[keep]
                    order = np.argsort(-dt_scores, kind="mergesort")
                    result = _precision_recall(
                        dt_scores[order],
                        matched[:, keep][:, order],
                        ignored[:, keep][:, order],
                        category.num_gt[a],
                        p.recThrs,
                    )
                    precision[:, :, k, a, m], scores[:, :, k, a, m], recall[:, k, a, m] = result
        self.eval = {
            "params": p,
            "counts": [T, R, K, A, M],
            "date": datetime.datetime.now().strftime("%Y-%m-%d %H:%M:%S"),
            "precision": precision,
            "recall": recall,
            "scores": scores,
        }


def _lowest(thresholds) -> float:
    """The lowest IoU a match needs (pycocotools caps each threshold at 1 - 1e-10)."""
    return min(float(min(thresholds)), 1 - 1e-10)


def _ious(gts: list[dict], dts: list[dict], iou_type: str) -> np.ndarray:
    """(D, G) IoU by pycocotools (crowd ground truths: intersection over the detection)."""
    if not gts or not dts:
        return np.zeros((len(dts), len(gts)))
    field_name = "segmentation" if iou_type == "segm" else "bbox"
    crowd = [int(g["iscrowd"]) for g in gts]
    return mask_util.iou([d[field_name] for d in dts], [g[field_name] for g in gts], crowd)


def _candidates(ious: np.ndarray, thresholds) -> tuple[np.ndarray, list, list, list]:
    """The detections (rows) and ground truths (cols) with an IoU of at least the lowest
    threshold, their (rows, cols) IoUs as lists, and how many of those reach each threshold."""
    capped = np.minimum(np.asarray(thresholds, dtype=np.float64), 1 - 1e-10)
    hits = ious >= capped.min()
    rows, cols = np.flatnonzero(hits.any(axis=1)), np.flatnonzero(hits.any(axis=0))
    sub = ious[np.ix_(rows, cols)]
    reached = (sub.ravel()[None, :] >= capped[:, None]).sum(axis=1)
    return rows, cols.tolist(), sub.tolist(), reached.tolist()


def _greedy_match(ious: list, threshold: float, ignore: list, crowd: list, dt_ids: list):
    """pycocotools' greedy matching at one IoU threshold: for each detection, its ground
    truth's index or -1.

    ious: (D, G) lists, detections by descending score; ignore, crowd: (G,); dt_ids: (D,).
    Each detection in turn takes, among ground truths with IoU >= threshold that are free
    (not yet taken, or crowd), the one with the highest IoU (the later one on a tie, in the
    order with ignored ground truths last), preferring any non-ignored one to ignored ones.
    A ground truth is taken by a detection with a positive id (pycocotools marks it with
    that id).
    """
    order = sorted(range(len(ignore)), key=ignore.__getitem__)  # stable: ignored last
    taken = [False] * len(ignore)
    result = []
    for d, row in enumerate(ious):
        best, m = threshold, -1
        for g in order:
            if taken[g] and not crowd[g]:
                continue
            if m > -1 and ignore[m] == 0 and ignore[g] == 1:
                break
            if row[g] < best:
                continue
            best, m = row[g], g
        if m > -1:
            taken[m] = taken[m] or dt_ids[d] > 0
        result.append(m)
    return result


def _precision_recall(dt_scores, matched, ignored, num_gt, rec_thresholds):
    """(precision (T, R), scores (T, R), recall (T,)) of one category, area range, maxDets.

    dt_scores: (N,) descending; matched, ignored: (T, N). pycocotools' formulas, in its
    order of operations.
    """
    num_t, num_d, num_r = matched.shape[0], len(dt_scores), len(rec_thresholds)
    tps = np.logical_and(matched, np.logical_not(ignored))
    fps = np.logical_and(np.logical_not(matched), np.logical_not(ignored))
    tp_sum = np.cumsum(tps, axis=1).astype(dtype=float)
    fp_sum = np.cumsum(fps, axis=1).astype(dtype=float)
    rc = tp_sum / num_gt
    pr = tp_sum / (fp_sum + tp_sum + np.spacing(1))
    recall = rc[:, -1] if num_d else np.zeros(num_t)
    # Precision made non-increasing from the right: pr[i - 1] = max(pr[i - 1], pr[i]).
    pr = np.maximum.accumulate(pr[:, ::-1], axis=1)[:, ::-1]
    precision, scores = np.zeros((num_t, num_r)), np.zeros((num_t, num_r))
    for t in range(num_t):
        inds = np.searchsorted(rc[t], rec_thresholds, side="left")
        valid = inds < num_d  # pycocotools stops at the first index past the end
        precision[t, valid] = pr[t, inds[valid]]
        scores[t, valid] = dt_scores[inds[valid]]
    return precision, scores, recall
