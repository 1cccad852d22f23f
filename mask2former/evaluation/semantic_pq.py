"""PQ (and mIoU) of semantic segmentation predictions, as the published Mask2Former tool.

Each class present in an image forms one segment, in the ground truth (the dataset's
semantic label image, the ignore label as VOID) and in the prediction; PQ is then the COCO
panoptic algorithm on those segments, all categories counting as stuff. Predictions are
the records of ``sem_seg_predictions.json`` written by :class:`SemSegEvaluator`:
``{"file_name", "category_id" (dataset id), "segmentation" (COCO RLE)}``.
"""

from __future__ import annotations

import logging
import os
from collections import OrderedDict, defaultdict
from typing import Any

import numpy as np
import pycocotools.mask as mask_util

from mask2former.data.catalog import DatasetCatalog, MetadataCatalog
from mask2former.evaluation.panoptic_quality import PQStat, image_pq_stat, pq_results
from mask2former.evaluation.sem_seg_evaluation import (
    confusion_matrix,
    read_label_png,
    sem_seg_metrics,
)

logger = logging.getLogger(__name__)


def _stem(path: str) -> str:
    return os.path.splitext(os.path.basename(path))[0]


def labels_to_segments(labels: np.ndarray, void: int) -> tuple[np.ndarray, list[dict]]:
    """(H, W) class labels -> (ids, segments_info): class c is segment c + 1, ``void`` is 0."""
    ids = np.where(labels == void, 0, labels + 1)
    classes, counts = np.unique(labels[labels != void], return_counts=True)
    segments = [
        {"id": int(c) + 1, "category_id": int(c), "iscrowd": 0, "area": int(n)}
        for c, n in zip(classes, counts)
    ]
    return ids, segments


def rasterize_predictions(records: list[dict], shape: tuple, to_contiguous: Any, name: str):
    """(H, W) contiguous labels from one image's per-class RLE records; every pixel covered."""
    labels = np.full(shape, -1, dtype=np.int64)
    for rec in records:
        cat = rec["category_id"]
        cls = to_contiguous[cat] if to_contiguous is not None else cat
        mask = mask_util.decode(rec["segmentation"]).astype(bool)
        if mask.shape != shape:
            raise ValueError(f"{name}: prediction mask is {mask.shape}, ground truth {shape}")
        labels[mask] = cls
    uncovered = int((labels < 0).sum())
    if uncovered:
        raise ValueError(
            f"{name}: predictions leave {uncovered} of {labels.size} pixels unlabelled"
        )
    return labels


def semantic_pq(dataset_name: str, predictions: list[dict]) -> dict[str, dict[str, float]]:
    """{"panoptic_seg": PQ/SQ/RQ (all = stuff), "sem_seg": mIoU etc.} in percent."""
    meta = MetadataCatalog.get(dataset_name)
    num_classes, ignore = len(meta.stuff_classes), meta.ignore_label
    mapping = meta.get("stuff_dataset_id_to_contiguous_id")
    gt_files = {
        _stem(d["file_name"]): d["sem_seg_file_name"] for d in DatasetCatalog.get(dataset_name)
    }
    by_image: dict[str, list[dict]] = defaultdict(list)
    for rec in predictions:
        by_image[_stem(rec["file_name"])].append(rec)
    categories = np.arange(num_classes)
    stat = PQStat.zeros(categories)
    conf = np.zeros((num_classes + 1, num_classes + 1), dtype=np.int64)
    for stem, records in by_image.items():
        if stem not in gt_files:
            raise KeyError(f"prediction for {stem!r}, which is not an image of {dataset_name!r}")
        gt = read_label_png(gt_files[stem]).astype(np.int64)
        pred = rasterize_predictions(records, gt.shape, mapping, stem)
        conf += confusion_matrix(pred, gt, num_classes, ignore)
        gt_ids, gt_segs = labels_to_segments(gt, ignore)
        pred_ids, pred_segs = labels_to_segments(pred, -1)
        stat += image_pq_stat(gt_ids, gt_segs, pred_ids, pred_segs, categories, stem)
    logger.info("Scored %d images of %s", len(by_image), dataset_name)
    pq = pq_results(stat, {int(c): False for c in categories})
    panoptic = {
        f"{m.upper()}{sfx}": 100 * pq[g][m]
        for g, sfx in (("All", ""), ("Stuff", "_st"))
        for m in ("pq", "sq", "rq")
    }
    return OrderedDict(panoptic_seg=panoptic, sem_seg=sem_seg_metrics(conf, meta.stuff_classes))
