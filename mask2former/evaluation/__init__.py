"""Evaluation: the evaluator protocol, inference loop, metrics and evaluator selection.

Each name is imported on first use, so that ``mask2former.evaluation.panoptic_quality``
(``tools/pq_compute.py``) starts without importing torch or the evaluators. The evaluator
registry is filled when ``build`` is imported (``EVALUATOR_REGISTRY``, ``build_evaluator``).
"""

from __future__ import annotations

import importlib
from typing import Any

# name -> module that defines it (relative to this package)
_LAZY_EXPORTS: dict[str, str] = {
    "EVALUATOR_REGISTRY": "build",
    "build_evaluator": "build",
    "CityscapesInstanceEvaluator": "cityscapes_evaluation",
    "CityscapesSemSegEvaluator": "cityscapes_evaluation",
    "COCOEvaluator": "coco_evaluation",
    "instances_to_coco_json": "coco_evaluation",
    "DatasetEvaluator": "evaluator",
    "DatasetEvaluators": "evaluator",
    "inference_context": "evaluator",
    "inference_on_dataset": "evaluator",
    "log_results_table": "evaluator",
    "split_by_outputs": "evaluator",
    "FastCOCOeval": "fast_coco_eval",
    "InstanceSegEvaluator": "instance_evaluation",
    "LVISEvaluator": "lvis_evaluation",
    "COCOPanopticEvaluator": "panoptic_evaluation",
    "pq_compute": "panoptic_quality",
    "encode_masks": ".structures.rle",
    "SemSegEvaluator": "sem_seg_evaluation",
    "verify_results": "testing",
    "evaluate_video_ap": "video_ap",
    "YTVISEvaluator": "ytvis_evaluation",
}

__all__ = sorted(_LAZY_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _LAZY_EXPORTS:
        raise AttributeError(f"module 'mask2former.evaluation' has no attribute {name!r}")
    module = importlib.import_module(f".{_LAZY_EXPORTS[name]}", __name__)
    value = getattr(module, name)
    globals()[name] = value  # later look-ups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY_EXPORTS))
