"""LVIS mask AP with the ``lvis`` package (an optional dependency)."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from typing import Any, Optional

from mask2former.evaluation.coco_evaluation import InstanceResultsEvaluator

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


class LVISEvaluator(InstanceResultsEvaluator):
    """LVIS instance segmentation AP ("segm": AP, AP50, AP75, APs/m/l, APr/c/f in percent).

    detectron2's signature: ``LVISEvaluator(dataset_name, tasks=None, distributed=True,
    output_dir=None, *, max_dets_per_image=None)``. Reads metadata ``json_file`` (LVIS
    annotations) and ``thing_dataset_id_to_contiguous_id`` (without it, category id =
    contiguous id + 1, as LVIS ids start at 1). Only "segm" is evaluated: the models here
    predict masks. Constructing one without the ``lvis`` package raises ImportError.
    """

    results_file = "lvis_instances_results.json"
    unmapped_id_offset = 1

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
        super().__init__(dataset_name, distributed, output_dir)
        self._max_dets = 300 if max_dets_per_image is None else max_dets_per_image
        self._lvis_api = lvis.LVIS(self._local_json_file("LVIS"))

    def evaluate(self) -> Optional[dict[str, dict[str, float]]]:
        results = self._gathered_results()
        if results is None:
            return {}
        if not results:
            return OrderedDict(segm={m: float("nan") for m in LVIS_METRICS})
        return OrderedDict(segm=self._lvis_segm(results))

    def _lvis_segm(self, results: list[dict]) -> dict[str, float]:
        lvis = _import_lvis()
        lvis_results = lvis.LVISResults(self._lvis_api, results, max_dets=self._max_dets)
        lvis_eval = lvis.LVISEval(self._lvis_api, lvis_results, "segm")
        lvis_eval.run()
        lvis_eval.print_results()
        metrics = lvis_eval.get_results()
        return {m: float(metrics[m] * 100) for m in LVIS_METRICS}
