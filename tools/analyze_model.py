"""Parameters, FLOPs, activations and structure of the model a config describes.

    python tools/analyze_model.py --config-file configs/coco/panoptic-segmentation/\
maskformer2_R50_bs16_50ep.yaml --tasks parameter flop --input-size 512 683
"""

import argparse
import logging

import torch

from mask2former.config import get_cfg
from mask2former.export import activation_count, flop_count, parameter_table
from mask2former.modeling import build_model
from mask2former.utils.logger import setup_logger

TASKS = ("parameter", "flop", "activation", "structure")


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config-file", required=True, metavar="FILE")
    parser.add_argument("--tasks", nargs="+", choices=TASKS, default=["parameter", "flop"])
    parser.add_argument("--input-size", nargs=2, type=int, default=(512, 512), metavar=("H", "W"))
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE overrides")
    return parser.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    logger = setup_logger(name="mask2former")
    cfg = get_cfg()
    cfg.merge_from_file(args.config_file)
    cfg.merge_from_list(args.opts)
    cfg.MODEL.DEVICE = "cpu"
    model = build_model(cfg).eval()
    divisor = max(cfg.MODEL.MASK_FORMER.SIZE_DIVISIBILITY, model.backbone.size_divisibility, 1)
    height, width = (-(-s // divisor) * divisor for s in args.input_size)
    images = torch.rand(1, 3, height, width) * 255
    if "parameter" in args.tasks:
        total = sum(p.numel() for p in model.parameters())
        logger.info("parameters: %d\n%s", total, parameter_table(model))
    if "flop" in args.tasks:
        flops = flop_count(model, images)
        logger.info("GFLOPs (multiply-adds) at %dx%d: %.2f", height, width, flops.total() / 1e9)
        logger.info(
            "by operator: %s", {k: round(v / 1e9, 3) for k, v in flops.by_operator().items()}
        )
        if flops.unsupported_ops():
            logger.info("not counted: %s", dict(flops.unsupported_ops()))
    if "activation" in args.tasks:
        activations = activation_count(model, images)
        logger.info(
            "activations (millions) at %dx%d: %.2f", height, width, activations.total() / 1e6
        )
    if "structure" in args.tasks:
        logger.info("structure:\n%s", model)
    logging.shutdown()


if __name__ == "__main__":
    main()
