"""Evaluation: the evaluator protocol, inference loop, metrics and evaluator selection."""

from mask2former.evaluation.build import EVALUATOR_REGISTRY, build_evaluator
from mask2former.evaluation.cityscapes_evaluation import (
    CityscapesInstanceEvaluator,
    CityscapesSemSegEvaluator,
)
from mask2former.evaluation.coco_evaluation import COCOEvaluator, instances_to_coco_json
from mask2former.evaluation.evaluator import (
    DatasetEvaluator,
    DatasetEvaluators,
    inference_context,
    inference_on_dataset,
    log_results_table,
)
from mask2former.evaluation.panoptic_evaluation import COCOPanopticEvaluator
from mask2former.evaluation.panoptic_quality import pq_compute
from mask2former.evaluation.rle import encode_masks
from mask2former.evaluation.sem_seg_evaluation import SemSegEvaluator

__all__ = [
    "EVALUATOR_REGISTRY",
    "build_evaluator",
    "CityscapesInstanceEvaluator",
    "CityscapesSemSegEvaluator",
    "COCOEvaluator",
    "instances_to_coco_json",
    "DatasetEvaluator",
    "DatasetEvaluators",
    "inference_context",
    "inference_on_dataset",
    "log_results_table",
    "COCOPanopticEvaluator",
    "pq_compute",
    "encode_masks",
    "SemSegEvaluator",
]
