"""YouTube-VIS video AP: COCO-style AP and AR where an object is a track through a video.

The semantics of the challenge's ``YTVOSeval`` (youtubevos/cocoapi, vendored by the published
Mask2Former as ``ytvis_api``), written anew:

- the IoU of a predicted and a ground-truth track is the sum over frames of their
  intersections over the sum over frames of their unions; a frame where both are absent or
  empty adds nothing, and a pair whose union is empty has IoU 0;
- the area of a track is the mean of its non-zero per-frame areas (0 when it has none): a
  ground truth's from the "areas" of its annotation, a prediction's from its masks. The area
  ranges are YouTube-VIS's, not COCO's: all, small (< 128^2), medium (128^2 to 256^2), large;
- per video and category, predictions in descending score order (stable), at most
  ``max(max_dets)``, are matched greedily to ground truths at each IoU threshold
  (.50:.05:.95) as COCO does: a crowd ground truth is ignored and may match several
  predictions; a ground truth outside the area range is ignored, and so is an unmatched
  prediction outside it;
- precision is interpolated at 101 recall points; AP averages it over IoU thresholds, recall
  points and the categories that have a ground truth; ARk is the recall with k predictions
  per video.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field
from typing import Optional

import numpy as np
import pycocotools.mask as mask_util

__all__ = ["Track", "VideoAPParams", "VideoAPResult", "evaluate_video_ap", "track_iou"]


@dataclass
class Track:
    """One object through a video: a ground truth or a prediction.

    ``rles``: one compressed COCO RLE per frame, None where the object is absent (all of
    the video's size). ``areas``: per-frame areas that decide the area range (a ground
    truth's "areas"); None computes them from ``rles``.
    """

    video_id: Hashable
    category_id: int
    rles: list[Optional[dict]]
    score: float = 1.0
    iscrowd: bool = False
    areas: Optional[Sequence[Optional[float]]] = None
    #: (T,) pixel count of each frame's mask (0 where absent), for the IoU
    pixels: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        present = [i for i, rle in enumerate(self.rles) if rle is not None]
        self.pixels = np.zeros(len(self.rles), dtype=np.float64)
        if present:
            self.pixels[present] = mask_util.area([self.rles[i] for i in present])

    @property
    def average_area(self) -> float:
        """Mean of the non-zero per-frame areas; 0 when there is none."""
        areas = self.pixels if self.areas is None else self.areas
        nonzero = [float(a) for a in areas if a]
        return float(np.mean(nonzero)) if nonzero else 0.0


@dataclass(frozen=True)
class VideoAPParams:
    """The challenge's evaluation parameters."""

    iou_thresholds: tuple[float, ...] = tuple(np.linspace(0.5, 0.95, 10))
    recall_thresholds: tuple[float, ...] = tuple(np.linspace(0.0, 1.0, 101))
    max_dets: tuple[int, ...] = (1, 10, 100)
    area_ranges: tuple[tuple[str, float, float], ...] = (
        ("all", 0.0, 1e10),
        ("small", 0.0, 128.0**2),
        ("medium", 128.0**2, 256.0**2),
        ("large", 256.0**2, 1e10),
    )


def track_iou(predictions: Sequence[Track], ground_truths: Sequence[Track]) -> np.ndarray:
    """(P, G) video IoU: summed per-frame intersections over summed per-frame unions."""
    inter = np.zeros((len(predictions), len(ground_truths)))
    num_frames = max((len(t.rles) for t in (*predictions, *ground_truths)), default=0)
    for f in range(num_frames):
        p_idx = [i for i, t in enumerate(predictions) if t.rles[f] is not None]
        g_idx = [j for j, t in enumerate(ground_truths) if t.rles[f] is not None]
        if not p_idx or not g_idx:
            continue
        p_rles = [predictions[i].rles[f] for i in p_idx]
        g_rles = [ground_truths[j].rles[f] for j in g_idx]
        iou = np.asarray(mask_util.iou(p_rles, g_rles, [0] * len(g_rles)), dtype=np.float64)
        # intersection i from iou = i / (a + b - i), rounded back to a pixel count
        sums = mask_util.area(p_rles).astype(np.float64)[:, None] + mask_util.area(g_rles)[None]
        inter[np.ix_(p_idx, g_idx)] += np.rint(iou * sums / (1.0 + iou))
    p_total = np.array([t.pixels.sum() for t in predictions])
    g_total = np.array([t.pixels.sum() for t in ground_truths])
    union = p_total[:, None] + g_total[None, :] - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


@dataclass
class _Matches:
    """Matching of one video and category at one area range (COCO's ``evaluateImg``)."""

    scores: np.ndarray  # (P,) predictions in descending score order
    matched: np.ndarray  # (T, P) bool, per IoU threshold
    ignored: np.ndarray  # (T, P) bool
    gt_ignored: np.ndarray  # (G,) bool


def _in_range(area: float, low: float, high: float) -> bool:
    return low <= area <= high


def _greedy_match(
    ious: np.ndarray, gt_ignored: np.ndarray, gt_crowd: np.ndarray, thresholds: Sequence[float]
) -> tuple[np.ndarray, np.ndarray]:
    """COCO's greedy matching. ``ious`` (P, G): predictions by descending score, ground truths
    with the ignored ones last. Returns (matched, on_ignored_gt), each (T, P) bool."""
    num_p, num_g = ious.shape
    matched = np.zeros((len(thresholds), num_p), dtype=bool)
    on_ignored = np.zeros((len(thresholds), num_p), dtype=bool)
    for t, threshold in enumerate(thresholds):
        gt_taken = np.zeros(num_g, dtype=bool)
        for p in range(num_p):
            best, m = min(threshold, 1 - 1e-10), -1
            for g in range(num_g):
                if gt_taken[g] and not gt_crowd[g]:
                    continue
                if m > -1 and not gt_ignored[m] and gt_ignored[g]:
                    break  # matched a regular ground truth; the rest are ignored ones
                if ious[p, g] < best:
                    continue
                best, m = ious[p, g], g
            if m > -1:
                matched[t, p], on_ignored[t, p], gt_taken[m] = True, gt_ignored[m], True
    return matched, on_ignored


def _match_video(
    predictions: list[Track],
    ground_truths: list[Track],
    ious: np.ndarray,
    area_range: tuple[float, float],
    thresholds: Sequence[float],
) -> _Matches:
    """Match one video and category; ``predictions`` sorted and cut, ``ious`` (P, G)."""
    gt_ignored = np.array(
        [g.iscrowd or not _in_range(g.average_area, *area_range) for g in ground_truths],
        dtype=bool,
    )
    order = np.argsort(gt_ignored, kind="mergesort")  # ignored ground truths last
    matched, on_ignored = _greedy_match(
        ious[:, order],
        gt_ignored[order],
        np.array([g.iscrowd for g in ground_truths])[order],
        thresholds,
    )
    outside = np.array([not _in_range(p.average_area, *area_range) for p in predictions], bool)
    ignored = on_ignored | (~matched & outside[None, :])
    scores = np.array([p.score for p in predictions], dtype=np.float64)
    return _Matches(scores, matched, ignored, gt_ignored[order])


def _precision_recall(
    matches: list[_Matches], max_det: int, recall_thresholds: np.ndarray
) -> Optional[tuple[np.ndarray, np.ndarray]]:
    """(T, R) interpolated precision and (T,) recall over videos; None without ground truth
    that counts (COCO's ``accumulate`` for one category, area range and max_det)."""
    gt_ignored = np.concatenate([m.gt_ignored for m in matches])
    num_gt = int(np.count_nonzero(~gt_ignored))
    if num_gt == 0:
        return None
    scores = np.concatenate([m.scores[:max_det] for m in matches])
    order = np.argsort(-scores, kind="mergesort")
    matched = np.concatenate([m.matched[:, :max_det] for m in matches], axis=1)[:, order]
    ignored = np.concatenate([m.ignored[:, :max_det] for m in matches], axis=1)[:, order]
    tp = np.cumsum(matched & ~ignored, axis=1, dtype=np.float64)
    fp = np.cumsum(~matched & ~ignored, axis=1, dtype=np.float64)
    num_t, num_p = tp.shape
    precision = np.zeros((num_t, len(recall_thresholds)))
    recall = tp[:, -1] / num_gt if num_p else np.zeros(num_t)
    for t in range(num_t):
        rc = tp[t] / num_gt
        pr = tp[t] / (fp[t] + tp[t] + np.spacing(1))
        pr = np.maximum.accumulate(pr[::-1])[::-1]  # precision envelope
        idx = np.searchsorted(rc, recall_thresholds, side="left")
        valid = idx < num_p
        precision[t, valid] = pr[idx[valid]]
    return precision, recall


@dataclass
class VideoAPResult:
    """precision (T, R, K, A, M) and recall (T, K, A, M), -1 where a category has no ground
    truth that counts; K follows ``category_ids``, A the area ranges, M ``max_dets``."""

    precision: np.ndarray
    recall: np.ndarray
    category_ids: list[int]
    params: VideoAPParams

    def _mean(self, values: np.ndarray) -> float:
        values = values[values > -1]
        return float(np.mean(values) * 100) if values.size else float("nan")

    def _iou_index(self, threshold: float) -> int:
        return int(np.flatnonzero(np.isclose(self.params.iou_thresholds, threshold))[0])

    def summary(self) -> dict[str, float]:
        """AP, AP50, AP75, APs, APm, APl (largest max_dets), AR1 and AR10, in percent."""
        names = [a[0] for a in self.params.area_ranges]
        last = len(self.params.max_dets) - 1
        p, r = self.precision, self.recall
        metrics = {
            "AP": self._mean(p[..., 0, last]),
            "AP50": self._mean(p[self._iou_index(0.5), ..., 0, last]),
            "AP75": self._mean(p[self._iou_index(0.75), ..., 0, last]),
        }
        for suffix, area in (("s", "small"), ("m", "medium"), ("l", "large")):
            metrics[f"AP{suffix}"] = self._mean(p[..., names.index(area), last])
        for m, max_det in enumerate(self.params.max_dets[:2]):
            metrics[f"AR{max_det}"] = self._mean(r[:, :, 0, m])
        return metrics

    def per_category_ap(self) -> dict[int, float]:
        """{category id: AP in percent} at area "all" and the largest max_dets."""
        return {
            c: self._mean(self.precision[:, :, k, 0, -1]) for k, c in enumerate(self.category_ids)
        }


def _by_video_category(tracks: Sequence[Track]) -> dict[tuple, list[Track]]:
    groups: dict[tuple, list[Track]] = {}
    for track in tracks:
        groups.setdefault((track.video_id, track.category_id), []).append(track)
    return groups


def evaluate_video_ap(
    ground_truths: Sequence[Track],
    predictions: Sequence[Track],
    video_ids: Sequence[Hashable],
    category_ids: Sequence[int],
    params: VideoAPParams = VideoAPParams(),
) -> VideoAPResult:
    """Video AP of ``predictions`` against ``ground_truths`` over ``video_ids`` and
    ``category_ids`` (tracks of other videos or categories are left out)."""
    gts, dts = _by_video_category(ground_truths), _by_video_category(predictions)
    thresholds, areas = params.iou_thresholds, params.area_ranges
    matches: dict[tuple, list[_Matches]] = {}  # (category, area index) -> per video
    for video_id in sorted(video_ids):
        for category_id in category_ids:
            gt = gts.get((video_id, category_id), [])
            dt = sorted(dts.get((video_id, category_id), []), key=lambda t: -t.score)
            dt = dt[: max(params.max_dets)]
            if not gt and not dt:
                continue
            ious = track_iou(dt, gt)
            for a, (_, low, high) in enumerate(areas):
                match = _match_video(dt, gt, ious, (low, high), thresholds)
                matches.setdefault((category_id, a), []).append(match)
    shape = (len(thresholds), len(params.recall_thresholds), len(category_ids))
    precision = -np.ones(shape + (len(areas), len(params.max_dets)))
    recall = -np.ones((len(thresholds), len(category_ids), len(areas), len(params.max_dets)))
    for (category_id, a), per_video in matches.items():
        k = list(category_ids).index(category_id)
        for m, max_det in enumerate(params.max_dets):
            curve = _precision_recall(per_video, max_det, np.asarray(params.recall_thresholds))
            if curve is not None:
                precision[:, :, k, a, m], recall[:, k, a, m] = curve
    return VideoAPResult(precision, recall, list(category_ids), params)
