"""Evaluator selection: the dataset's ``evaluator_type`` -> the evaluators that score it.

``EVALUATOR_REGISTRY`` maps an evaluator_type (metadata of the dataset, set by the data
catalog) to the function of that name,
``(cfg, dataset_name, output_folder) -> list[DatasetEvaluator]``.
Each function adds a sub-evaluator only when the model produces that output, as the
``MODEL.MASK_FORMER.TEST.{SEMANTIC,INSTANCE,PANOPTIC}_ON`` flags say (the published
Mask2Former ``train_net.py`` mapping).
"""

from __future__ import annotations

from typing import Optional

from fvcore.common.registry import Registry

from mask2former.data.catalog import MetadataCatalog
from mask2former.evaluation.cityscapes_evaluation import (
    CityscapesInstanceEvaluator,
    CityscapesSemSegEvaluator,
)
from mask2former.evaluation.coco_evaluation import COCOEvaluator
from mask2former.evaluation.evaluator import DatasetEvaluator, DatasetEvaluators
from mask2former.evaluation.lvis_evaluation import LVISEvaluator
from mask2former.evaluation.panoptic_evaluation import COCOPanopticEvaluator
from mask2former.evaluation.sem_seg_evaluation import SemSegEvaluator
from mask2former.evaluation.ytvis_evaluation import YTVISEvaluator
from mask2former.utils.registry import lookup

EVALUATOR_REGISTRY = Registry("EVALUATOR")
EVALUATOR_REGISTRY.__doc__ = __doc__


def _flags(cfg) -> tuple[bool, bool, bool]:
    test = cfg.MODEL.MASK_FORMER.TEST
    return test.SEMANTIC_ON, test.INSTANCE_ON, test.PANOPTIC_ON


@EVALUATOR_REGISTRY.register()
def sem_seg(cfg, name: str, out: Optional[str]) -> list[DatasetEvaluator]:
    return [SemSegEvaluator(name, distributed=True, output_dir=out)]


@EVALUATOR_REGISTRY.register()
def coco(cfg, name: str, out: Optional[str]) -> list[DatasetEvaluator]:
    return [COCOEvaluator(name, output_dir=out)]


def _panoptic(cfg, name: str, out: Optional[str], always_semantic: bool = False):
    semantic_on, instance_on, panoptic_on = _flags(cfg)
    evaluators: list[DatasetEvaluator] = []
    if panoptic_on:
        evaluators.append(COCOPanopticEvaluator(name, out))
    if instance_on:
        evaluators.append(COCOEvaluator(name, output_dir=out))
    if semantic_on or always_semantic:
        evaluators.append(SemSegEvaluator(name, distributed=True, output_dir=out))
    return evaluators


@EVALUATOR_REGISTRY.register()
def coco_panoptic_seg(cfg, name: str, out: Optional[str]) -> list[DatasetEvaluator]:
    return _panoptic(cfg, name, out)


@EVALUATOR_REGISTRY.register()
def mapillary_vistas_panoptic_seg(cfg, name: str, out: Optional[str]) -> list[DatasetEvaluator]:
    return _panoptic(cfg, name, out)


@EVALUATOR_REGISTRY.register()
def ade20k_panoptic_seg(cfg, name: str, out: Optional[str]) -> list[DatasetEvaluator]:
    # The published mapping scores ADE20K panoptic semantically whatever SEMANTIC_ON says.
    return _panoptic(cfg, name, out, always_semantic=True)


@EVALUATOR_REGISTRY.register()
def cityscapes_sem_seg(cfg, name: str, out: Optional[str]) -> list[DatasetEvaluator]:
    return [CityscapesSemSegEvaluator(name)]


@EVALUATOR_REGISTRY.register()
def cityscapes_instance(cfg, name: str, out: Optional[str]) -> list[DatasetEvaluator]:
    return [CityscapesInstanceEvaluator(name)]


@EVALUATOR_REGISTRY.register()
def cityscapes_panoptic_seg(cfg, name: str, out: Optional[str]) -> list[DatasetEvaluator]:
    semantic_on, instance_on, panoptic_on = _flags(cfg)
    evaluators: list[DatasetEvaluator] = []
    if panoptic_on:
        evaluators.append(COCOPanopticEvaluator(name, out))
    if semantic_on:
        evaluators.append(CityscapesSemSegEvaluator(name))
    if instance_on:
        evaluators.append(CityscapesInstanceEvaluator(name))
    return evaluators


@EVALUATOR_REGISTRY.register()
def lvis(cfg, name: str, out: Optional[str]) -> list[DatasetEvaluator]:
    return [LVISEvaluator(name, output_dir=out)]


@EVALUATOR_REGISTRY.register()
def ytvis(cfg, name: str, out: Optional[str]) -> list[DatasetEvaluator]:
    return [YTVISEvaluator(name, output_dir=out)]


def build_evaluator(
    cfg, dataset_name: str, output_folder: Optional[str] = None
) -> DatasetEvaluator:
    """The evaluators for ``dataset_name`` chosen by its metadata ``evaluator_type``.

    Returns one evaluator, or a :class:`DatasetEvaluators` when several apply. Raises if the
    type is unknown or no evaluator applies (every TEST.*_ON flag that matters is off).
    """
    metadata = MetadataCatalog.get(dataset_name)
    evaluator_type = metadata.evaluator_type
    make = lookup(EVALUATOR_REGISTRY, evaluator_type, f"evaluator_type of {dataset_name!r}")
    evaluators = make(cfg, dataset_name, output_folder)
    if not evaluators:
        raise ValueError(
            f"no evaluator for {dataset_name!r} ({evaluator_type}): the model outputs none of "
            "what this dataset is scored on (see MODEL.MASK_FORMER.TEST.*_ON)"
        )
    return evaluators[0] if len(evaluators) == 1 else DatasetEvaluators(evaluators)
