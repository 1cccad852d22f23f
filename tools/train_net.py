#!/usr/bin/env python
"""Train or evaluate Mask2Former / MaskFormer from a config file.

    python tools/train_net.py --config-file configs/shapes/mask2former_R18_quickstart.yaml
    python tools/train_net.py --config-file CONFIG --num-gpus 8 [KEY VALUE ...]
    python tools/train_net.py --config-file CONFIG --eval-only MODEL.WEIGHTS model_final.pth
    python tools/train_net.py --config-file CONFIG --resume          # continue in OUTPUT_DIR

Several machines: run the same command on each with ``--num-machines N --machine-rank R
--dist-url tcp://HOST0:PORT``. Also runs under ``torchrun``, and under SLURM's ``srun`` (one
task per GPU; rank, world size and rendezvous from SLURM's variables, see README.md). The
dataset mapper and evaluators are chosen from the config (``INPUT.DATASET_MAPPER_NAME``, the
datasets' ``evaluator_type`` metadata) by the data and evaluation packages; video datasets
(YouTube-VIS, ``evaluator_type`` "ytvis") get the video mapper and evaluator, so the published
video configs (``VideoMaskFormer``) train and evaluate here too. With ``TEST.AUG.ENABLED``
the evaluation also runs with semantic test-time augmentation (results ``<task>_TTA``).
"""

import logging

from mask2former.checkpoint import DetectionCheckpointer
from mask2former.config import CfgNode, get_cfg
from mask2former.engine import (
    DefaultTrainer,
    default_argument_parser,
    default_setup,
    launch,
    require_config_file,
)
from mask2former.evaluation import verify_results
from mask2former.utils import comm

logger = logging.getLogger("mask2former")


def setup(args) -> CfgNode:
    """The config from ``--config-file`` and the trailing overrides; logging and seeding."""
    cfg = get_cfg()
    cfg.merge_from_file(require_config_file(args))
    cfg.merge_from_list(args.opts)
    cfg.freeze()
    default_setup(cfg, args)
    return cfg


def main(args):
    cfg = setup(args)
    if args.eval_only:
        model = DefaultTrainer.build_model(cfg)
        DetectionCheckpointer(model, save_dir=cfg.OUTPUT_DIR).resume_or_load(
            cfg.MODEL.WEIGHTS, resume=args.resume
        )
        results = DefaultTrainer.evaluate(cfg, model)
        if comm.is_main_process():
            verify_results(cfg, results)
        return results
    trainer = DefaultTrainer(cfg)
    trainer.resume_or_load(resume=args.resume)
    return trainer.train()


if __name__ == "__main__":
    args = default_argument_parser().parse_args()
    require_config_file(args)  # before launch starts any worker process
    launch(
        main,
        args.num_gpus,
        num_machines=args.num_machines,
        machine_rank=args.machine_rank,
        dist_url=args.dist_url,
        args=(args,),
    )
