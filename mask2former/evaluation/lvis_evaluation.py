"""LVIS mask AP with the ``lvis`` package (an optional dependency)."""

from __future__ import annotations

import itertools
import logging
import os
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any, Optional

from mask2former.data.catalog import MetadataCatalog
from mask2former.evaluation.coco_evaluation import instances_to_coco_json
from mask2former.evaluation.evaluator import DatasetEvaluator
from mask2former.utils import comm
from mask2former.utils.file_io import PathManager, save_json

logger = logging.getLogger(__name__)

__all__ = ["LVISEvaluator"]

LVIS_METRICS = ("AP", "AP50", "AP75", "APs", "APm", "APl", "APr", "APc", "APf")


def _import_lvis() -> Any:
    try:
        import lvis
    except ImportError as e:
        raise ImportError(
            "LVISEvaluator needs the 'lvis' package (pip install lvis); it is not installed"
        ) from e
    return lvis


class LVISEvaluator(DatasetEvaluator):
    """LVIS instance segmentation AP ("segm": AP, AP50, AP75, APs/m/l, APr/c/f in percent).

    detectron2's signature: ``LVISEvaluator(dataset_name, tasks=None, distributed=True,
    output_dir=None, *, max_dets_per_image=None)``. Reads metadata ``json_file`` (LVIS
    annotations) and ``thing_dataset_id_to_contiguous_id`` (without it, category id =
    contiguous id + 1, as LVIS ids start at 1). Only "segm" is evaluated: the models here
    predict masks. Constructing one without the ``lvis`` package raises ImportError.
    """

    required_outputs = ("instances",)

    def __init__(
        self,
        dataset_name: str,
        tasks: Optional[Sequence[str]] = None,
        distributed: bool = True,
        output_dir: Optional[str] = None,
        *,
        max_dets_per_image: Optional[int] = None,
    ):
        lvis = _import_lvis()
        if tasks is not None and set(tasks) != {"segm"}:
            raise ValueError(f"LVISEvaluator evaluates only 'segm', got tasks={tasks!r}")
        self._metadata = MetadataCatalog.get(dataset_name)
        self._dataset_name = dataset_name
        self._distributed = distributed
        self._output_dir = output_dir
        self._max_dets = 300 if max_dets_per_image is None else max_dets_per_image
        json_file = PathManager.get_local_path(self._metadata.json_file)
        if not os.path.isfile(json_file):
            raise FileNotFoundError(f"LVIS json_file of {dataset_name!r} not found: {json_file!r}")
        self._lvis_api = lvis.LVIS(json_file)
        self._predictions: list[dict] = []

    def reset(self) -> None:
        self._predictions = []

    def process(self, inputs: list[dict], outputs: list[dict]) -> None:
        for inp, out in zip(inputs, outputs):
            if "instances" not in out:
                raise KeyError(f"image {inp['image_id']!r}: model output has no 'instances'")
            self._predictions.extend(instances_to_coco_json(out["instances"], inp["image_id"]))

    def evaluate(self) -> Optional[dict[str, dict[str, float]]]:
        predictions = self._predictions
        if self._distributed:
            comm.synchronize()
            gathered = comm.gather(predictions, dst=0)
            if not comm.is_main_process():
                return {}
            predictions = list(itertools.chain(*gathered))
        results = self._to_dataset_ids(predictions)
        if self._output_dir:
            save_json(results, os.path.join(self._output_dir, "lvis_instances_results.json"))
        if not results:
            logger.warning("No predictions from the model for %s", self._dataset_name)
            return OrderedDict(segm={m: float("nan") for m in LVIS_METRICS})
        return OrderedDict(segm=self._lvis_segm(results))

    def _to_dataset_ids(self, predictions: list[dict]) -> list[dict]:
        mapping = self._metadata.get("thing_dataset_id_to_contiguous_id")
        if mapping is None:
            return [{**p, "category_id": p["category_id"] + 1} for p in predictions]
        reverse = {contiguous: dataset_id for dataset_id, contiguous in mapping.items()}
        for p in predictions:
            if p["category_id"] not in reverse:
                raise KeyError(
                    f"image {p['image_id']!r}: predicted class {p['category_id']} is not a "
                    f"thing class of {self._dataset_name!r}"
                )
        return [{**p, "category_id": reverse[p["category_id"]]} for p in predictions]

    def _lvis_segm(self, results: list[dict]) -> dict[str, float]:
        lvis = _import_lvis()
        lvis_results = lvis.LVISResults(self._lvis_api, results, max_dets=self._max_dets)
        lvis_eval = lvis.LVISEval(self._lvis_api, lvis_results, "segm")
        lvis_eval.run()
        lvis_eval.print_results()
        metrics = lvis_eval.get_results()
        return {m: float(metrics[m] * 100) for m in LVIS_METRICS}
