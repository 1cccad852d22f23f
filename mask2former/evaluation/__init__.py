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
    split_by_outputs,
)
from mask2former.evaluation.instance_evaluation import InstanceSegEvaluator
from mask2former.evaluation.lvis_evaluation import LVISEvaluator
from mask2former.evaluation.panoptic_evaluation import COCOPanopticEvaluator
from mask2former.evaluation.panoptic_quality import pq_compute
from mask2former.evaluation.rle import encode_masks
from mask2former.evaluation.sem_seg_evaluation import SemSegEvaluator
from mask2former.evaluation.testing import verify_results
from mask2former.evaluation.video_ap import evaluate_video_ap
from mask2former.evaluation.ytvis_evaluation import YTVISEvaluator

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
    "split_by_outputs",
    "InstanceSegEvaluator",
    "LVISEvaluator",
    "COCOPanopticEvaluator",
    "pq_compute",
    "encode_masks",
    "SemSegEvaluator",
    "verify_results",
    "evaluate_video_ap",
    "YTVISEvaluator",
]
