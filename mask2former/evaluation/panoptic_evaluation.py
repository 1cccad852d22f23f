"""COCO panoptic evaluation (PQ, SQ, RQ) of a model's ``panoptic_seg`` outputs.

Each image is scored as it is processed (the ground-truth PNG is read then and the
prediction is matched in memory by :func:`image_pq_stat`); only per-category sums travel
between processes. With ``output_dir`` the predictions are also written in the COCO panoptic
format (``panoptic_seg_predictions.json`` + ``panoptic_seg_predictions/*.png``) so that
:func:`pq_compute` or panopticapi can score them again: each image's PNG is encoded as it is
processed and kept in memory (tens of kB an image), and the main process writes the folder
and the JSON whole at the end, so an evaluation that fails half-way leaves no partial files.
"""

from __future__ import annotations

import logging
import os
from collections import OrderedDict
from typing import Any, Optional

import numpy as np
import torch

from mask2former.data.catalog import MetadataCatalog
from mask2former.evaluation.evaluator import DatasetEvaluator, gather_on_main
from mask2former.evaluation.panoptic_quality import (
    PQStat,
    encode_panoptic_png,
    image_pq_stat,
    pq_results,
    read_panoptic_png,
)
from mask2former.utils.file_io import atomic_directory, load_json, save_json

logger = logging.getLogger(__name__)

PREDICTIONS_NAME = "panoptic_seg_predictions"


def _as_id_map(id_map: Any, image_id: Any, allow_void: bool = False) -> np.ndarray:
    """Check a predicted (H, W) integer id map (tensor or array) and return it as uint32
    when its ids lie in [0, 256^3) (the panoptic PNG's range, where matching and encoding
    need no conversion), else as int64.

    Ids must be non-negative, or at least -1 (VOID) with ``allow_void``.
    """
    dtype = getattr(id_map, "dtype", None)
    is_int = (
        (not id_map.is_floating_point() and id_map.dtype != torch.bool)
        if isinstance(id_map, torch.Tensor)
        else isinstance(id_map, np.ndarray) and np.issubdtype(id_map.dtype, np.integer)
    )
    if not is_int:
        raise TypeError(
            f"image {image_id!r}: the panoptic_seg id map must be an integer tensor; got {dtype}"
        )
    if id_map.ndim != 2:
        raise ValueError(
            f"image {image_id!r}: the id map must be (H, W); got {tuple(id_map.shape)}"
        )
    ids = id_map.cpu().numpy() if isinstance(id_map, torch.Tensor) else id_map
    low, high = (int(ids.min()), int(ids.max())) if ids.size else (0, 0)
    if low < (-1 if allow_void else 0):
        raise ValueError(f"image {image_id!r}: negative ids in the panoptic id map")
    if low >= 0 and high < 256**3:  # int32 ids in range have the same bits as uint32
        return ids.view(np.uint32) if ids.dtype.itemsize == 4 else ids.astype(np.uint32)
    return ids.astype(np.int64, copy=False)


def segments_from_label_divisor(
    ids: np.ndarray, label_divisor: int, thing_ids: set[int]
) -> tuple[np.ndarray, list[dict]]:
    """detectron2's convention when segments_info is None: pixel = class * divisor + instance,
    -1 for VOID. Returns ids shifted by one (0 = VOID) and their segments_info."""
    segments = []
    for label in np.unique(ids).tolist():
        if label == -1:
            continue
        cls = label // label_divisor
        segments.append({"id": label + 1, "category_id": cls, "isthing": cls in thing_ids})
    return ids + 1, segments


class COCOPanopticEvaluator(DatasetEvaluator):
    """PQ / SQ / RQ (all, things, stuff, per class) in percent, by the COCO panoptic rules.

    Reads metadata panoptic_json (ground-truth segments and categories), panoptic_root
    (ground-truth PNGs), thing/stuff_dataset_id_to_contiguous_id (to map predicted
    contiguous ids back) and thing_classes / stuff_classes (per-class names).
    """

    required_outputs = ("panoptic_seg",)

    def __init__(
        self, dataset_name: str, output_dir: Optional[str] = None, *, distributed: bool = True
    ):
        self._metadata = MetadataCatalog.get(dataset_name)
        self._output_dir = output_dir
        self._distributed = distributed
        gt = load_json(self._metadata.panoptic_json, "panoptic_json")
        self._gt_anns = {ann["image_id"]: ann for ann in gt["annotations"]}
        self._categories = {int(c["id"]): c for c in gt["categories"]}
        self._category_ids = np.asarray(sorted(self._categories), dtype=np.int64)
        self._to_dataset_id = {
            True: _reverse(self._metadata.get("thing_dataset_id_to_contiguous_id")),
            False: _reverse(self._metadata.get("stuff_dataset_id_to_contiguous_id")),
        }
        self.reset()

    def reset(self) -> None:
        self._stat = PQStat.zeros(self._category_ids)
        self._predictions: list[dict] = []  # with output_dir: annotation + "png" bytes

    def process(self, inputs: list[dict], outputs: list[dict]) -> None:
        for inp, out in zip(inputs, outputs):
            image_id = inp["image_id"]
            if image_id not in self._gt_anns:
                raise KeyError(f"image {image_id!r} is not in {self._metadata.panoptic_json}")
            gt_ann = self._gt_anns[image_id]
            ids, segments = self._prediction(out, image_id)
            gt_ids = read_panoptic_png(
                os.path.join(self._metadata.panoptic_root, gt_ann["file_name"])
            )
            self._stat += image_pq_stat(
                gt_ids, gt_ann["segments_info"], ids, segments, self._category_ids, image_id
            )
            if self._output_dir:
                self._predictions.append(_prediction_record(inp, ids, segments))

    def _prediction(self, out: dict, image_id: Any) -> tuple[np.ndarray, list[dict]]:
        if "panoptic_seg" not in out:
            raise KeyError(f"image {image_id!r}: model output has no 'panoptic_seg'")
        id_map, segments_info = out["panoptic_seg"]
        if segments_info is None:  # class * label_divisor + instance, -1 for VOID
            thing_ids = set(self._to_dataset_id[True] or ())
            ids, segments_info = segments_from_label_divisor(
                _as_id_map(id_map, image_id, allow_void=True),
                self._metadata.label_divisor,
                thing_ids,
            )
        else:
            ids = _as_id_map(id_map, image_id)
        return ids, [self._to_dataset_segment(s, image_id) for s in segments_info]

    def _to_dataset_segment(self, segment: dict, image_id: Any) -> dict:
        """Map a segment's contiguous category id to the dataset's (by its "isthing")."""
        for key in ("id", "category_id"):
            if key not in segment:
                raise KeyError(f"image {image_id!r}: a predicted segment has no {key!r}: {segment}")
        isthing = segment.get("isthing")
        if isthing is None:  # already a dataset id
            return {"id": int(segment["id"]), "category_id": int(segment["category_id"])}
        mapping = self._to_dataset_id[bool(isthing)]
        category = int(segment["category_id"])
        if mapping is not None:
            if category not in mapping:
                kind = "thing" if isthing else "stuff"
                raise KeyError(f"image {image_id!r}: {category} is not a contiguous {kind} id")
            category = mapping[category]
        return {"id": int(segment["id"]), "category_id": category, "isthing": bool(isthing)}

    def evaluate(self) -> Optional[dict[str, dict[str, float]]]:
        gathered = gather_on_main((self._stat, self._predictions), self._distributed)
        if gathered is None:
            return {}
        stat = PQStat.zeros(self._category_ids)
        for part, _ in gathered:
            stat += part
        if self._output_dir:
            self._write_predictions([p for _, predictions in gathered for p in predictions])
        isthing = {cid: bool(c["isthing"]) for cid, c in self._categories.items()}
        results = pq_results(stat, isthing)
        _log_pq_table(results)
        return OrderedDict(panoptic_seg=self._percent(results))

    def _percent(self, results: dict) -> dict[str, float]:
        res = {}
        for group, suffix in (("All", ""), ("Things", "_th"), ("Stuff", "_st")):
            for metric in ("pq", "sq", "rq"):
                res[metric.upper() + suffix] = 100 * results[group][metric]
        for cid, values in results["per_class"].items():
            name = self._categories[cid].get("name", str(cid))
            for metric in ("pq", "sq", "rq"):
                res[f"{metric.upper()}-{name}"] = 100 * values[metric]
        return res

    def _write_predictions(self, predictions: list[dict]) -> None:
        """The PNG folder (written whole, replacing an earlier one), then the JSON."""
        gt = load_json(self._metadata.panoptic_json, "panoptic_json")
        data = {"images": gt.get("images", []), "categories": gt["categories"]}
        folder = os.path.join(self._output_dir, PREDICTIONS_NAME)
        with atomic_directory(folder) as tmp:
            for prediction in predictions:
                with open(os.path.join(tmp, prediction["file_name"]), "wb") as f:
                    f.write(prediction["png"])
        data["annotations"] = [{k: v for k, v in p.items() if k != "png"} for p in predictions]
        save_json(data, folder + ".json")
        logger.info("Wrote %d panoptic predictions to %s(.json)", len(predictions), folder)


def _prediction_record(inp: dict, ids: np.ndarray, segments: list[dict]) -> dict:
    """An image's annotation in the COCO panoptic format, with its PNG's bytes as "png"."""
    name = os.path.splitext(os.path.basename(inp["file_name"]))[0] + ".png"
    return {
        "image_id": inp["image_id"],
        "file_name": name,
        "segments_info": segments,
        "png": encode_panoptic_png(ids),
    }


def _reverse(mapping: Optional[dict[int, int]]) -> Optional[dict[int, int]]:
    return None if mapping is None else {v: k for k, v in mapping.items()}


def _log_pq_table(results: dict) -> None:
    lines = [f"{'':10s}|    PQ     SQ     RQ  #cat", "-" * 36]
    for name in ("All", "Things", "Stuff"):
        r = results[name]
        lines.append(
            f"{name:10s}| {100 * r['pq']:5.1f}  {100 * r['sq']:5.1f}  {100 * r['rq']:5.1f}"
            f"  {r['n']:4d}"
        )
    logger.info("Panoptic evaluation results:\n%s", "\n".join(lines))
