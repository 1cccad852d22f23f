"""Independent references for the panoptic tests and benchmark.

* ``reference_pq_compute``: a straightforward, per-segment-pair implementation of the COCO
  panoptic algorithm as panopticapi's evaluation.py describes it (dictionaries of segments,
  ``np.unique`` over the combined uint64 id, a Python loop over every (gt, pred) pair, PIL to
  read PNGs, one process per CPU). Written from the algorithm's description to check and
  time ours against; it is deliberately not optimised.
* ``make_panoptic_set``: a generator of COCO-panoptic-format ground truth and perturbed
  predictions (Voronoi cells, VOID borders, crowd segments, missed and spurious segments).
"""

from __future__ import annotations

import json
import multiprocessing
import os
from collections import defaultdict

import numpy as np
from PIL import Image

OFFSET = 256 * 256 * 256


def _rgb2id(color: np.ndarray) -> np.ndarray:
    color = color.astype(np.uint32)
    return color[:, :, 0] + 256 * color[:, :, 1] + 256 * 256 * color[:, :, 2]


class _Stat:
    def __init__(self):
        self.iou, self.tp, self.fp, self.fn = 0.0, 0, 0, 0


def _one_image(gt_ann, pred_ann, gt_folder, pred_folder, categories, stats) -> None:
    pan_gt = _rgb2id(np.array(Image.open(os.path.join(gt_folder, gt_ann["file_name"]))))
    pan_pred = _rgb2id(np.array(Image.open(os.path.join(pred_folder, pred_ann["file_name"]))))
    gt_segms = {s["id"]: dict(s) for s in gt_ann["segments_info"]}
    pred_segms = {s["id"]: dict(s) for s in pred_ann["segments_info"]}
    labels, counts = np.unique(pan_pred, return_counts=True)
    for label, count in zip(labels.tolist(), counts.tolist()):
        if label == 0:
            continue
        pred_segms[label]["area"] = count  # KeyError: id in PNG missing from JSON
    joint = pan_gt.astype(np.uint64) * OFFSET + pan_pred.astype(np.uint64)
    pair_area = {}
    labels, counts = np.unique(joint, return_counts=True)
    for label, count in zip(labels.tolist(), counts.tolist()):
        pair_area[(label // OFFSET, label % OFFSET)] = count
    gt_matched, pred_matched = set(), set()
    for (gt_label, pred_label), inter in pair_area.items():
        if gt_label not in gt_segms or pred_label not in pred_segms:
            continue
        gt, pred = gt_segms[gt_label], pred_segms[pred_label]
        if gt["iscrowd"] == 1 or gt["category_id"] != pred["category_id"]:
            continue
        union = pred["area"] + gt["area"] - inter - pair_area.get((0, pred_label), 0)
        iou = inter / union
        if iou > 0.5:
            stats[gt["category_id"]].tp += 1
            stats[gt["category_id"]].iou += iou
            gt_matched.add(gt_label)
            pred_matched.add(pred_label)
    crowd_by_cat = {}
    for gt_label, gt in gt_segms.items():
        if gt_label in gt_matched:
            continue
        if gt["iscrowd"] == 1:
            crowd_by_cat[gt["category_id"]] = gt_label
            continue
        stats[gt["category_id"]].fn += 1
    for pred_label, pred in pred_segms.items():
        if pred_label in pred_matched:
            continue
        ignored = pair_area.get((0, pred_label), 0)
        if pred["category_id"] in crowd_by_cat:
            ignored += pair_area.get((crowd_by_cat[pred["category_id"]], pred_label), 0)
        if ignored / pred["area"] > 0.5:
            continue
        stats[pred["category_id"]].fp += 1


def _chunk(args):
    pairs, gt_folder, pred_folder, categories = args
    stats = defaultdict(_Stat)
    for gt_ann, pred_ann in pairs:
        _one_image(gt_ann, pred_ann, gt_folder, pred_folder, categories, stats)
    return {k: (v.iou, v.tp, v.fp, v.fn) for k, v in stats.items()}


def reference_pq_compute(gt_json_file, pred_json_file, gt_folder, pred_folder, workers=None):
    with open(gt_json_file) as f:
        gt_json = json.load(f)
    with open(pred_json_file) as f:
        pred_json = json.load(f)
    categories = {c["id"]: c for c in gt_json["categories"]}
    preds = {a["image_id"]: a for a in pred_json["annotations"]}
    pairs = [(a, preds[a["image_id"]]) for a in gt_json["annotations"]]
    workers = workers or os.cpu_count()
    chunks = [pairs[i::workers] for i in range(workers)]
    with multiprocessing.get_context("fork").Pool(workers) as pool:
        parts = pool.map(_chunk, [(c, gt_folder, pred_folder, categories) for c in chunks])
    stats = defaultdict(_Stat)
    for part in parts:
        for k, (iou, tp, fp, fn) in part.items():
            s = stats[k]
            s.iou, s.tp, s.fp, s.fn = s.iou + iou, s.tp + tp, s.fp + fp, s.fn + fn
    results = {}
    for name, isthing in (("All", None), ("Things", 1), ("Stuff", 0)):
        pq = sq = rq = 0.0
        n = 0
        per_class = {}
        for cat_id, cat in categories.items():
            if isthing is not None and cat["isthing"] != isthing:
                continue
            s = stats[cat_id]
            if s.tp + s.fp + s.fn == 0:
                per_class[cat_id] = {"pq": 0.0, "sq": 0.0, "rq": 0.0}
                continue
            n += 1
            denom = s.tp + 0.5 * s.fp + 0.5 * s.fn
            c_pq, c_rq = s.iou / denom, s.tp / denom
            c_sq = s.iou / s.tp if s.tp else 0.0
            per_class[cat_id] = {"pq": c_pq, "sq": c_sq, "rq": c_rq}
            pq, sq, rq = pq + c_pq, sq + c_sq, rq + c_rq
        results[name] = {"pq": pq / n, "sq": sq / n, "rq": rq / n, "n": n}
        if name == "All":
            results["per_class"] = per_class
    return results


# ----------------------------------------------------------------------------- generator
CATEGORIES = [{"id": 1 + 3 * i, "name": f"thing{i}", "isthing": 1} for i in range(8)] + [
    {"id": 100 + i, "name": f"stuff{i}", "isthing": 0} for i in range(5)
]


def _cells(rng, seeds, height, width, step=4):
    """(H, W) index of the nearest seed and the gap to the second nearest.

    Computed on a grid ``step`` times coarser and repeated (fast; blocky borders).
    """
    yy, xx = np.mgrid[0:height:step, 0:width:step] + step / 2
    d = (yy[..., None] - seeds[:, 0]) ** 2 + (xx[..., None] - seeds[:, 1]) ** 2
    part = np.partition(d, 1, axis=-1)
    nearest, gap = d.argmin(-1), np.sqrt(part[..., 1]) - np.sqrt(part[..., 0])
    up = lambda a: a.repeat(step, 0).repeat(step, 1)[:height, :width]  # noqa: E731
    return up(nearest), up(gap)


def _random_ids(rng, n):
    ids = np.unique(rng.integers(1, OFFSET, size=2 * n + 8))
    return rng.permutation(ids)[:n]


def make_image(rng, height=480, width=640, num_segments=20):
    """(gt_ids, gt_segments, pred_ids, pred_segments) for one image."""
    seeds = rng.uniform((0, 0), (height, width), size=(num_segments, 2))
    cats = rng.choice([c["id"] for c in CATEGORIES], size=num_segments)
    cell, gap = _cells(rng, seeds, height, width)
    gt_seg_ids = _random_ids(rng, num_segments)
    gt_ids = gt_seg_ids[cell].astype(np.uint32)
    gt_ids[gap < 4.0] = 0  # VOID borders
    crowd = rng.random(num_segments) < 0.1
    # Predictions: jittered seeds, a few missed cells, a few class flips, a few extra cells.
    keep = rng.random(num_segments) > 0.1
    extra = rng.integers(0, 4)
    pred_seeds = np.concatenate(
        [
            seeds[keep] + rng.normal(0, 15, size=(keep.sum(), 2)),
            rng.uniform((0, 0), (height, width), (extra, 2)),
        ]
    )
    pred_cats = np.concatenate([cats[keep], rng.choice([c["id"] for c in CATEGORIES], size=extra)])
    flip = rng.random(len(pred_cats)) < 0.1
    pred_cats[flip] = rng.choice([c["id"] for c in CATEGORIES], size=flip.sum())
    pred_cell, _ = _cells(rng, pred_seeds, height, width)
    pred_seg_ids = _random_ids(rng, len(pred_seeds))
    pred_ids = pred_seg_ids[pred_cell].astype(np.uint32)
    gt_segments = [
        {"id": int(i), "category_id": int(c), "iscrowd": int(cr), "area": int((gt_ids == i).sum())}
        for i, c, cr in zip(gt_seg_ids, cats, crowd)
        if (gt_ids == i).any()
    ]
    present = set(np.unique(pred_ids).tolist())
    pred_segments = [
        {"id": int(i), "category_id": int(c)}
        for i, c in zip(pred_seg_ids, pred_cats)
        if int(i) in present
    ]
    return gt_ids, gt_segments, pred_ids, pred_segments


def _write_png(path, ids):
    rgb = np.stack([ids % 256, ids // 256 % 256, ids // 65536], axis=-1).astype(np.uint8)
    Image.fromarray(rgb).save(path)


def make_panoptic_set(root, num_images, seed=0, height=480, width=640, num_segments=20):
    """Write gt.json + gt/ and pred.json + pred/ under ``root``; returns the four paths."""
    rng = np.random.default_rng(seed)
    paths = {k: os.path.join(root, k) for k in ("gt", "pred")}
    for p in paths.values():
        os.makedirs(p, exist_ok=True)
    gt_anns, pred_anns, images = [], [], []
    for i in range(num_images):
        gt_ids, gt_segs, pred_ids, pred_segs = make_image(rng, height, width, num_segments)
        name = f"{i:06d}.png"
        _write_png(os.path.join(paths["gt"], name), gt_ids)
        _write_png(os.path.join(paths["pred"], name), pred_ids)
        images.append({"id": i, "file_name": f"{i:06d}.jpg", "height": height, "width": width})
        gt_anns.append({"image_id": i, "file_name": name, "segments_info": gt_segs})
        pred_anns.append({"image_id": i, "file_name": name, "segments_info": pred_segs})
    for key, anns in (("gt", gt_anns), ("pred", pred_anns)):
        with open(paths[key] + ".json", "w") as f:
            json.dump({"images": images, "annotations": anns, "categories": CATEGORIES}, f)
    return paths["gt"] + ".json", paths["pred"] + ".json", paths["gt"], paths["pred"]
