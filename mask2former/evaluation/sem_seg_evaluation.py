"""Semantic segmentation metrics: mIoU, fwIoU, mACC, pACC and per-class IoU / accuracy."""

from __future__ import annotations

import logging
import os
from collections import OrderedDict
from typing import Optional, Sequence

import cv2
import numpy as np
import torch

from mask2former.data.catalog import DatasetCatalog, MetadataCatalog
from mask2former.evaluation.evaluator import DatasetEvaluator, gather_on_main
from mask2former.evaluation.panoptic_quality import histogram
from mask2former.structures.rle import encode_label_map
from mask2former.utils.file_io import read_bytes, save_json
from mask2former.utils.native import codec
from mask2former.utils.png import decode_png

logger = logging.getLogger(__name__)


def read_label_png(path: str) -> np.ndarray:
    """Read a single-channel label image as (H, W) uint8 or uint16, as stored (8 or 16 bit).

    8-bit grey PNGs are decoded by :func:`mask2former.utils.png.decode_png`, other images by
    OpenCV.
    """
    data = read_bytes(path, "semantic label image")
    label = decode_png(data, path)
    if label is None:
        label = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_UNCHANGED)
    if label is None:
        raise ValueError(f"cannot decode semantic label image {path!r}")
    if label.ndim != 2:
        raise ValueError(f"semantic label image {path!r} must have one channel; got {label.shape}")
    return label


def confusion_matrix(
    pred: np.ndarray, gt: np.ndarray, num_classes: int, ignore_label: int
) -> np.ndarray:
    """(K + 1, K + 1) pixel counts, rows predicted class, columns gt class (K = ignored).

    pred, gt: (H, W) integer labels; pred in [0, K), gt in [0, K] or ``ignore_label``.
    8-bit maps are counted in one pass by ``mask2former._codec``; otherwise one histogram of
    ``(K + 1) * pred + gt column``, computed in uint16 when it fits (K < 256): a fifth of the
    time of int64 arithmetic and ``bincount`` on a 640x480 image.
    """
    if pred.shape != gt.shape:
        raise ValueError(f"prediction {pred.shape} and ground truth {gt.shape} differ in size")
    n = num_classes + 1
    native = codec()
    if native is not None and pred.dtype == gt.dtype == np.uint8 and num_classes <= 256:
        conf = np.zeros((n, n), dtype=np.int64)
        table = _column_table(gt.dtype, num_classes, ignore_label)
        args = (np.ascontiguousarray(pred), np.ascontiguousarray(gt), table, num_classes, conf)
        if native.label_pair_counts(*args) < 0:
            return conf
        # a label out of range: the path below names it
    if pred.size and (pred.min() < 0 or pred.max() >= num_classes):
        raise ValueError(f"predicted labels must lie in 0..{num_classes - 1}")
    joint = np.multiply(pred, n, dtype=np.uint16 if n * n <= 2**16 else np.int64, casting="unsafe")
    np.add(joint, _gt_columns(gt, num_classes, ignore_label), out=joint, casting="unsafe")
    return histogram(joint, n * n).reshape(n, n)


def _column_table(dtype: np.dtype, num_classes: int, ignore_label: int) -> np.ndarray:
    """uint16 confusion-matrix column of every 8- or 16-bit gt label; 2^16 - 1 where the
    label is neither a class nor the ignore label."""
    size = np.iinfo(dtype).max + 1
    table = np.full(size, 2**16 - 1, dtype=np.uint16)
    table[: min(num_classes + 1, size)] = np.arange(min(num_classes + 1, size))
    if 0 <= ignore_label < size:
        table[ignore_label] = num_classes
    return table


def _gt_columns(gt: np.ndarray, num_classes: int, ignore_label: int) -> np.ndarray:
    """gt labels as confusion-matrix columns: the ignore label -> K; others outside 0..K are
    errors. 8- and 16-bit labels go through a lookup table, other types through ``where``."""
    if gt.dtype in (np.uint8, np.uint16) and num_classes < 2**16 - 1:
        columns = np.take(_column_table(gt.dtype, num_classes, ignore_label), gt)
        bad = columns == 2**16 - 1
    else:
        columns = np.where(gt == ignore_label, num_classes, gt)
        bad = (columns < 0) | (columns > num_classes)
    if bad.any():
        raise ValueError(
            f"ground-truth labels {np.unique(gt[bad]).tolist()[:10]} are outside "
            f"0..{num_classes - 1} and not the ignore label {ignore_label}"
        )
    return columns


def sem_seg_metrics(conf: np.ndarray, class_names: Sequence[str]) -> dict[str, float]:
    """detectron2's semantic metrics (percent) from a confusion matrix.

    IoU and accuracy of a class are nan when it has no ground-truth pixel; the means average
    over classes that have one; fwIoU weighs IoU by ground-truth pixel share; pACC is the
    fraction of non-ignored pixels predicted right.
    """
    num_classes = conf.shape[0] - 1
    tp = conf.diagonal()[:-1].astype(np.float64)
    pos_gt = conf[:-1, :-1].sum(axis=0).astype(np.float64)
    pos_pred = conf[:-1, :-1].sum(axis=1).astype(np.float64)
    valid = pos_gt > 0
    acc = np.full(num_classes, np.nan)
    iou = np.full(num_classes, np.nan)
    acc[valid] = tp[valid] / pos_gt[valid]
    iou[valid] = tp[valid] / (pos_gt + pos_pred - tp)[valid]
    weights = pos_gt / max(pos_gt.sum(), 1)
    res: dict[str, float] = {
        "mIoU": 100 * float(np.mean(iou[valid])) if valid.any() else float("nan"),
        "fwIoU": 100 * float(np.sum(iou[valid] * weights[valid])),
    }
    res.update({f"IoU-{name}": 100 * float(iou[i]) for i, name in enumerate(class_names)})
    res["mACC"] = 100 * float(np.mean(acc[valid])) if valid.any() else float("nan")
    res["pACC"] = 100 * float(tp.sum() / max(pos_gt.sum(), 1))
    res.update({f"ACC-{name}": 100 * float(acc[i]) for i, name in enumerate(class_names)})
    return res


class SemSegEvaluator(DatasetEvaluator):
    """mIoU etc. of ``output["sem_seg"]`` (argmax over classes) against the dataset's labels.

    Ground truth comes from each input's "sem_seg_file_name" (or, when the input lacks it, the
    DatasetCatalog record with the same "file_name"). Reads metadata stuff_classes and
    ignore_label; with ``output_dir``, writes sem_seg_predictions.json (one RLE per image and
    class, category ids mapped back by stuff_dataset_id_to_contiguous_id when it exists).
    """

    required_outputs = ("sem_seg",)

    def __init__(
        self,
        dataset_name: str,
        distributed: bool = True,
        output_dir: Optional[str] = None,
        *,
        num_classes: Optional[int] = None,
        ignore_label: Optional[int] = None,
    ):
        self._dataset_name = dataset_name
        self._metadata = MetadataCatalog.get(dataset_name)
        self._class_names = list(self._metadata.stuff_classes)
        self._num_classes = num_classes or len(self._class_names)
        if self._num_classes != len(self._class_names):
            raise ValueError(
                f"num_classes={self._num_classes} but dataset {dataset_name!r} has "
                f"{len(self._class_names)} stuff_classes"
            )
        self._ignore_label = self._metadata.ignore_label if ignore_label is None else ignore_label
        self._label_dtype = torch.uint8 if self._num_classes <= 256 else torch.int64
        self._distributed = distributed
        self._output_dir = output_dir
        self._gt_files: Optional[dict[str, str]] = None
        self.reset()

    def reset(self) -> None:
        n = self._num_classes + 1
        self._conf = np.zeros((n, n), dtype=np.int64)
        self._predictions: list[dict] = []

    def process(self, inputs: list[dict], outputs: list[dict]) -> None:
        for inp, out in zip(inputs, outputs):
            scores = out["sem_seg"]
            if scores.ndim != 3 or scores.shape[0] != self._num_classes:
                raise ValueError(
                    f"{inp['file_name']}: sem_seg must be ({self._num_classes}, H, W) scores; "
                    f"got {tuple(scores.shape)}"
                )
            pred = scores.argmax(dim=0).to(self._label_dtype).cpu().numpy()
            gt = read_label_png(self._gt_file(inp))
            self._conf += confusion_matrix(pred, gt, self._num_classes, self._ignore_label)
            if self._output_dir:
                self._predictions.extend(self._encode_json(pred, inp["file_name"]))

    def evaluate(self) -> Optional[dict[str, dict[str, float]]]:
        gathered = gather_on_main((self._conf, self._predictions), self._distributed)
        if gathered is None:
            return {}
        conf = sum(c for c, _ in gathered)
        predictions = [p for _, preds in gathered for p in preds]
        if self._output_dir:
            path = os.path.join(self._output_dir, "sem_seg_predictions.json")
            save_json(predictions, path)
            logger.info("Wrote %s", path)
        return OrderedDict(sem_seg=sem_seg_metrics(conf, self._class_names))

    def _gt_file(self, inp: dict) -> str:
        if "sem_seg_file_name" in inp:
            return inp["sem_seg_file_name"]
        if self._gt_files is None:
            self._gt_files = {
                d["file_name"]: d["sem_seg_file_name"]
                for d in DatasetCatalog.get(self._dataset_name)
            }
        if inp["file_name"] not in self._gt_files:
            raise KeyError(
                f"no sem_seg_file_name for {inp['file_name']!r} in {self._dataset_name!r}"
            )
        return self._gt_files[inp["file_name"]]

    def _encode_json(self, pred: np.ndarray, file_name: str) -> list[dict]:
        mapping = self._metadata.get("stuff_dataset_id_to_contiguous_id")
        reverse = {v: k for k, v in mapping.items()} if mapping else None
        labels, rles = encode_label_map(pred)
        return [
            {
                "file_name": file_name,
                "category_id": int(reverse[label] if reverse else label),
                "segmentation": rle,
            }
            for label, rle in zip(labels, rles)
        ]
