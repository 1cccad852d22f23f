#!/usr/bin/env python
"""REFERENCE, for benchmarks/evaluation.py only: panopticapi's ``pq_compute`` re-implemented.

panopticapi (cocodataset/panopticapi) is not installable here, so this script does what its
evaluation.py does, step for step and at the same cost, with the same command line: the
matched (gt, prediction) annotation list cut into ``cpu_count()`` parts by
``np.array_split``, one ``multiprocessing.Pool`` process per CPU fed by ``apply_async``; per
image both PNGs read by PIL into uint32 arrays and turned into ids (R + 256 G + 256^2 B),
``np.unique`` with counts over the predicted ids (sanity checks, areas) and over
``gt * 256^3 + pred`` in uint64 (intersections), then Python loops over the segment pairs
with numpy scalars as keys; progress printed every 100 images. It is deliberately not
optimised. ``--output`` (ours) writes the results dict as JSON.
"""

import argparse
import json
import multiprocessing
import os
import time
from collections import defaultdict

import numpy as np
from PIL import Image

OFFSET = 256 * 256 * 256
VOID = 0


class CategoryStat:
    def __init__(self):
        self.iou, self.tp, self.fp, self.fn = 0.0, 0, 0, 0

    def __iadd__(self, other):
        self.iou += other.iou
        self.tp += other.tp
        self.fp += other.fp
        self.fn += other.fn
        return self


class Stat:
    def __init__(self):
        self.per_category = defaultdict(CategoryStat)

    def __getitem__(self, category_id):
        return self.per_category[category_id]

    def __iadd__(self, other):
        for category_id, stat in other.per_category.items():
            self.per_category[category_id] += stat
        return self

    def average(self, categories, isthing):
        pq = sq = rq = 0.0
        n = 0
        per_class = {}
        for category_id, category in categories.items():
            if isthing is not None and (category["isthing"] == 1) != isthing:
                continue
            s = self.per_category[category_id]
            if s.tp + s.fp + s.fn == 0:
                per_class[category_id] = {"pq": 0.0, "sq": 0.0, "rq": 0.0}
                continue
            n += 1
            denominator = s.tp + 0.5 * s.fp + 0.5 * s.fn
            class_pq, class_rq = s.iou / denominator, s.tp / denominator
            class_sq = s.iou / s.tp if s.tp != 0 else 0
            per_class[category_id] = {"pq": class_pq, "sq": class_sq, "rq": class_rq}
            pq, sq, rq = pq + class_pq, sq + class_sq, rq + class_rq
        return {"pq": pq / n, "sq": sq / n, "rq": rq / n, "n": n}, per_class


def read_ids(path):
    color = np.array(Image.open(path), dtype=np.uint32)
    return color[:, :, 0] + 256 * color[:, :, 1] + 256 * 256 * color[:, :, 2]


def image_stat(stat, gt_ann, pred_ann, gt_folder, pred_folder, categories):
    pan_gt = read_ids(os.path.join(gt_folder, gt_ann["file_name"]))
    pan_pred = read_ids(os.path.join(pred_folder, pred_ann["file_name"]))
    gt_segms = {s["id"]: s for s in gt_ann["segments_info"]}
    pred_segms = {s["id"]: s for s in pred_ann["segments_info"]}
    image_id = gt_ann["image_id"]

    # predicted areas and sanity checks
    unseen = set(s["id"] for s in pred_ann["segments_info"])
    labels, counts = np.unique(pan_pred, return_counts=True)
    for label, count in zip(labels, counts):
        if label not in pred_segms:
            if label == VOID:
                continue
            raise KeyError(f"image {image_id}: segment {label} is in the PNG but not the JSON")
        pred_segms[label]["area"] = count
        unseen.remove(label)
        if pred_segms[label]["category_id"] not in categories:
            raise KeyError(f"image {image_id}: segment {label} has an unknown category_id")
    if unseen:
        raise KeyError(f"image {image_id}: segments {list(unseen)} are in the JSON, not the PNG")

    # intersections of every (gt, pred) pair of ids
    joint = pan_gt.astype(np.uint64) * OFFSET + pan_pred.astype(np.uint64)
    intersections = {}
    labels, counts = np.unique(joint, return_counts=True)
    for label, count in zip(labels, counts):
        intersections[(label // OFFSET, label % OFFSET)] = count

    # matches
    gt_matched, pred_matched = set(), set()
    for (gt_label, pred_label), intersection in intersections.items():
        if gt_label not in gt_segms or pred_label not in pred_segms:
            continue
        gt, pred = gt_segms[gt_label], pred_segms[pred_label]
        if gt["iscrowd"] == 1 or gt["category_id"] != pred["category_id"]:
            continue
        void = intersections.get((VOID, pred_label), 0)
        iou = intersection / (pred["area"] + gt["area"] - intersection - void)
        if iou > 0.5:
            stat[gt["category_id"]].tp += 1
            stat[gt["category_id"]].iou += iou
            gt_matched.add(gt_label)
            pred_matched.add(pred_label)

    # false negatives; crowd regions per category
    crowd_by_category = {}
    for gt_label, gt in gt_segms.items():
        if gt_label in gt_matched:
            continue
        if gt["iscrowd"] == 1:
            crowd_by_category[gt["category_id"]] = gt_label
            continue
        stat[gt["category_id"]].fn += 1

    # false positives, unless mostly on VOID or on a crowd region of their category
    for pred_label, pred in pred_segms.items():
        if pred_label in pred_matched:
            continue
        ignored = intersections.get((VOID, pred_label), 0)
        if pred["category_id"] in crowd_by_category:
            ignored += intersections.get((crowd_by_category[pred["category_id"]], pred_label), 0)
        if ignored / pred["area"] > 0.5:
            continue
        stat[pred["category_id"]].fp += 1


def single_core(proc_id, annotation_set, gt_folder, pred_folder, categories):
    stat = Stat()
    for i, (gt_ann, pred_ann) in enumerate(annotation_set):
        if i % 100 == 0:
            print(f"Core: {proc_id}, {i} from {len(annotation_set)} images processed")
        image_stat(stat, gt_ann, pred_ann, gt_folder, pred_folder, categories)
    print(f"Core: {proc_id}, all {len(annotation_set)} images processed")
    return stat


def multi_core(matched, gt_folder, pred_folder, categories):
    cpu_num = multiprocessing.cpu_count()
    parts = np.array_split(matched, cpu_num)
    print(f"Number of cores: {cpu_num}, images per core: {len(parts[0])}")
    workers = multiprocessing.Pool(processes=cpu_num)
    jobs = [
        workers.apply_async(single_core, (i, part, gt_folder, pred_folder, categories))
        for i, part in enumerate(parts)
    ]
    stat = Stat()
    for job in jobs:
        stat += job.get()
    workers.close()
    return stat


def pq_compute(gt_json_file, pred_json_file, gt_folder=None, pred_folder=None):
    start = time.time()
    with open(gt_json_file) as f:
        gt_json = json.load(f)
    with open(pred_json_file) as f:
        pred_json = json.load(f)
    gt_folder = gt_folder or gt_json_file.replace(".json", "")
    pred_folder = pred_folder or pred_json_file.replace(".json", "")
    categories = {c["id"]: c for c in gt_json["categories"]}
    for folder in (gt_folder, pred_folder):
        if not os.path.isdir(folder):
            raise Exception(f"Folder {folder} doesn't exist")
    preds = {a["image_id"]: a for a in pred_json["annotations"]}
    matched = []
    for gt_ann in gt_json["annotations"]:
        if gt_ann["image_id"] not in preds:
            raise Exception(f"no prediction for the image with id: {gt_ann['image_id']}")
        matched.append((gt_ann, preds[gt_ann["image_id"]]))
    stat = multi_core(matched, gt_folder, pred_folder, categories)
    results = {}
    for name, isthing in (("All", None), ("Things", True), ("Stuff", False)):
        results[name], per_class = stat.average(categories, isthing)
        if name == "All":
            results["per_class"] = per_class
    for name in ("All", "Things", "Stuff"):
        r = results[name]
        print(f"{name:10s}| {100 * r['pq']:5.1f}  {100 * r['sq']:5.1f}  {100 * r['rq']:5.1f}")
    print(f"Time elapsed: {time.time() - start:0.2f} seconds")
    return results


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--gt_json_file", type=str)
    parser.add_argument("--pred_json_file", type=str)
    parser.add_argument("--gt_folder", type=str, default=None)
    parser.add_argument("--pred_folder", type=str, default=None)
    parser.add_argument("--output", type=str, default=None, help="results as JSON (ours)")
    args = parser.parse_args()
    res = pq_compute(args.gt_json_file, args.pred_json_file, args.gt_folder, args.pred_folder)
    if args.output:
        with open(args.output, "w") as f:
            json.dump({k: res[k] for k in ("All", "Things", "Stuff")}, f)
