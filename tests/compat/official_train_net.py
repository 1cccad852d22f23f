"""A training script shaped like official Mask2Former's ``train_net.py``, with ``detectron2``
replaced by ``mask2former`` in its imports and nothing else adapted.

It imports every name the official script imports, from the same (mirrored) module paths,
and makes the same calls: a ``DefaultTrainer`` subclass choosing evaluators by the test
dataset's ``evaluator_type``, the train mapper by ``INPUT.DATASET_MAPPER_NAME`` (built as
``Mapper(cfg, True)``), DeepLab's LR scheduler, its own optimizer with parameter groups and
gradient clipping, and evaluation with test-time augmentation. Written for the tests in
``test_official_scripts.py``; it is not a tool of this package.

    python tests/compat/official_train_net.py --config-file CONFIG [--eval-only] [KEY VALUE ...]
"""

import copy
import itertools
import logging
import os
from collections import OrderedDict
from typing import Any, Dict, List, Set

import torch

import mask2former.utils.comm as comm
from mask2former import (
    COCOInstanceNewBaselineDatasetMapper,
    COCOPanopticNewBaselineDatasetMapper,
    InstanceSegEvaluator,
    MaskFormerInstanceDatasetMapper,
    MaskFormerPanopticDatasetMapper,
    MaskFormerSemanticDatasetMapper,
    SemanticSegmentorWithTTA,
    add_maskformer2_config,
)
from mask2former.checkpoint import DetectionCheckpointer
from mask2former.config import get_cfg
from mask2former.data import MetadataCatalog, build_detection_train_loader
from mask2former.engine import DefaultTrainer, default_argument_parser, default_setup, launch
from mask2former.evaluation import (
    CityscapesInstanceEvaluator,
    CityscapesSemSegEvaluator,
    COCOEvaluator,
    COCOPanopticEvaluator,
    DatasetEvaluators,
    LVISEvaluator,
    SemSegEvaluator,
    verify_results,
)
from mask2former.projects.deeplab import add_deeplab_config, build_lr_scheduler
from mask2former.solver.build import maybe_add_gradient_clipping
from mask2former.utils.logger import setup_logger

PANOPTIC_TYPES = (
    "coco_panoptic_seg",
    "ade20k_panoptic_seg",
    "cityscapes_panoptic_seg",
    "mapillary_vistas_panoptic_seg",
)
TRAIN_MAPPERS = {
    "mask_former_semantic": MaskFormerSemanticDatasetMapper,
    "mask_former_panoptic": MaskFormerPanopticDatasetMapper,
    "mask_former_instance": MaskFormerInstanceDatasetMapper,
    "coco_instance_lsj": COCOInstanceNewBaselineDatasetMapper,
    "coco_panoptic_lsj": COCOPanopticNewBaselineDatasetMapper,
}
NORM_TYPES = (
    torch.nn.BatchNorm1d,
    torch.nn.BatchNorm2d,
    torch.nn.BatchNorm3d,
    torch.nn.SyncBatchNorm,
    torch.nn.GroupNorm,
    torch.nn.InstanceNorm1d,
    torch.nn.InstanceNorm2d,
    torch.nn.InstanceNorm3d,
    torch.nn.LayerNorm,
    torch.nn.LocalResponseNorm,
)


def _check_single_machine() -> None:
    assert torch.cuda.device_count() > comm.get_rank(), "Cityscapes evaluators need a GPU here"


class Trainer(DefaultTrainer):
    """The official trainer's overrides: evaluators, train loader, scheduler, optimizer, TTA."""

    @classmethod
    def build_evaluator(cls, cfg, dataset_name, output_folder=None):
        if output_folder is None:
            output_folder = os.path.join(cfg.OUTPUT_DIR, "inference")
        test = cfg.MODEL.MASK_FORMER.TEST
        kind = MetadataCatalog.get(dataset_name).evaluator_type
        found = []
        if kind in ("sem_seg", "ade20k_panoptic_seg"):
            found.append(SemSegEvaluator(dataset_name, distributed=True, output_dir=output_folder))
        if kind == "coco":
            found.append(COCOEvaluator(dataset_name, output_dir=output_folder))
        if kind in PANOPTIC_TYPES and test.PANOPTIC_ON:
            found.append(COCOPanopticEvaluator(dataset_name, output_folder))
        if kind == "coco_panoptic_seg" and test.INSTANCE_ON:
            found.append(COCOEvaluator(dataset_name, output_dir=output_folder))
        if kind in ("coco_panoptic_seg", "mapillary_vistas_panoptic_seg") and test.SEMANTIC_ON:
            found.append(SemSegEvaluator(dataset_name, distributed=True, output_dir=output_folder))
        if kind in ("mapillary_vistas_panoptic_seg", "ade20k_panoptic_seg") and test.INSTANCE_ON:
            found.append(InstanceSegEvaluator(dataset_name, output_dir=output_folder))
        if kind == "cityscapes_instance":
            _check_single_machine()
            return CityscapesInstanceEvaluator(dataset_name)
        if kind == "cityscapes_sem_seg":
            _check_single_machine()
            return CityscapesSemSegEvaluator(dataset_name)
        if kind == "cityscapes_panoptic_seg":
            if test.SEMANTIC_ON:
                _check_single_machine()
                found.append(CityscapesSemSegEvaluator(dataset_name))
            if test.INSTANCE_ON:
                _check_single_machine()
                found.append(CityscapesInstanceEvaluator(dataset_name))
        if kind == "lvis":
            return LVISEvaluator(dataset_name, output_dir=output_folder)
        if not found:
            raise NotImplementedError(f"no evaluator for {dataset_name} of type {kind}")
        return found[0] if len(found) == 1 else DatasetEvaluators(found)

    @classmethod
    def build_train_loader(cls, cfg):
        mapper_class = TRAIN_MAPPERS.get(cfg.INPUT.DATASET_MAPPER_NAME)
        mapper = None if mapper_class is None else mapper_class(cfg, True)
        return build_detection_train_loader(cfg, mapper=mapper)

    @classmethod
    def build_lr_scheduler(cls, cfg, optimizer):
        return build_lr_scheduler(cfg, optimizer)

    @classmethod
    def build_optimizer(cls, cfg, model):
        defaults = {"lr": cfg.SOLVER.BASE_LR, "weight_decay": cfg.SOLVER.WEIGHT_DECAY}
        params: List[Dict[str, Any]] = []
        memo: Set[torch.nn.parameter.Parameter] = set()
        for module_name, module in model.named_modules():
            for param_name, value in module.named_parameters(recurse=False):
                if not value.requires_grad or value in memo:
                    continue
                memo.add(value)
                hyperparams = copy.copy(defaults)
                if "backbone" in module_name:
                    hyperparams["lr"] *= cfg.SOLVER.BACKBONE_MULTIPLIER
                if param_name in ("relative_position_bias_table", "absolute_pos_embed"):
                    hyperparams["weight_decay"] = 0.0
                if isinstance(module, NORM_TYPES):
                    hyperparams["weight_decay"] = cfg.SOLVER.WEIGHT_DECAY_NORM
                if isinstance(module, torch.nn.Embedding):
                    hyperparams["weight_decay"] = cfg.SOLVER.WEIGHT_DECAY_EMBED
                params.append({"params": [value], **hyperparams})

        clip = cfg.SOLVER.CLIP_GRADIENTS
        full_model = clip.ENABLED and clip.CLIP_TYPE == "full_model" and clip.CLIP_VALUE > 0.0

        def with_full_model_clipping(optim):
            class FullModelClipping(optim):
                def step(self, closure=None):
                    every = itertools.chain(*[g["params"] for g in self.param_groups])
                    torch.nn.utils.clip_grad_norm_(every, clip.CLIP_VALUE)
                    super().step(closure=closure)

            return FullModelClipping if full_model else optim

        if cfg.SOLVER.OPTIMIZER == "SGD":
            optimizer = with_full_model_clipping(torch.optim.SGD)(
                params, cfg.SOLVER.BASE_LR, momentum=cfg.SOLVER.MOMENTUM
            )
        elif cfg.SOLVER.OPTIMIZER == "ADAMW":
            optimizer = with_full_model_clipping(torch.optim.AdamW)(params, cfg.SOLVER.BASE_LR)
        else:
            raise NotImplementedError(f"no optimizer type {cfg.SOLVER.OPTIMIZER}")
        if clip.CLIP_TYPE != "full_model":
            optimizer = maybe_add_gradient_clipping(cfg, optimizer)
        return optimizer

    @classmethod
    def test_with_TTA(cls, cfg, model):
        logging.getLogger("mask2former.trainer").info("Evaluating with test-time augmentation")
        model = SemanticSegmentorWithTTA(cfg, model)
        folder = os.path.join(cfg.OUTPUT_DIR, "inference_TTA")
        evaluators = [
            cls.build_evaluator(cfg, name, output_folder=folder) for name in cfg.DATASETS.TEST
        ]
        results = cls.test(cfg, model, evaluators)
        return OrderedDict((name + "_TTA", value) for name, value in results.items())


def setup(args):
    cfg = get_cfg()
    add_deeplab_config(cfg)
    add_maskformer2_config(cfg)
    cfg.merge_from_file(args.config_file)
    cfg.merge_from_list(args.opts)
    cfg.freeze()
    default_setup(cfg, args)
    setup_logger(output=cfg.OUTPUT_DIR, distributed_rank=comm.get_rank(), name="mask2former")
    return cfg


def main(args):
    cfg = setup(args)
    if args.eval_only:
        model = Trainer.build_model(cfg)
        DetectionCheckpointer(model, save_dir=cfg.OUTPUT_DIR).resume_or_load(
            cfg.MODEL.WEIGHTS, resume=args.resume
        )
        results = Trainer.test(cfg, model)
        if cfg.TEST.AUG.ENABLED:
            results.update(Trainer.test_with_TTA(cfg, model))
        if comm.is_main_process():
            verify_results(cfg, results)
        return results
    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=args.resume)
    return trainer.train()


if __name__ == "__main__":
    args = default_argument_parser().parse_args()
    print("Command Line Args:", args)
    launch(
        main,
        args.num_gpus,
        num_machines=args.num_machines,
        machine_rank=args.machine_rank,
        dist_url=args.dist_url,
        args=(args,),
    )
