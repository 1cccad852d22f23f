"""COCO instance segmentation AP: pycocotools' COCOeval rules, scored by FastCOCOeval."""

from __future__ import annotations

import contextlib
import copy
import io
import itertools
import logging
import os
from collections import OrderedDict
from typing import Any, Optional, Sequence

import numpy as np
from pycocotools import mask as mask_util
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from mask2former.data.catalog import MetadataCatalog
from mask2former.evaluation.evaluator import DatasetEvaluator, gather_on_main
from mask2former.evaluation.fast_coco_eval import FastCOCOeval
from mask2former.structures import Instances
from mask2former.structures.rle import encode_masks
from mask2former.utils.file_io import PathManager, save_json

logger = logging.getLogger(__name__)

COCO_METRICS = ("AP", "AP50", "AP75", "APs", "APm", "APl")


def instances_to_coco_json(instances: Instances, image_id: Any) -> list[dict]:
    """One image's predicted instances as COCO result dicts (contiguous category ids).

    instances: pred_masks (n, H, W) bool/float, scores (n,), pred_classes (n,).
    All masks are RLE-encoded in one call. No "bbox" is written: with one, COCO.loadRes
    would take the area for small / medium / large from the box instead of the mask.
    """
    for field in ("pred_masks", "scores", "pred_classes"):
        if not instances.has(field):
            raise KeyError(f"image {image_id!r}: predicted Instances have no {field!r} field")
    if len(instances) == 0:
        return []
    rles = encode_masks(instances.pred_masks)
    scores = instances.scores.detach().cpu().tolist()
    classes = instances.pred_classes.detach().cpu().tolist()
    return [
        {
            "image_id": image_id,
            "category_id": int(classes[k]),
            "segmentation": rles[k],
            "score": float(scores[k]),
        }
        for k in range(len(rles))
    ]


def derive_coco_results(
    coco_eval: Optional[COCOeval], class_names: Sequence[str]
) -> dict[str, float]:
    """AP, AP50, AP75, APs, APm, APl and AP-<class> in percent from an evaluated COCOeval.

    Per-class AP averages precision over IoU thresholds and recall points at area "all" and
    the largest maxDets, leaving out -1 entries (no ground truth); nan when none is left.
    """
    if coco_eval is None:
        return {metric: float("nan") for metric in COCO_METRICS}
    results = {
        metric: float(coco_eval.stats[i] * 100) if coco_eval.stats[i] >= 0 else float("nan")
        for i, metric in enumerate(COCO_METRICS)
    }
    # precision: (iou thresholds, recall points, categories, area ranges, max dets)
    precisions = coco_eval.eval["precision"]
    if precisions.shape[2] != len(class_names):
        raise ValueError(
            f"COCOeval has {precisions.shape[2]} categories but metadata lists "
            f"{len(class_names)} class names"
        )
    for k, name in enumerate(class_names):
        precision = precisions[:, :, k, 0, -1]
        precision = precision[precision > -1]
        results[f"AP-{name}"] = float(np.mean(precision) * 100) if precision.size else float("nan")
    return results


def mask_areas(rles: list[dict]) -> np.ndarray:
    """(N,) uint32 ``mask_util.area`` of each RLE, from calls over 255 at a time.

    pycocotools' ``area`` of a list of 256 or more fails under numpy 2 (it builds a
    placeholder ``np.array((n,), dtype=np.uint8)``: OverflowError).
    """
    chunks = [mask_util.area(rles[i : i + 255]) for i in range(0, len(rles), 255)]
    return np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.uint32)


def load_segm_results(coco_gt: COCO, results: list[dict]) -> COCO:
    """What ``coco_gt.loadRes`` makes of copies of segmentation ``results`` without their
    "bbox", less the "bbox" it computes (COCOeval "segm" does not read it).

    Every result gets the "area" of its mask (np.uint32), "id" 1..N and "iscrowd" 0, keys
    in loadRes' order; info, images and categories come from ``coco_gt``. The areas of all
    masks come from a few ``mask_util.area`` calls; ``results`` are not modified.
    """
    unknown = {r["image_id"] for r in results} - set(coco_gt.getImgIds())
    if unknown:
        raise ValueError(
            f"{len(unknown)} image ids of the results are not in the ground truth, e.g. "
            f"{sorted(unknown, key=str)[:5]}"
        )
    missing = [i for i, r in enumerate(results) if "segmentation" not in r]
    if missing:
        raise KeyError(f"{len(missing)} results have no 'segmentation', the first: {missing[0]}")
    areas = mask_areas([r["segmentation"] for r in results])
    anns = [
        {**_without_bbox(r), "area": area, "id": i, "iscrowd": 0}
        for i, (r, area) in enumerate(zip(results, areas), start=1)
    ]
    coco_dt = COCO()
    coco_dt.dataset["info"] = copy.deepcopy(coco_gt.dataset.get("info", {}))
    coco_dt.dataset["images"] = list(coco_gt.dataset["images"])
    coco_dt.dataset["categories"] = copy.deepcopy(coco_gt.dataset["categories"])
    coco_dt.dataset["annotations"] = anns
    with contextlib.redirect_stdout(io.StringIO()):
        coco_dt.createIndex()
    return coco_dt


def _without_bbox(result: dict) -> dict:
    """``result`` itself, or a copy without its "bbox" key."""
    return {k: v for k, v in result.items() if k != "bbox"} if "bbox" in result else result


def evaluate_coco_segm(
    coco_gt: COCO, coco_results: list[dict], max_dets: int = 100
) -> Optional[COCOeval]:
    """COCOeval ("segm") of result dicts with dataset category ids; None if empty.

    Scored by :class:`FastCOCOeval`: pycocotools' numbers, bit for bit, in a fraction of
    its time. Each result's area (for small / medium / large) comes from its mask, never
    from a "bbox" it may carry (:func:`load_segm_results`).
    """
    if not coco_results:
        return None
    coco_dt = load_segm_results(coco_gt, coco_results)
    with contextlib.redirect_stdout(io.StringIO()):
        coco_eval = FastCOCOeval(coco_gt, coco_dt, "segm")
        coco_eval.params.maxDets = [1, 10, max_dets]
        coco_eval.evaluate()
        coco_eval.accumulate()
    summary = io.StringIO()
    with contextlib.redirect_stdout(summary):
        coco_eval.summarize()
    logger.info("COCOeval summary (segm):\n%s", summary.getvalue())
    return coco_eval


class InstanceResultsEvaluator(DatasetEvaluator):
    """What the COCO and LVIS evaluators share: each image's predicted instances as COCO
    result dicts (:func:`instances_to_coco_json`), gathered on the main process, their
    contiguous class ids mapped back to the dataset's and, with ``output_dir``, saved there
    as ``results_file``. Subclasses score the results in ``evaluate``.

    Reads ``MetadataCatalog.get(dataset_name)``: json_file and, when the dataset's category
    ids are not ``contiguous id + unmapped_id_offset``, thing_dataset_id_to_contiguous_id.
    """

    required_outputs = ("instances",)
    #: the name of the saved results in ``output_dir``
    results_file = ""
    #: without thing_dataset_id_to_contiguous_id: dataset id = contiguous id + this
    unmapped_id_offset = 0

    def __init__(self, dataset_name: str, distributed: bool, output_dir: Optional[str]):
        self._metadata = MetadataCatalog.get(dataset_name)
        self._dataset_name = dataset_name
        self._distributed = distributed
        self._output_dir = output_dir
        self._predictions: list[dict] = []

    def _local_json_file(self, what: str) -> str:
        """The metadata's json_file (downloaded when a URL); missing, an error naming it."""
        json_file = PathManager.get_local_path(self._metadata.json_file)
        if not os.path.isfile(json_file):
            raise FileNotFoundError(
                f"{what} json_file of dataset {self._dataset_name!r} not found: {json_file!r}"
            )
        return json_file

    def reset(self) -> None:
        self._predictions = []

    def process(self, inputs: list[dict], outputs: list[dict]) -> None:
        for inp, out in zip(inputs, outputs):
            if "instances" not in out:
                raise KeyError(f"image {inp['image_id']!r}: model output has no 'instances'")
            self._predictions.extend(instances_to_coco_json(out["instances"], inp["image_id"]))

    def _gathered_results(self) -> Optional[list[dict]]:
        """Every process's predictions with dataset category ids (saved to ``output_dir``)
        on the main process; None on the others."""
        gathered = gather_on_main(self._predictions, self._distributed)
        if gathered is None:
            return None
        results = self._to_dataset_ids(list(itertools.chain(*gathered)))
        if self._output_dir:
            path = os.path.join(self._output_dir, self.results_file)
            save_json(results, path)
            logger.info("Saved %d instance predictions to %s", len(results), path)
        if not results:
            logger.warning("No predictions from the model for %s", self._dataset_name)
        return results

    def _to_dataset_ids(self, predictions: list[dict]) -> list[dict]:
        mapping = self._metadata.get("thing_dataset_id_to_contiguous_id")
        if mapping is None:
            offset = self.unmapped_id_offset
            return [{**p, "category_id": p["category_id"] + offset} for p in predictions]
        reverse = {contiguous: dataset_id for dataset_id, contiguous in mapping.items()}
        results = []
        for pred in predictions:
            if pred["category_id"] not in reverse:
                raise KeyError(
                    f"image {pred['image_id']!r}: predicted class {pred['category_id']} is not "
                    f"a thing class of {self._dataset_name!r} (the contiguous ids of its "
                    f"thing_dataset_id_to_contiguous_id: {sorted(reverse)})"
                )
            results.append({**pred, "category_id": reverse[pred["category_id"]]})
        return results


class COCOEvaluator(InstanceResultsEvaluator):
    """Instance segmentation AP ("segm") against the dataset's COCO-format ``json_file``.

    Reads ``MetadataCatalog.get(dataset_name)``: json_file, thing_classes and, when the
    dataset's category ids are not 0..K-1, thing_dataset_id_to_contiguous_id.
    """

    results_file = "coco_instances_results.json"

    def __init__(
        self,
        dataset_name: str,
        distributed: bool = True,
        output_dir: Optional[str] = None,
        *,
        max_dets_per_image: int = 100,
    ):
        super().__init__(dataset_name, distributed, output_dir)
        self._max_dets = max_dets_per_image
        json_file = self._local_json_file("COCO")
        with contextlib.redirect_stdout(io.StringIO()):
            self._coco_api = COCO(json_file)

    def evaluate(self) -> Optional[dict[str, dict[str, float]]]:
        coco_results = self._gathered_results()
        if coco_results is None:
            return {}
        coco_eval = evaluate_coco_segm(self._coco_api, coco_results, self._max_dets)
        return OrderedDict(segm=derive_coco_results(coco_eval, self._class_names()))

    def _class_names(self) -> list[str]:
        """Names in COCOeval's category order (sorted dataset ids of the json_file)."""
        cat_ids = sorted(self._coco_api.getCatIds())
        names = self._metadata.thing_classes
        mapping = self._metadata.get("thing_dataset_id_to_contiguous_id")
        if mapping is None:
            return [names[k] for k in range(len(cat_ids))]
        return [names[mapping[cat_id]] for cat_id in cat_ids]
